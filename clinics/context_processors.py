from typing import Any

from django.http import HttpRequest

from .selectors import memberships_of


def clinic(request: HttpRequest) -> dict[str, Any]:
    access = getattr(request, "access", None)
    if access is None:
        return {}
    return {
        "current_clinic": access.clinic,
        "current_role": access.role,
        "can": {
            "patients": access.can("patient.view"),
            "worklist": access.can("report.view"),
            "members": access.can("member.view"),
            "api_keys": access.can("apikey.manage"),
            "audit": access.can("audit.view"),
            "thresholds": access.can("thresholds.manage"),
            "review_settings": access.can("monitoring.view"),
            "agreement": access.can("monitoring.view"),
            "webhooks": access.can("webhook.manage"),
            "clinic_model": access.can("model.manage"),
            "dicom_inbox": access.can("dicom.inbox"),
            "dicom": access.can("dicom.manage"),
        },
        "other_memberships": [m for m in memberships_of(access.user) if m.clinic_id != access.clinic.id]
        if access.user
        else [],
    }
