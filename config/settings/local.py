"""Embedded default for a developer's machine or a demo: no services needed."""

from .base import *  # noqa: F403
from .base import VAR_DIR, env_bool

DEBUG = env_bool("DEBUG", True)
# Development only; production refuses to start without its own secret.
SECRET_KEY = "django-insecure-local-development-key-not-for-production-use-0123456789"  # noqa: S105
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Serve static files straight from the app folders; no collectstatic needed.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
