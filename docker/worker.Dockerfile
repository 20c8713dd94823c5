# Celery worker image. With the default build argument it installs the CUDA build of torch from
# PyPI (the wheel carries the CUDA runtime; the host needs only the NVIDIA driver and the container
# toolkit). Build a CPU-only worker with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   docker build -f docker/worker.Dockerfile -t dentalscan-worker .
# BASE_IMAGE, EXTRA_CA_BUNDLE and WHEELS_DIR as in web.Dockerfile; every step up to the project's install is the
# web image's, so the two share those layers.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=https://pypi.org/simple
ARG EXTRA_CA_BUNDLE=
ARG WHEELS_DIR=
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    HOME=/tmp XDG_CACHE_HOME=/tmp/.cache MPLCONFIGDIR=/tmp/matplotlib
RUN useradd --no-create-home --home-dir /tmp --uid 10001 app
WORKDIR /app
COPY pyproject.toml constraints.txt ./
# Dependencies first (their layers are reused while only the code or README changes; web and worker share
# them).
RUN env ${EXTRA_CA_BUNDLE:+PIP_CERT=$EXTRA_CA_BUNDLE} ${WHEELS_DIR:+PIP_FIND_LINKS=$WHEELS_DIR} pip install --no-cache-dir \
      --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple \
      torch==2.14.1 torchvision==0.29.1
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
      print('\n'.join(p['dependencies'] + [r for r in p['optional-dependencies']['ml'] if not r.startswith('torch')]))" \
      > /tmp/requirements.txt \
 && env ${EXTRA_CA_BUNDLE:+PIP_CERT=$EXTRA_CA_BUNDLE} ${WHEELS_DIR:+PIP_FIND_LINKS=$WHEELS_DIR} pip install --no-cache-dir \
      -r /tmp/requirements.txt -c constraints.txt && rm /tmp/requirements.txt
COPY README.md manage.py ./
COPY config ./config
COPY core ./core
COPY clinics ./clinics
COPY patients ./patients
COPY analysis ./analysis
COPY demo ./demo
COPY dicom ./dicom
COPY templates ./templates
COPY static ./static
RUN env ${EXTRA_CA_BUNDLE:+PIP_CERT=$EXTRA_CA_BUNDLE} pip install --no-cache-dir --no-deps ".[ml]" -c constraints.txt
COPY docker/healthcheck.py /usr/local/bin/dentalscan-healthcheck
ENV WORKER_QUEUES=gpu WORKER_CONCURRENCY=1
USER app
# Runs with a read-only root filesystem (compose: read_only, a tmpfs on /tmp).
# Healthy when the worker answers a ping over the broker (HOSTNAME is not set in a podman exec: hostname).
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
  CMD celery -A config inspect ping -d "celery@${HOSTNAME:-$(hostname)}" --timeout 10 || exit 1
CMD ["sh", "-c", "exec celery -A config worker -Q \"$WORKER_QUEUES\" --concurrency \"$WORKER_CONCURRENCY\" -n \"celery@$HOSTNAME\" --loglevel INFO"]
