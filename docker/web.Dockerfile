# Web image: Django + gunicorn, production settings, non-root, with a health check.
# Built from the project root:  docker build -f docker/web.Dockerfile -t dentalscan-web .
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml constraints.txt README.md manage.py ./
COPY config ./config
COPY clinics ./clinics
COPY patients ./patients
COPY analysis ./analysis
COPY templates ./templates
COPY static ./static
# The web process never runs a model: it installs without the ML extra (torch stays on workers).
RUN pip install --no-cache-dir . -c constraints.txt \
 && SECRET_KEY=build-time-only-collectstatic-not-a-real-secret-0123456789abcdef \
    DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 ALLOWED_HOSTS=localhost \
    MASTER_KEYS=build:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= MASTER_KEY_ID=build \
    python manage.py collectstatic --noinput
USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/login/', timeout=3)"
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
