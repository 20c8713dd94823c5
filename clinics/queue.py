"""The names of the tasks this app sends, with ``core.queue.task_send`` (ids only in a message)."""

from __future__ import annotations

from core.queue import task_send, task_send_after_response

PASSWORD_RESET_MAIL = "clinics.password_reset_mail"
INVITATION_MAIL = "clinics.invitation_mail"
SECOND_FACTOR_LOCKED_MAIL = "clinics.second_factor_locked_mail"

__all__ = [
    "INVITATION_MAIL",
    "PASSWORD_RESET_MAIL",
    "SECOND_FACTOR_LOCKED_MAIL",
    "task_send",
    "task_send_after_response",
]
