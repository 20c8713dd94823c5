"""``python manage.py dicom_scp [--host H] [--port N]``: the DICOM receiver (C-STORE SCP) of every clinic."""

from __future__ import annotations

import signal
import ssl
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
        parser.add_argument("--tls-cert", default=settings.DICOM_SCP_TLS_CERT, help="PEM certificate: DICOM over TLS")
        parser.add_argument("--tls-key", default=settings.DICOM_SCP_TLS_KEY, help="its PEM private key")

    def handle(self, *args: Any, host: str, port: int, tls_cert: str, tls_key: str, **options: Any) -> None:
        ssl_context = None
        if tls_cert:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_context.load_cert_chain(tls_cert, tls_key or None)
        srv = server(host, port, ssl_context=ssl_context)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        self.stdout.write(f"dicom_scp listening on {host}:{port}{' (TLS)' if ssl_context else ''}", ending="\n")
        self.stdout.flush()
        stop.wait()
        srv.shutdown()
