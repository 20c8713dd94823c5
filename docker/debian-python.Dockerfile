# A Python base made from a local Debian root, for machines that cannot pull the official python image (no
# registry reachable): the same layout as python:3.11-slim-bookworm for what the application's images use
# (`python` and `pip` on PATH, Python 3.11), from Debian's own packages. Built by docker/deploy_check.py:
#   debootstrap --variant=minbase --include=ca-certificates bookworm ROOTFS http://deb.debian.org/debian
#   tar -C ROOTFS -c . | podman import - localhost/dentalscan-debian:bookworm
#   podman build -f docker/debian-python.Dockerfile -t localhost/dentalscan-python:3.11-bookworm docker
ARG DEBIAN_IMAGE=localhost/dentalscan-debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN printf '%s\n' \
      'deb http://deb.debian.org/debian bookworm main' \
      'deb http://deb.debian.org/debian bookworm-updates main' \
      'deb http://deb.debian.org/debian-security bookworm-security main' > /etc/apt/sources.list \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/python
ENV PATH=/opt/python/bin:$PATH
CMD ["python3"]
