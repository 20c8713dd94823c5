# Celery worker image. With the default build argument it installs the CUDA build of torch from
# PyPI (the wheel carries the CUDA runtime; the host needs only the NVIDIA driver and the container
# toolkit). Build a CPU-only worker with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   docker build -f docker/worker.Dockerfile -t dentalscan-worker .
FROM python:3.11.13-slim-bookworm
ARG TORCH_INDEX=https://pypi.org/simple
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    WORKER_QUEUES=gpu WORKER_CONCURRENCY=1
RUN useradd --create-home --uid 10001 app
WORKDIR /app
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple \
      torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml constraints.txt README.md manage.py ./
COPY config ./config
COPY clinics ./clinics
COPY patients ./patients
COPY analysis ./analysis
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir ".[ml]" -c constraints.txt
USER app
# Healthy when the worker answers a ping over the broker.
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
  CMD celery -A config inspect ping -d "celery@$HOSTNAME" --timeout 10 || exit 1
CMD ["sh", "-c", "exec celery -A config worker -Q \"$WORKER_QUEUES\" --concurrency \"$WORKER_CONCURRENCY\" -n \"celery@$HOSTNAME\" --loglevel INFO"]
