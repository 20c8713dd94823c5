"""TLS to Redis and PostgreSQL as configured by environment variables, against real servers.

* Redis: a real redis-server speaking only TLS, with a certificate from a CA made here. With
  ``REDIS_TLS_CA_FILE`` naming that CA, the cache and the Celery broker connect; without it (the system's
  CAs do not know it) both refuse, which shows the certificate is checked (kombu alone would not check it).
* PostgreSQL: ``DATABASE_SSLMODE`` reaches libpq (on a server without TLS, ``require`` is refused).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import free_port, wait_until
from tests.test_platform import PROD_ENV

ROOT = Path(__file__).resolve().parent.parent

PROBE_REDIS = """
import django
django.setup()
from django.conf import settings
from django.core.cache import cache
from config.celery import app
results = {}
try:
    cache.set("tls-probe", "ok", 30)
    results["cache"] = cache.get("tls-probe")
except Exception as exc:
    results["cache"] = type(exc).__name__ + ": " + str(exc)
try:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        conn.default_channel.client.ping()
        results["broker"] = "ok"
except Exception as exc:
    results["broker"] = type(exc).__name__ + ": " + str(exc)
print(results)
"""


def _run(code: str, env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if k not in PROD_ENV and not k.startswith(("DATABASE_", "REDIS_"))}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def _ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:  # noqa: ANN001
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dentalscan test CA")])
    ca_cert = build("dentalscan test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path):  # noqa: ANN201
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    ca, cert, key = _ca_and_server_cert(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def ready() -> bool:
        import redis

        return bool(
            redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca), socket_connect_timeout=1).ping()
        )

    try:
        if proc.poll() is not None:
            pytest.skip(f"this redis-server has no TLS: {proc.stdout.read().decode()[-300:]}")  # type: ignore[union-attr]
        wait_until(ready, timeout=20, what="TLS redis")
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(10)


def test_rediss_checks_the_servers_certificate_for_cache_and_broker(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    env = {**PROD_ENV, "REDIS_URL": f"rediss://127.0.0.1:{port}/3"}
    trusted = _run(PROBE_REDIS, {**env, "REDIS_TLS_CA_FILE": str(ca)})
    assert trusted == "{'cache': 'ok', 'broker': 'ok'}", trusted
    untrusted = _run(PROBE_REDIS, env)  # the system's CAs do not know this server
    assert "'cache': 'ok'" not in untrusted and "'broker': 'ok'" not in untrusted, untrusted
    assert untrusted.count("certificate verify failed") == 2, untrusted
    # a plain connection to the TLS port is not silently accepted either
    plain = _run(PROBE_REDIS, {**PROD_ENV, "REDIS_URL": f"redis://127.0.0.1:{port}/3"})
    assert "'cache': 'ok'" not in plain, plain


PROBE_DB = """
import django
django.setup()
from django.db import connection
try:
    with connection.cursor() as cursor:
        cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        print("connected ssl=" + str(cursor.fetchone()[0]))
except Exception as exc:
    print("refused: " + str(exc).replace(chr(10), " "))
"""


def test_database_sslmode_reaches_libpq() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it")
    from urllib.parse import urlsplit, urlunsplit

    server = urlunsplit(urlsplit(url)._replace(path="/postgres"))  # a database that always exists
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": server}
    plain = _run(PROBE_DB, {**env, "DATABASE_SSLMODE": "disable"})
    assert plain == "connected ssl=False", plain
    required = _run(PROBE_DB, {**env, "DATABASE_SSLMODE": "require"})
    if required.startswith("connected"):  # a server with TLS: the session is encrypted
        assert required == "connected ssl=True", required
        verify = _run(PROBE_DB, {**env, "DATABASE_SSLMODE": "verify-full", "DATABASE_SSLROOTCERT": "/nonexistent"})
        assert verify.startswith("refused"), verify
    else:  # a server without TLS: libpq refuses rather than fall back to plain text
        assert "SSL" in required, required


def test_a_required_tls_cannot_be_weakened_by_the_sslmode() -> None:
    env = {**PROD_ENV, "DATABASE_SSL_REQUIRE": "true", "DATABASE_SSLMODE": "prefer"}
    base = {k: v for k, v in os.environ.items() if k not in PROD_ENV and not k.startswith(("DATABASE_", "REDIS_"))}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "DATABASE_SSLMODE allowing plain text" in done.stderr
    verified = _run(
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DATABASES['default']['OPTIONS'])",
        {**env, "DATABASE_SSLMODE": "verify-full", "DATABASE_SSLROOTCERT": "/etc/ca.pem"},
    )
    assert verified == "{'sslmode': 'verify-full', 'sslrootcert': '/etc/ca.pem'}", verified
