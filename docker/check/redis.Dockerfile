# Stand-in for redis:7.0.15-bookworm where no image registry is reachable (deploy check only): Debian
# bookworm's redis-server (7.0.15), data in /data, redis-server and redis-cli on PATH.
ARG DEBIAN_IMAGE=localhost/dentalscan-python:3.11-bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
COPY docker/check/redis-entrypoint.sh /usr/local/bin/redis-entrypoint.sh
ENTRYPOINT ["sh", "/usr/local/bin/redis-entrypoint.sh"]
CMD ["redis-server"]
