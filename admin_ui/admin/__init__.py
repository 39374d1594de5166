"""The operations console's ModelAdmins, one module per area.

Pages read through ``fulfillment.selectors`` and ``admin_ui.selectors``; every
action calls a service of ``fulfillment.services.operations`` and needs its own
permission (created with the Operations and Support groups by
``admin_ui/migrations/0001_operations_groups.py``). Rows the pipeline owns
(purchases, payments, sessions, deliveries) are read-only here: they change only
through actions and the pages of ``admin_ui.views``.

Django's autodiscover imports ``admin_ui.admin``; importing the area modules
here is what registers their ModelAdmins.
"""

from admin_ui.admin import catalogue, jobs, payments, purchases

__all__ = ["catalogue", "jobs", "payments", "purchases"]
