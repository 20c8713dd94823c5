"""Settings shared by every situation.

With no environment variables the platform runs embedded: SQLite and local storage under ``var/``,
an in-memory cache and Celery tasks executed in-process. ``DATABASE_URL`` (PostgreSQL) and
``REDIS_URL`` (Celery broker and cache) switch to the real services.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("DENTALSCAN_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def local_master_keys(var_dir: Path) -> tuple[str, str]:
    """A master key generated once per installation for local and test runs (never production)."""
    import base64
    import secrets

    if os.environ.get("MASTER_KEYS"):
        return os.environ["MASTER_KEYS"], os.environ.get("MASTER_KEY_ID", "")
    path = var_dir / "master_keys"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"local1:{base64.b64encode(secrets.token_bytes(32)).decode()}")
        path.chmod(0o600)
    keys = path.read_text().strip()
    return keys, keys.split(",")[0].split(":")[0]


DEBUG = False
ALLOWED_HOSTS: list[str] = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # runserver never serves static files around the middleware (DEBUG=1 would): WhiteNoise serves them, with the
    # security headers (nosniff) like every other response
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "clinics",
    "patients",
    "analysis",
    "dicom",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "clinics.middleware.RequestContextMiddleware",
    "clinics.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "clinics.sessions.SessionTimeoutMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "clinics.context_processors.clinic",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
        ssl_require=env_bool("DATABASE_SSL_REQUIRE"),
    )
}
# TLS to PostgreSQL. DATABASE_SSL_REQUIRE=true alone is libpq's sslmode=require: encrypted, but the server's
# certificate is not checked. DATABASE_SSLMODE=verify-full (and DATABASE_SSLROOTCERT, the CA file, unless
# the server's CA is in ~/.postgresql/root.crt) also checks who answers.
for _name, _option in (("DATABASE_SSLMODE", "sslmode"), ("DATABASE_SSLROOTCERT", "sslrootcert")):
    if os.environ.get(_name) and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {})[_option] = os.environ[_name]
if env_bool("DATABASE_SSL_REQUIRE") and os.environ.get("DATABASE_SSLMODE", "") in {"disable", "allow", "prefer"}:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("DATABASE_SSL_REQUIRE=true with DATABASE_SSLMODE allowing plain text.")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves a real browser: a page asks for many images at once, each read is audited (a
    # write), uploads arrive in parallel. WAL lets readers run beside the one writer; a write transaction takes
    # the write lock when it begins (IMMEDIATE), so two transactions never both read and then both try to
    # upgrade (SQLite answers that with an immediate "database is locked" that no timeout helps); a writer waits
    # up to DATABASE_SQLITE_TIMEOUT seconds for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": float(os.environ.get("DATABASE_SQLITE_TIMEOUT", "30")),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Same backend plus row-level security settings kept in line with the clinic scope (clinics.rls).
    DATABASES["default"]["ENGINE"] = "clinics.dbbackend"
    # Connection pool per process (Django's psycopg_pool option), on when DATABASE_POOL_MAX_SIZE > 0: size it to
    # the threads that use the database at once in one process (gunicorn --threads; 1-2 for a Celery solo worker).
    # A pooled connection keeps no clinic scope between uses: the backend sets app.clinic_id before the first
    # statement after every checkout (tests/clinics/test_rls_pool.py).
    if int(os.environ.get("DATABASE_POOL_MAX_SIZE", "0")) > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django's pool replaces persistent connections
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": int(os.environ.get("DATABASE_POOL_MIN_SIZE", "1")),
            "max_size": int(os.environ["DATABASE_POOL_MAX_SIZE"]),
            "timeout": float(os.environ.get("DATABASE_POOL_TIMEOUT", "10")),
        }
# Optional: SET ROLE to this role on connect (log in as a member of the application role).
DATABASE_APP_ROLE = os.environ.get("DATABASE_APP_ROLE", "")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Celery -----------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "dentalscan",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# TLS to Redis: a rediss:// URL. The server's certificate is always checked, against REDIS_TLS_CA_FILE
# when set, else the system's CAs (kombu alone would not check it for the broker).
REDIS_TLS_CA_FILE = os.environ.get("REDIS_TLS_CA_FILE", "")
if REDIS_URL.startswith("rediss://"):
    import ssl

    _ca = {"ssl_ca_certs": REDIS_TLS_CA_FILE} if REDIS_TLS_CA_FILE else {}
    CACHES["default"]["OPTIONS"] = {"ssl_cert_reqs": "required", **_ca}
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED, **_ca}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Queue of each task, by task name (see config.celery.Queue): model inference goes to GPU workers.
CELERY_TASK_ROUTES = {
    "analysis.*": {"queue": "gpu"},
    "clinics.*": {"queue": "default"},
    "patients.*": {"queue": "default"},
    "webhooks.*": {"queue": "default"},
    "dicom.*": {"queue": "default"},
}
# DICOM (dicom/): the receiver's port (`manage.py dicom_scp`), and the sending task's retries: attempt n+1 waits
# DICOM_SEND_RETRY_BASE_SECONDS * 2**n (at most an hour) after attempt n, DICOM_SEND_MAX_ATTEMPTS in all.
DICOM_SCP_PORT = int(os.environ.get("DICOM_SCP_PORT", "11112"))
DICOM_SCP_HOST = os.environ.get("DICOM_SCP_HOST", "0.0.0.0")  # noqa: S104 - a DICOM receiver listens on the LAN
# DICOM over TLS for the receiver (PEM files); empty: plain DICOM (keep it on the practice's network).
DICOM_SCP_TLS_CERT = os.environ.get("DICOM_SCP_TLS_CERT", "")
DICOM_SCP_TLS_KEY = os.environ.get("DICOM_SCP_TLS_KEY", "")
# CA file that signs the clinics' PACS certificates when results are sent over TLS (empty: the system's CAs).
DICOM_SEND_TLS_CA_FILE = os.environ.get("DICOM_SEND_TLS_CA_FILE", "")
DICOM_SEND_RETRY_BASE_SECONDS = float(os.environ.get("DICOM_SEND_RETRY_BASE_SECONDS", "30"))
DICOM_SEND_MAX_ATTEMPTS = int(os.environ.get("DICOM_SEND_MAX_ATTEMPTS", "8"))
DICOM_SEND_TIMEOUT_SECONDS = float(os.environ.get("DICOM_SEND_TIMEOUT_SECONDS", "30"))
# Images a clinic's DICOM inbox holds at most (unmatched, waiting for a patient); more are refused (0xA700) until
# some are assigned. Their bytes count in IMAGE_QUOTA_BYTES_PER_CLINIC like images.
DICOM_INBOX_MAX_ENTRIES = int(os.environ.get("DICOM_INBOX_MAX_ENTRIES", "1000"))
# Analysis jobs: a claim older than this belongs to a dead worker (must exceed the hard time limit).
ANALYSIS_STALE_AFTER_SECONDS = int(os.environ.get("ANALYSIS_STALE_AFTER_SECONDS", "300"))
# Claims of one analysis before it is recorded as failed (each worker that took it stopped before finishing).
ANALYSIS_MAX_ATTEMPTS = int(os.environ.get("ANALYSIS_MAX_ATTEMPTS", "5"))
ANALYSIS_BATCH_SIZE = int(os.environ.get("ANALYSIS_BATCH_SIZE", "16"))
# A worker whose batch is not full waits this long once for analyses being queued at that moment (dynamic
# batching across the clinic's visits); 0 = no wait.
ANALYSIS_BATCH_WAIT_MS = int(os.environ.get("ANALYSIS_BATCH_WAIT_MS", "50"))
# On CPU, run the photo classifier with ONNX Runtime (exported once per artefact, cached under
# DENTALSCAN_ONNX_CACHE): about 2x faster than eager PyTorch on the 2-core benchmark machine, same scores
# to 1e-6 (tests/ml/test_fast.py). Off: PyTorch everywhere. GPUs always use PyTorch (mixed precision).
ANALYSIS_ONNX_RUNTIME = os.environ.get("ANALYSIS_ONNX_RUNTIME", "on").lower() not in {"0", "off", "false", "no"}
# Load and warm the active models when a worker (or, with no broker, the web process) starts, not inside the
# first request (analysis/warmup.py).
ANALYSIS_WARMUP = env_bool("ANALYSIS_WARMUP", True)
# Analyses queued longer than this (a lost broker message) are sent again by the periodic sweep
# "analysis.requeue_stale" (celery beat) or by `manage.py requeue_analyses`.
ANALYSIS_REQUEUE_AFTER_SECONDS = int(os.environ.get("ANALYSIS_REQUEUE_AFTER_SECONDS", "300"))
# Seconds between runs of the audit sealer (beat "audit-seal"; the background sealer's longest retry wait too).
AUDIT_SEAL_EVERY_SECONDS = float(os.environ.get("AUDIT_SEAL_EVERY_SECONDS", "5"))
CELERY_BEAT_SCHEDULE = {
    "analysis-requeue-stale": {
        "task": "analysis.requeue_stale",
        "schedule": float(os.environ.get("ANALYSIS_REQUEUE_EVERY_SECONDS", "60")),
    },
    # sealed audit chain heads outside the database (clinics/audit_checkpoints.py)
    "audit-checkpoint": {
        "task": "clinics.audit_checkpoint",
        "schedule": float(os.environ.get("AUDIT_CHECKPOINT_EVERY_SECONDS", "3600")),
    },
    # audit events are inserted unsealed (no lock on the request path) and sealed into their chains here
    # (clinics/audit.py); a message not taken within the period is dropped, the next one seals the same events
    "audit-seal": {
        "task": "clinics.audit_seal",
        "schedule": AUDIT_SEAL_EVERY_SECONDS,
        "options": {"expires": AUDIT_SEAL_EVERY_SECONDS},
    },
}
# verify_audit_chain reports an audit event still unsealed this many seconds after it was recorded (a stopped
# sealer) as a fault.
AUDIT_SEAL_MAX_AGE_S = float(os.environ.get("AUDIT_SEAL_MAX_AGE_S", "60"))
# Without a broker (the embedded default), audit events are sealed by a background thread of each process a moment
# after their commit, many requests' events at a time (1, default); 0 seals right after each commit, in the request.
AUDIT_SEAL_IN_BACKGROUND = os.environ.get("AUDIT_SEAL_IN_BACKGROUND", "1") == "1"
# Fault tests only: pause before writing results so a worker can be killed mid-task.
ANALYSIS_DEBUG_SLEEP_SECONDS = float(os.environ.get("ANALYSIS_DEBUG_SLEEP_SECONDS", "0"))
WEBHOOK_RETRY_BASE_SECONDS = float(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS", "10"))
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Above the longest hard time limit of any task, so a running task is never redelivered early.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))}

# --- Authentication -------------------------------------------------------------------------
AUTH_USER_MODEL = "clinics.User"
AUTHENTICATION_BACKENDS = ["clinics.auth.EmailBackend"]
LOGIN_URL = "clinics:login"
LOGIN_REDIRECT_URL = "clinics:home"
LOGOUT_REDIRECT_URL = "clinics:login"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # a common password with digits/symbols around it ("Password123!", "Welcome2024!"): clinics/passwords.py
    {"NAME": "clinics.passwords.BreachedPatternValidator"},
]
# Short-lived user API tokens (POST /api/v1/auth/token/).
USER_TOKEN_TTL_SECONDS = int(os.environ.get("USER_TOKEN_TTL_SECONDS", "3600"))
# Second log-in step (MFA) must follow the password within this time.
MFA_PENDING_MAX_AGE_SECONDS = 300
# Exports and erasure need the password (and code) confirmed this recently (a fresh token for the API).
REAUTH_MAX_AGE_SECONDS = 300
# Lockout of an (email, client IP) pair after failed log-ins, and its cool-off.
LOCKOUT_FAILURES = 5
LOCKOUT_COOLOFF_SECONDS = 15 * 60
# Rate limits "requests/seconds" per principal within its clinic (anonymous: per IP, one bucket per purpose, and
# "<purpose>_account" per account whatever the IP); 429 + Retry-After. "login_account" counts FAILED log-ins (and
# API token requests) only, well above the per-IP allowance; "password_reset_account" is three times the per-IP
# allowance in a one-minute window, so one address can never use it up and nobody can hold a person's resets
# for longer than a minute after stopping (the mail itself is limited per address: "password_reset_mail").
RATE_LIMITS = {
    "login": "20/60",
    "login_account": "100/900",
    "second_factor": "20/60",
    "second_factor_account": "20/60",
    # Wrong second-factor codes per account after the right password, from any address (web log-in and API tokens):
    # once used up the second factor is refused for the rest of the hour and the person is told by e-mail (whoever
    # types knows the password). 10 an hour lets a spread-out guesser try 240 of a million codes a day, not 28,800.
    "second_factor_failures_account": "10/3600",
    "password_reset": "20/60",
    "password_reset_account": "60/60",
    "invitation": "20/60",
    "invitation_account": "20/60",
    "token": "20/60",
    "upload": "300/60",
    "analysis": "600/60",
    "export": "20/3600",
    "password_reset_mail": "3/3600",  # reset mails per address, whoever asks
    "invite": "30/3600",  # invitations sent, per clinic admin
    "invitation_address": "3/86400",  # invitations of one address by one clinic, per day
    "schema_variant": "30/60",  # API documents in another language or version (each is built for its request)
}

# --- Sessions and cookies -------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 12 * 60 * 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# Automatic log-off (HIPAA 164.312(a)(2)(iii)): idle limit and absolute limit of a session.
SESSION_IDLE_TIMEOUT_SECONDS = 15 * 60
SESSION_ABSOLUTE_TIMEOUT_SECONDS = 12 * 60 * 60
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Emergency ("break-glass") access to a restricted patient lasts this long and is never extended.
BREAK_GLASS_MINUTES = 60
# Notifications (emergency access) go by e-mail: SMTP when EMAIL_HOST is set, else the console.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "dentalscan@localhost")
# A clinic's invitation to an address can be accepted for this long (it can be revoked before).
INVITATION_TTL_SECONDS = int(os.environ.get("INVITATION_TTL_SECONDS", str(7 * 24 * 3600)))
# "Forgot your password?" links work once and for this long (Django's default is three days).
PASSWORD_RESET_TIMEOUT = int(os.environ.get("PASSWORD_RESET_TIMEOUT", "3600"))
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)

# --- Internationalisation -------------------------------------------------------------------
LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media -----------------------------------------------------------------------
STATIC_URL = "/static/"


def _static_headers(headers: dict[str, str], path: str, url: str) -> None:
    """nosniff on every static file, even where one is served before the security middleware."""
    headers["X-Content-Type-Options"] = "nosniff"


WHITENOISE_ADD_HEADERS_FUNCTION = _static_headers
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / "storage")},
    },
    # Encrypted image blobs; object names are random ids, never user file names.
    "images": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": os.environ.get("DENTALSCAN_IMAGES_DIR", str(VAR_DIR / "images")),
            "file_permissions_mode": 0o600,
        },
    },
    # Sealed audit checkpoints (clinics/audit_checkpoints.py): keep them where the database's owner cannot
    # write -- in production a bucket of their own with object lock (AUDIT_CHECKPOINT_S3_BUCKET).
    "audit_checkpoints": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": os.environ.get("AUDIT_CHECKPOINT_DIR", str(VAR_DIR / "audit-checkpoints")),
            "file_permissions_mode": 0o600,
        },
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


def _s3_storage(bucket: str) -> dict:
    """An S3-compatible bucket on the ``STORAGE_S3_*`` endpoint and credentials; objects never overwritten."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": os.environ.get("STORAGE_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("STORAGE_S3_REGION") or None,
            "access_key": os.environ.get("STORAGE_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("STORAGE_S3_SECRET_ACCESS_KEY") or None,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }


if os.environ.get("STORAGE_S3_BUCKET"):
    STORAGES["images"] = _s3_storage(os.environ["STORAGE_S3_BUCKET"])
if os.environ.get("AUDIT_CHECKPOINT_S3_BUCKET"):
    STORAGES["audit_checkpoints"] = _s3_storage(os.environ["AUDIT_CHECKPOINT_S3_BUCKET"])

# --- Patient images: intake limits and encryption ------------------------------------------
IMAGE_MAX_BYTES = int(os.environ.get("IMAGE_MAX_BYTES", str(40 * 1024 * 1024)))
IMAGE_MAX_PIXELS = int(os.environ.get("IMAGE_MAX_PIXELS", "50000000"))
# The multi-file upload (POST /api/v1/patients/{id}/images/batch/): files per request, and bytes of the whole
# request (held in memory while it is handled, like a single upload's file).
UPLOAD_BATCH_MAX_FILES = int(os.environ.get("UPLOAD_BATCH_MAX_FILES", "20"))
UPLOAD_BATCH_MAX_BYTES = int(os.environ.get("UPLOAD_BATCH_MAX_BYTES", str(2 * IMAGE_MAX_BYTES)))
# Bytes a clinic's images may occupy in storage (every encrypted blob of each image); 0 means no limit.
IMAGE_QUOTA_BYTES_PER_CLINIC = int(os.environ.get("IMAGE_QUOTA_BYTES_PER_CLINIC", str(200 * 1024**3)))
# Uploads stay in memory under the byte cap and are never spooled to temporary files.
FILE_UPLOAD_HANDLERS = ["patients.uploads.LimitedMemoryUploadHandler"]
FILE_UPLOAD_MAX_MEMORY_SIZE = IMAGE_MAX_BYTES
# Master keys that wrap the per-clinic and per-patient data keys: "id:base64key,id2:base64key",
# and the id of the one used for new wrapping. Empty in local/test settings: a key file under var/.
MASTER_KEYS = os.environ.get("MASTER_KEYS", "")
MASTER_KEY_ID = os.environ.get("MASTER_KEY_ID", "")
KEY_PROVIDER = os.environ.get("KEY_PROVIDER", "core.key_providers.StaticKeyProvider")

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "clinics.api.authentication.BearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["clinics.api.permissions.RoutePermission"],
    "DEFAULT_PAGINATION_CLASS": "clinics.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "clinics.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["clinics.api.permissions.RouteThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    # ``?format=`` is ours (the audit export), not DRF's content negotiation.
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "DentalScan API",
    "DESCRIPTION": "Clinic-scoped REST API: patients, images, analyses, findings and the audit trail.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from our own static files (static/vendor/swagger-ui/README.md: package, version, integrity),
    # never a CDN: the API reference works offline and under the site's CSP.
    "SWAGGER_UI_DIST": f"{STATIC_URL}vendor/swagger-ui",
    "SWAGGER_UI_FAVICON_HREF": f"{STATIC_URL}vendor/swagger-ui/favicon-32x32.png",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Clinic API key or user token"}
        }
    },
    "SECURITY": [{"bearer": []}],
}

# --- Platform -------------------------------------------------------------------------------
# seed_demo and other demo helpers refuse to run where this is False (production).
DEMO_DATA_ALLOWED = True
# Number of proxies in front of the app whose X-Forwarded-For entries are trusted (0: none).
TRUSTED_PROXY_COUNT = int(os.environ.get("TRUSTED_PROXY_COUNT", "0"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logging.RequestIdFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
