"""Signals sent by clinics' models, so that the modules that act on them are not imported by the models.

``password_replaced`` (``sender=User``, ``user=``): a new password was saved, by any path (the account page,
an emailed reset link, the admin, ``changepassword``). ``clinics.sessions`` ends every session and API token of
the person on it (connected in ``ClinicsConfig.ready()``).
"""

from __future__ import annotations

from django.dispatch import Signal

password_replaced = Signal()
