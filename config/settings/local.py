"""Embedded default for a developer's machine or a demo: no services needed."""

import secrets

from .base import *  # noqa: F403
from .base import VAR_DIR, env_bool, local_master_keys

# Off unless asked for (DEBUG=1 make run): a new user's first server fault shows the short error page (and the API
# its error shape), never Django's debug page with settings and local variables.
DEBUG = env_bool("DEBUG", False)
VAR_DIR.mkdir(parents=True, exist_ok=True)
# A random key per installation, kept under var/ (never committed); production reads SECRET_KEY.
_secret_file = VAR_DIR / "secret_key"
if not _secret_file.exists():
    _secret_file.write_text(secrets.token_urlsafe(50))
    _secret_file.chmod(0o600)
SECRET_KEY = _secret_file.read_text().strip()

# Serve static files straight from the app folders; no collectstatic needed.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# Master key for patient data encryption, one per installation, kept under var/.
MASTER_KEYS, MASTER_KEY_ID = local_master_keys(VAR_DIR)
