"""The web process (``config.wsgi``, its start-up settings in ``config.process``): its garbage-collector setting,
parsed strictly and applied at start-up, and what it loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.process import gc_threshold


def test_threshold_values() -> None:
    assert gc_threshold("50000,20,100") == (50000, 20, 100)
    assert gc_threshold(" 700, 10, 10 ") == (700, 10, 10)
    assert gc_threshold("default") is None
    for bad in ("", "5000", "1,2", "a,b,c", "0,10,10", "1,2,3,4"):
        with pytest.raises(ImproperlyConfigured):
            gc_threshold(bad)


def _in_a_web_process(code: str, **env_changes: str | None) -> str:
    """The last line ``code`` prints in a fresh Python that imports ``config.wsgi`` as a web process does (test
    settings, no warm-up), with the environment changed by ``env_changes`` (None: unset)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "ANALYSIS_WARMUP": "0"}
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    done = subprocess.run(
        [sys.executable, "-c", "import config.wsgi\n" + code],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def _started(threshold: str | None) -> str:
    code = "import gc; print(gc.get_threshold(), gc.get_freeze_count() > 1000)"
    return _in_a_web_process(code, PYTHON_GC_THRESHOLD=threshold)


def test_the_web_application_freezes_its_start_up_heap_and_sets_the_threshold() -> None:
    assert _started(None) == "(10000, 20, 100) True"
    assert _started("default") == "(700, 10, 10) True"
    assert _started("1000,5,5") == "(1000, 5, 5) True"


def test_the_web_application_does_not_load_torch() -> None:
    """torch is the workers' (about 650 MB a process): a web process that imported it for nothing could run fewer
    processes in the same memory. (The embedded default loads it when it warms its in-process models.)"""
    code = "import sys; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    assert _in_a_web_process(code) == "[]"


@pytest.mark.parametrize(
    ("redis_url", "given", "expected"),
    [("redis://127.0.0.1:6379/15", None, "1"), ("", None, "unset"), ("redis://127.0.0.1:6379/15", "2", "2")],
)
def test_a_web_process_beside_workers_gives_the_gate_one_model_thread(
    redis_url: str, given: str | None, expected: str
) -> None:
    """With a broker the web process only embeds uploads for the image gate: one OpenMP thread (torch's width when
    it is imported later); without one (the embedded default runs analyses in-process) it keeps the machine's; an
    explicit OMP_NUM_THREADS wins."""
    code = "import os; print(os.environ.get('OMP_NUM_THREADS', 'unset'))"
    assert _in_a_web_process(code, REDIS_URL=redis_url, OMP_NUM_THREADS=given) == expected
