"""Settings for the processes the benchmarks start: the test settings (PostgreSQL/Redis from
DATABASE_URL/REDIS_URL), with the per-principal rate limits lifted when ``RATE_LIMITS_DISABLED=1`` (a load
test from one API key is not an abusive client)."""

import os

from config.settings.test import *  # noqa: F403
from config.settings.test import RATE_LIMITS

if os.environ.get("RATE_LIMITS_DISABLED") == "1":
    RATE_LIMITS = {name: "1000000/60" for name in RATE_LIMITS}
