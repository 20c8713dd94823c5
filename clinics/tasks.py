from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from . import audit, context
from .audit_checkpoints import checkpoint_write, checkpoints_load
from .models import AuditOutcome, Invitation, User
from .services import invitation_token
from .tenancy import clinic_scope


@shared_task(name="clinics.audit_chain_verify", soft_time_limit=600, time_limit=660)
def audit_chain_verify_task(clinic_id: str) -> dict[str, object]:
    """Verify one clinic's audit chain in the background and record the result in that chain."""
    context.actor_var.set(context.Actor(system="audit_chain_verify"))
    with clinic_scope(clinic_id) as scoped_id:
        chain = audit.chain_key(scoped_id)
        checkpoints = checkpoints_load()
        report = audit.verify_chain(chain, checkpoints.heads.get(chain))
        # a checkpoint that cannot be trusted fails the verification as the command's does
        problem = str(report.problem) if report.problem else (checkpoints.problems or [None])[0]
        audit.record(
            action="audit.verify",
            clinic_id=scoped_id,
            object_type="audit_trail",
            outcome=AuditOutcome.SUCCESS if problem is None else AuditOutcome.FAILURE,
            details={"events": report.events, "problem": problem},
        )
    return {"intact": problem is None, "events": report.events}


@shared_task(name="clinics.password_reset_mail", soft_time_limit=60, time_limit=90)
def password_reset_mail_task(user_id: str | None, domain: str, use_https: bool) -> bool:
    """Email a single-use link to choose a new password (ids only in the message; the token is made here). A
    request for an unknown address queues the same task with no id, so the broker sees the same traffic."""
    user = User.objects.filter(pk=user_id, is_active=True).first() if user_id else None
    if user is None:
        return False
    PasswordResetForm().send_mail(
        "clinics/password_reset_subject.txt",
        "clinics/password_reset_email.txt",
        {
            "email": user.email,
            "domain": domain,
            "uid": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
            "protocol": "https" if use_https else "http",
            "valid_minutes": settings.PASSWORD_RESET_TIMEOUT // 60,
        },
        None,
        user.email,
    )
    return True


@shared_task(name="clinics.invitation_mail", soft_time_limit=60, time_limit=90)
def invitation_mail_task(invitation_id: str, clinic_id: str, domain: str, use_https: bool) -> bool:
    """Mail a clinic's invitation: "log in as this address to accept" when the address has an account, "choose a
    password" when it has none. Runs in a worker (or after the response), so the inviter's request never looked
    the address up."""
    with clinic_scope(clinic_id):
        invitation = Invitation.objects.select_related("clinic").filter(pk=invitation_id).first()
        if invitation is None or invitation.status != "pending":
            return False
        link = f"{'https' if use_https else 'http'}://{domain}" + reverse(
            "clinics:invitation", kwargs={"token": invitation_token(invitation)}
        )
        data = {
            "clinic": invitation.clinic.name,
            "role": invitation.get_role_display(),
            "link": link,
            "has_account": User.objects.filter(email=invitation.email, is_active=True).exists(),
            "expires_at": invitation.expires_at,
            "email": invitation.email,
        }
        subject = render_to_string("clinics/invitation_subject.txt", data).strip()
        send_mail(subject, render_to_string("clinics/invitation_email.txt", data), None, [invitation.email])
    return True


@shared_task(name="clinics.second_factor_locked_mail", soft_time_limit=60, time_limit=90)
def second_factor_locked_mail_task(user_id: str, seconds: int) -> bool:
    """Tell the person that their password was typed with wrong second-factor codes until the second factor was
    refused for a while: whoever did it knows the password, which they should change."""
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return False
    data = {"email": user.email, "minutes": max(1, (int(seconds) + 59) // 60)}
    subject = render_to_string("clinics/second_factor_locked_subject.txt", data).strip()
    send_mail(subject, render_to_string("clinics/second_factor_locked_email.txt", data), None, [user.email])
    return True


@shared_task(name="clinics.audit_seal", soft_time_limit=120, time_limit=150)
def audit_seal_task() -> dict[str, int]:
    """Seal the audit events recorded since the last run into their chains (celery beat, ``AUDIT_SEAL_EVERY_SECONDS``;
    a chain another sealer holds is left to it)."""
    return {"sealed": audit.seal_all()}


@shared_task(name="clinics.audit_checkpoint", soft_time_limit=300, time_limit=360)
def audit_checkpoint_task() -> dict[str, object]:
    """Seal every chain head outside the database (celery beat, ``AUDIT_CHECKPOINT_EVERY_SECONDS``)."""
    context.actor_var.set(context.Actor(system="audit_checkpoint"))
    name, chains = checkpoint_write()
    return {"file": name, "chains": chains}
