"""Start a real Celery worker process against the test database and the Redis broker."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def start_worker(queues: str, **extra_env: str) -> subprocess.Popen[str]:
    db = connection.settings_dict
    images = settings.STORAGES["images"].get("OPTIONS", {}).get("location")
    env = {
        **({"DENTALSCAN_IMAGES_DIR": images} if images else {}),
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        # The worker works as the application's role too, under row-level security.
        "DATABASE_APP_ROLE": settings.DATABASE_APP_ROLE,
        **extra_env,
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            queues,
            "--pool",
            "solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Read while it runs: a pipe nobody reads fills (64 KiB of log lines) and the worker then blocks on its writes.
    worker.log = WorkerLog(worker)  # type: ignore[attr-defined]
    return worker


def stop_worker(worker: subprocess.Popen[str]) -> str:
    """Stop the worker; returns everything it wrote."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return worker.log.close()


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, worker=None) -> object:  # noqa: ANN001
    """Poll ``condition`` until true; on failure stop ``worker`` and show its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if worker is not None and worker.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}:\n{stop_worker(worker)[-4000:]}")
        time.sleep(0.3)
    log = stop_worker(worker)[-4000:] if worker is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log}")


class WorkerLog:
    """A worker's output, collected line by line while it runs, so a test can wait for a line before it stops the
    worker (``start_worker`` attaches one as ``worker.log``)."""

    def __init__(self, worker: subprocess.Popen[str]) -> None:
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(worker,), daemon=True)
        self._reader.start()

    def _read(self, worker: subprocess.Popen[str]) -> None:
        for line in worker.stdout or ():
            self._lines.append(line)

    def text(self) -> str:
        return "".join(self._lines)

    def close(self) -> str:
        """After the worker stopped: everything it wrote."""
        self._reader.join(timeout=30)
        return self.text()
