"""The operations console's ModelAdmins, split by area.

Django's autodiscover imports ``admin_ui.admin``; importing the area modules
here is what registers their ModelAdmins.
"""

from admin_ui.admin import purchases  # noqa: F401
