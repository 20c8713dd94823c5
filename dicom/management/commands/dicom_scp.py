"""``python manage.py dicom_scp [--host H] [--port N]``: the DICOM receiver (C-STORE SCP) of every clinic."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from dicom.scp import server


class Command(BaseCommand):
    help = "Receive DICOM images (C-STORE) for every clinic, each under its own called AE title."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.DICOM_SCP_HOST)
        parser.add_argument("--port", type=int, default=settings.DICOM_SCP_PORT)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        srv = server(host, port)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        self.stdout.write(f"dicom_scp listening on {host}:{port}", ending="\n")
        self.stdout.flush()
        stop.wait()
        srv.shutdown()
