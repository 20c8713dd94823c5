# Web image: Django + gunicorn, production settings, non-root, with a health check.
# Built from the project root:  docker build -f docker/web.Dockerfile -t dentalscan-web .
# It installs the ML extra like the worker (the analysis app imports torch when Django starts, though the web
# process never runs a model); every step up to the project's install is the worker's, so the two images share
# those layers. Build arguments (all optional):
#   BASE_IMAGE       a Python 3.11 base; default the official image. Where no registry is reachable, a local one
#                    (docker/deploy_check.py builds localhost/dentalscan-python:3.11-bookworm from Debian packages).
#   TORCH_INDEX      where torch comes from: PyPI (CUDA build) by default, https://download.pytorch.org/whl/cpu
#                    for the CPU build.
#   EXTRA_CA_BUNDLE  path, inside the build, of a CA bundle for pip: behind a TLS-inspecting proxy, mount the
#                    clinic's bundle read-only into the build (Podman: podman build -v /etc/ssl/certs:/run/ca:ro
#                    --build-arg EXTRA_CA_BUNDLE=/run/ca/ca-certificates.crt).
#   WHEELS_DIR       path, inside the build, of a local wheel folder pip looks in first (Podman:
#                    -v DIR:/run/wheels:ro --build-arg WHEELS_DIR=/run/wheels), e.g. one holding torch.
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
RUN SECRET_KEY=build-time-only-collectstatic-not-a-real-secret-0123456789abcdef \
    DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 ALLOWED_HOSTS=localhost \
    MASTER_KEYS=build:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= MASTER_KEY_ID=build \
    python manage.py collectstatic --noinput
USER app
EXPOSE 8000
# Runs with a read-only root filesystem (compose: read_only, a tmpfs on /tmp). Healthy when the login page
# answers 200 to a request as the TLS proxy would send it (the first ALLOWED_HOSTS name, X-Forwarded-Proto).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python /usr/local/bin/dentalscan-healthcheck
# Processes x threads from the environment (WEB_PROCESSES, WEB_THREADS): a request mostly waits on PostgreSQL, so
# several processes with 2 threads each answer many users sooner than few processes with many threads
# (bench/README.md: 6x2 against 2x4 on 2 cores, 50 users).
ENV WEB_PROCESSES=4 WEB_THREADS=2
CMD ["sh", "-c", "exec gunicorn config.wsgi:application --bind 0.0.0.0:8000 --worker-class gthread --workers \"${WEB_PROCESSES:-4}\" --threads \"${WEB_THREADS:-2}\" --timeout 120 --worker-tmp-dir /tmp"]
