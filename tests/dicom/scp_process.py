"""``manage.py dicom_scp`` as a real subprocess on the test database (committed data: ``transactional_db``), the test's
master key and image folder; tasks run in it in-process (no broker), so what it receives is analysed there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

from .orthanc import free_port

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextmanager
def dicom_scp(images_dir: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_APP_ROLE")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=_database_url(),
        MASTER_KEYS=settings.MASTER_KEYS,
        MASTER_KEY_ID=settings.MASTER_KEY_ID,
        DENTALSCAN_IMAGES_DIR=str(images_dir),
        ANALYSIS_WARMUP="0",
        **(extra_env or {}),
    )
    log = open(images_dir.parent / "dicom_scp.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "manage.py", "dicom_scp", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while b"listening" not in (images_dir.parent / "dicom_scp.log").read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((images_dir.parent / "dicom_scp.log").read_text()[-3000:])
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def scp_log(images_dir: Path) -> str:
    return (images_dir.parent / "dicom_scp.log").read_text(errors="replace")
