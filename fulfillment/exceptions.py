"""Domain errors: a job that raises one fails visibly (failed jobs are the
dead-letter queue) instead of being retried, because retrying cannot help."""

from __future__ import annotations


class FulfillmentError(Exception):
    """A business rule says no; the message tells an operator what to fix."""


class PurchaseNotFound(FulfillmentError):
    pass


class CatalogError(FulfillmentError):
    """A catalogue file cannot be imported; nothing was changed."""


class TrainerTaken(FulfillmentError):
    """The trainer filled up or got an overlapping reservation meanwhile: the
    allocation changed nothing, try the next trainer."""
