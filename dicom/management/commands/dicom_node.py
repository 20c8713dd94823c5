"""``python manage.py dicom_node --clinic ID --called-ae AE --allow-calling AE[,AE...] [--allow-ip IP[,NET...]]
[--send-to AE@HOST:PORT] [--tls] [--preliminary] [--no-secondary-capture]``: a clinic's DICOM settings."""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from clinics import context
from clinics.models import Clinic
from clinics.services import ServiceError
from clinics.tenancy import clinic_scope
from dicom.services import dicom_node_configure, node_destination_string

DEST_RE = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


class Command(BaseCommand):
    help = "Set a clinic's called AE title, the calling AE titles it accepts and where results are sent."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--clinic", required=True)
        parser.add_argument("--called-ae", required=True)
        parser.add_argument("--allow-calling", required=True, help="comma-separated calling AE titles")
        parser.add_argument("--allow-ip", default="", help="comma-separated addresses or networks (default: any)")
        parser.add_argument("--send-to", default="", help="AE@HOST:PORT of the PACS that receives the results")
        parser.add_argument("--tls", action="store_true", help="send the results over TLS")
        parser.add_argument("--preliminary", action="store_true", help="also send a preliminary SR after analysis")
        parser.add_argument("--no-secondary-capture", action="store_true")

    def handle(self, *args: Any, **o: Any) -> None:
        clinic = Clinic.objects.filter(pk=o["clinic"]).first() if _is_uuid(o["clinic"]) else None
        clinic = clinic or Clinic.objects.filter(slug=o["clinic"]).first()
        if clinic is None:
            raise CommandError(f"No clinic {o['clinic']!r}.")
        dest = {}
        if o["send_to"]:
            match = DEST_RE.match(o["send_to"])
            if not match:
                raise CommandError("--send-to must be AE@HOST:PORT")
            dest = {"dest_ae": match["ae"], "dest_host": match["host"], "dest_port": int(match["port"])}
        context.actor_var.set(context.Actor(system="dicom_node"))
        with clinic_scope(clinic.pk):
            try:
                node = dicom_node_configure(
                    called_ae=o["called_ae"],
                    calling_aes=[v for v in o["allow_calling"].split(",") if v.strip()],
                    calling_ips=[v for v in o["allow_ip"].split(",") if v.strip()],
                    dest_tls=o["tls"],
                    send_preliminary=o["preliminary"],
                    send_secondary_capture=not o["no_secondary_capture"],
                    **dest,
                )
            except ServiceError as exc:
                raise CommandError(exc.message) from exc
            self.stdout.write(
                f"clinic {clinic.pk}: called AE {node.called_ae}, callers {','.join(node.calling_aes)}, "
                f"results to {node_destination_string(node) or '(none)'}"
            )


def _is_uuid(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F-]{32,36}", value))
