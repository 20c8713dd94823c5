"""Test settings: the embedded default unless DATABASE_URL / REDIS_URL point at real services (CI)."""

from .base import *  # noqa: F403
from .base import VAR_DIR, local_master_keys

DEBUG = False
SECRET_KEY = "test-secret-key-for-the-test-suite-only-0123456789-abcdefghijklmnop"  # noqa: S105
VAR_DIR.mkdir(parents=True, exist_ok=True)
# Argon2 stays the hasher (it is what production runs), with cheaper parameters for speed.
PASSWORD_HASHERS = ["tests.hashers.FastArgon2PasswordHasher"]

# Serve static files straight from the app folders; no collectstatic needed.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# Master key for patient data encryption, one per installation, kept under var/.
MASTER_KEYS, MASTER_KEY_ID = local_master_keys(VAR_DIR)

# Rate-limit and lockout counters live in the cache: each test process keeps its own, and the suite
# clears it between tests (the Redis database of REDIS_URL is the Celery broker in CI).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    import os

    # A file, as on the embedded default, not Django's in-memory database: with that one the browser tests' live
    # server shares a single connection between all its threads, which parallel requests break ("database table
    # is locked"); with a file each thread has its own connection, in WAL mode with IMMEDIATE transactions. One
    # file per test process, so two runs in one checkout never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}  # noqa: F405

# No dynamic-batching wait in tests (every eager analysis would pay it); tests/analysis/test_jobs.py sets it.
ANALYSIS_BATCH_WAIT_MS = 0

# Audit events of an eager (no-broker) test are sealed right after their commit, in the committing thread, so that
# tests can read them sealed; tests/clinics/test_audit_chain.py covers the background sealer of the default.
AUDIT_SEAL_IN_BACKGROUND = False
