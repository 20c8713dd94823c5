from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from clinics.audit import chains_to_verify, verify_chain
from clinics.audit_checkpoints import checkpoints_load
from clinics.models import Clinic


def _clinic_exists(clinic_id: str) -> bool:
    try:
        return Clinic.objects.filter(pk=clinic_id).exists()
    except ValidationError:  # not a UUID
        return False


class Command(BaseCommand):
    help = (
        "Verify the audit trail's hash chains, and every chain head recorded by the sealed checkpoints "
        "(manage.py audit_checkpoint). Exit 0 when intact; exit 1 naming the first broken event or checkpoint, "
        "or naming the events left unsealed longer than AUDIT_SEAL_MAX_AGE_S. Read-only: it never seals."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--clinic", help="Verify only this clinic's chain (clinic id).")

    def handle(self, *args: Any, **options: Any) -> None:
        clinic_id = options.get("clinic")
        if clinic_id and not _clinic_exists(clinic_id):
            raise CommandError(f"No clinic with id {clinic_id!r}: nothing to verify.")
        checkpoints = checkpoints_load()
        for line in checkpoints.unverifiable:
            self.stderr.write(f"warning: {line} (not used)")
        if checkpoints.problems:
            for line in checkpoints.problems:
                self.stderr.write(f"AUDIT CHECKPOINT BROKEN: {line}")
            sys.exit(1)
        chains = chains_to_verify(clinic_id)
        if not clinic_id:  # a chain the checkpoints recorded must still be there: removed whole, it is no row at all
            chains = sorted(set(chains) | set(checkpoints.heads))
        total = unsealed = 0
        late = []
        for chain in chains:
            report = verify_chain(chain, checkpoints.heads.get(chain))
            total += report.events
            unsealed += report.unsealed
            if report.problem is not None and report.problem.overdue:
                late.append(report.problem)
            elif report.problem is not None:
                self.stderr.write(f"AUDIT CHAIN BROKEN: {report.problem}")
                sys.exit(1)
        for problem in late:
            self.stderr.write(f"AUDIT EVENTS UNSEALED: {problem}")
        if late:
            sys.exit(1)
        self.stdout.write(f"Audit trail intact: {len(chains)} chain(s), {total} event(s) verified.")
        self.stdout.write(f"{unsealed} recent event(s) not sealed yet (sealed within seconds; not verified).")
        self.stdout.write(f"Checked against {checkpoints.files} sealed checkpoint(s).")
