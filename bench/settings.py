"""Settings for the processes the benchmarks start: the test settings (PostgreSQL/Redis from
DATABASE_URL/REDIS_URL), or the embedded default's (``config.settings.local``) with ``BENCH_EMBEDDED=1``, with the
per-principal rate limits lifted when ``RATE_LIMITS_DISABLED=1`` (a load test from one API key is not an abusive
client)."""

import os

if os.environ.get("BENCH_EMBEDDED") == "1":
    from config.settings.local import *  # noqa: F403
    from config.settings.local import RATE_LIMITS
else:
    from config.settings.test import *  # noqa: F403
    from config.settings.test import RATE_LIMITS

if os.environ.get("RATE_LIMITS_DISABLED") == "1":
    RATE_LIMITS = {name: "1000000/60" for name in RATE_LIMITS}

# The deployed default of dynamic batching (the test settings turn its wait off).
ANALYSIS_BATCH_WAIT_MS = int(os.environ.get("ANALYSIS_BATCH_WAIT_MS", "50"))

# The deployed default of audit sealing without a broker (the test settings seal in the committing request).
AUDIT_SEAL_IN_BACKGROUND = os.environ.get("AUDIT_SEAL_IN_BACKGROUND", "1") == "1"

# CPU time per request by route, logged for the benchmark that reads it (bench/cpu_log.py).
if os.environ.get("BENCH_CPU_LOG"):
    MIDDLEWARE = ["bench.cpu_log.CpuLogMiddleware", *MIDDLEWARE]  # noqa: F405
