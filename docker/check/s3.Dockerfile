# Stand-in for MinIO where its image cannot be had (deploy check only): moto in server mode, an S3 API on
# port 9000 (in memory; object lock and default retention supported), and boto3 for the bucket set-up.
ARG DEBIAN_IMAGE=localhost/dentalscan-python:3.11-bookworm
FROM ${DEBIAN_IMAGE}
ARG EXTRA_CA_BUNDLE=
COPY constraints.txt /tmp/constraints.txt
RUN env ${EXTRA_CA_BUNDLE:+PIP_CERT=$EXTRA_CA_BUNDLE} pip install --no-cache-dir "moto[server,s3]" boto3 -c /tmp/constraints.txt \
 && useradd --uid 10002 s3
COPY docker/check/s3_buckets.py /usr/local/bin/s3_buckets.py
USER s3
EXPOSE 9000
CMD ["moto_server", "-H", "0.0.0.0", "-p", "9000"]
