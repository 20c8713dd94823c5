"""Start-up settings of a web process, applied by ``config.wsgi`` (kept here, free of side effects on import, so
that tests can import them without changing the test process)."""

from __future__ import annotations

import os


def gc_threshold(raw: str) -> tuple[int, ...] | None:
    """``PYTHON_GC_THRESHOLD``'s value as ``gc.set_threshold`` arguments; None for ``default`` (Python's own)."""
    raw = raw.strip()
    if raw == "default":
        return None
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"PYTHON_GC_THRESHOLD must be three positive integers or 'default', not {raw!r}")
    return values


def tune_gc() -> None:
    """The web process's garbage collector, tuned for request handling (``PYTHON_GC_THRESHOLD``, default
    ``10000,20,100``; ``default`` keeps Python's 700,10,10).

    After start-up everything loaded (Django, the apps, numpy, the models in the embedded default) is moved to the
    permanent generation (``gc.freeze``): collections no longer walk it. A list request builds hundreds of model
    instances; at Python's default threshold that set off a young collection every 700 allocations, and often an
    older one that walked the whole start-up heap. ``bench/bench_api_load.py --quick`` on the 2-core VM, analyses
    list, CPU per request: 30.1 ms before; 23.9 ms frozen at Python's thresholds; 18.3 ms frozen at 10000,20,100
    (18.4 at 50000,20,100: no better, and a larger threshold keeps the garbage of DRF's request/view reference
    cycles, response bodies included, for more requests before a young collection frees it)."""
    import gc

    gc.collect()
    gc.freeze()
    threshold = gc_threshold(os.environ.get("PYTHON_GC_THRESHOLD", "10000,20,100"))
    if threshold is not None:
        gc.set_threshold(*threshold)


def one_model_thread_when_workers_analyse() -> None:
    """With a broker, analyses run in the workers; this web process runs only the image gate's small embedding of
    an uploaded photo. Several uploads at once in several web processes, each with an OpenMP pool as wide as the
    machine, spin threads against each other: one thread each (torch reads ``OMP_NUM_THREADS`` when first
    imported, which in a web process happens at the first upload). An explicit ``OMP_NUM_THREADS`` wins."""
    from django.conf import settings

    if not settings.CELERY_TASK_ALWAYS_EAGER:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
