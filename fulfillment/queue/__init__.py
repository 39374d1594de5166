"""procrastinate plumbing: deferring by task name on Django's connection
(``queue.defer``, from ``deferring``), the task names themselves (``names``), the
tuned worker (``worker``) and the task middleware that records failures and
worker presence (``middleware``). Knows no business rule and imports no service
or task.

Callers write ``queue.defer(names.ALLOCATE_TRAINER, …)``: an attribute of this
package, looked up at call time, so a test can replace it in one place.
"""

from fulfillment.queue.deferring import (
    Deferral,
    defer,
    deferral,
    execute,
    job_manager,
)

__all__ = ["Deferral", "defer", "deferral", "execute", "job_manager"]
