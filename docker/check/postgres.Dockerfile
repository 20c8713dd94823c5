# Stand-in for postgres:15-bookworm where no image registry is reachable (deploy check only): Debian's
# PostgreSQL 15 with the official image's start-up contract (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB on
# first start, data in /var/lib/postgresql/data, password authentication from the network, pg_isready).
ARG DEBIAN_IMAGE=localhost/dentalscan-python:3.11-bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY docker/check/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
USER postgres
EXPOSE 5432
ENTRYPOINT ["sh", "/usr/local/bin/postgres-entrypoint.sh"]
