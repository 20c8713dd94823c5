"""Build the images and run the compose stack for real (Podman), then drive it from outside.

    python docker/deploy_check.py [--skip-if-unavailable] [--keep]

Steps, each timed: a Debian base (debootstrap, once, cached as a tarball) imported into Podman and a Python base
on it; local stand-in images for PostgreSQL, Redis and S3 (moto; no image registry is reachable here); the web
and worker images from docker/web.Dockerfile and docker/worker.Dockerfile (BASE_IMAGE = the local Python base,
the machine's CA bundle and local wheel folder as read-only build mounts); then docker/compose.yaml, unchanged,
with the overlay docker/check/compose.check.yaml, started by podman-compose (from PyPI, in the cache folder):
  - the one-shot migrate service applies migrations, creates the application role, registers the models;
  - a smoke journey through the REST API on the 127.0.0.1-published web port: a patient, two photos and an
    X-ray, the worker container analyses them, a dentist token reviews every finding and signs, the PDF
    report downloads (the dentist's browser session);
  - the worker container is killed mid-analysis and started again: every analysis finishes exactly once;
  - two worker containers (--scale): both take jobs (their logs);
  - the audit trail: every event sealed into its chain by the stack's beat and worker, verify_audit_chain intact;
  - everything is torn down (volumes too); image sizes and the time of each step are printed.

Nothing is contacted at run time but 127.0.0.1 and the stack's own container network (building needs Debian's
and PyPI's servers, or their caches): while the stack runs, the kernel's connection tracking table
(/proc/net/nf_conntrack) is sampled every 0.2 s, and any connection from the stack's network to an address outside
it fails the check (NETWORK line). Cache folder: $DEPLOY_CHECK_CACHE or ~/.cache/dentalscan-deploy.
Exit status 0 when every step passed; with --skip-if-unavailable, 0 and "SKIPPED: <reason>" when Podman cannot
run containers here.
"""

from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
CACHE = Path(os.environ.get("DEPLOY_CHECK_CACHE", Path.home() / ".cache" / "dentalscan-deploy"))
PODMAN_COMPOSE = "podman-compose==1.5.0"
DEBIAN_IMAGE = "localhost/dentalscan-debian:bookworm"
PYTHON_IMAGE = "localhost/dentalscan-python:3.11-bookworm"
WEB_IMAGE = "localhost/dentalscan-web:latest"
WORKER_IMAGE = "localhost/dentalscan-worker:latest"
STAND_INS = {  # compose service -> (Dockerfile, image), as named in docker/check/compose.check.yaml
    "db": ("docker/check/postgres.Dockerfile", "localhost/dentalscan-check-postgres:15-bookworm"),
    "redis": ("docker/check/redis.Dockerfile", "localhost/dentalscan-check-redis:7.0.15-bookworm"),
    "s3": ("docker/check/s3.Dockerfile", "localhost/dentalscan-check-s3:moto-5.2.5"),
}
HOST = "dentalscan.test"  # ALLOWED_HOSTS of the stack; requests go to 127.0.0.1 with this Host header
CONTAINERS_CONF = """\
# Written by docker/deploy_check.py: runc with cgroupfs (crun refuses cgroups v1 hybrid mode here), and no
# default ulimits (setting rlimits is not permitted here).
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

TIMINGS: list[tuple[str, float]] = []
RESULTS: list[str] = []


class CheckFailed(Exception):
    pass


@contextmanager
def step(name: str) -> Iterator[None]:
    print(f"\n== {name}", flush=True)
    started = time.monotonic()
    try:
        yield
    finally:
        TIMINGS.append((name, time.monotonic() - started))
        print(f"   ({TIMINGS[-1][1]:.1f} s)", flush=True)


def run(*command: str, check: bool = True, capture: bool = False, timeout: float = 3600) -> subprocess.CompletedProcess:
    # podman and the build tools with arguments made here, never from input
    result = subprocess.run(command, capture_output=capture, text=True, timeout=timeout, check=False)  # noqa: S603
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "")[-3000:] if capture else ""
        raise CheckFailed(f"{' '.join(command[:6])} ... exited {result.returncode}\n{detail}")
    return result


def output(*command: str, timeout: float = 600) -> str:
    return run(*command, capture=True, timeout=timeout).stdout.strip()


# --- Podman and the base -------------------------------------------------------------------------------------


def podman_unavailable() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install podman runc debootstrap)"
    if shutil.which("runc") is None:
        return "runc is not installed (Debian: apt-get install runc)"
    info = run("podman", "info", check=False, capture=True, timeout=120)
    if info.returncode != 0:
        return f"podman cannot run here: {(info.stderr or info.stdout).strip()[-300:]}"
    backend = run("podman", "info", "--format", "{{.Host.NetworkBackend}}", check=False, capture=True).stdout.strip()
    if backend == "cni" and not any(Path(d, "dnsname").exists() for d in ("/usr/lib/cni", "/opt/cni/bin")):
        return (
            "containers cannot resolve each other's names: CNI without the dnsname plugin "
            "(Debian: apt-get install golang-github-containernetworking-plugin-dnsname)"
        )
    if not image_exists(DEBIAN_IMAGE) and not (CACHE / "debian-bookworm-minbase.tar").exists():
        if shutil.which("debootstrap") is None or os.geteuid() != 0:
            return "no base image: building it needs root and debootstrap (Debian: apt-get install debootstrap)"
    return None


def image_exists(name: str) -> bool:
    return run("podman", "image", "exists", name, check=False, capture=True).returncode == 0


def ensure_base() -> None:
    tarball = CACHE / "debian-bookworm-minbase.tar"
    if not image_exists(DEBIAN_IMAGE):
        if not tarball.exists():
            rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
            try:
                run(
                    "debootstrap",
                    "--variant=minbase",
                    "--include=ca-certificates",
                    "bookworm",
                    str(rootfs),
                    "http://deb.debian.org/debian",
                    capture=True,
                )
                run("tar", "-C", str(rootfs), "-cf", str(tarball.with_suffix(".part")), ".")
                tarball.with_suffix(".part").rename(tarball)
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
        run("podman", "import", str(tarball), DEBIAN_IMAGE, capture=True)
    probe = run("podman", "run", "--rm", "--network=none", DEBIAN_IMAGE, "true", check=False, capture=True)
    if probe.returncode != 0:
        raise CheckFailed(f"podman cannot run a container: {probe.stderr.strip()[-500:]}")
    build("docker/debian-python.Dockerfile", PYTHON_IMAGE, context=DOCKER, mounts=False)


def wheel_folder() -> Path | None:
    """A local folder holding the torch wheel of constraints.txt (pip's find-links or a file:// index here)."""
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if line.startswith("torch")
    )
    candidates = [os.environ.get("DEPLOY_CHECK_WHEELS", "")]
    for key in ("global.find-links", "global.extra-index-url"):
        got = run(sys.executable, "-m", "pip", "config", "get", key, check=False, capture=True).stdout
        candidates += got.split()
    candidates += os.environ.get("PIP_FIND_LINKS", "").split()
    for candidate in candidates:
        path = Path(candidate.removeprefix("file://"))
        for folder in (path, path.parent / "files"):
            if folder.is_dir() and list(folder.glob(f"torch-{pins.get('torch', '')}-*.whl")):
                return folder
    return None


def build(dockerfile: str, image: str, *, context: Path = ROOT, mounts: bool = True, args: dict | None = None) -> None:
    command = ["podman", "build", "--layers", "--format", "docker", "-f", str(ROOT / dockerfile), "-t", image]
    for key, value in (args or {}).items():
        command += ["--build-arg", f"{key}={value}"]
    if mounts:
        ca_dir = Path(os.environ.get("DEPLOY_CHECK_CA_DIR", "/etc/ssl/certs"))
        if (ca_dir / "ca-certificates.crt").exists():
            command += [
                "-v",
                f"{ca_dir}:/run/build-ca:ro",
                "--build-arg",
                "EXTRA_CA_BUNDLE=/run/build-ca/ca-certificates.crt",
            ]
        wheels = wheel_folder()
        if wheels is not None:
            command += ["-v", f"{wheels}:/run/wheels:ro", "--build-arg", "WHEELS_DIR=/run/wheels"]
    log = CACHE / f"build-{image.split('/')[-1].replace(':', '_')}.log"
    with log.open("w") as handle:
        result = subprocess.run([*command, str(context)], stdout=handle, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if result.returncode != 0:
        last = "".join(log.read_text().splitlines(True)[-30:])
        raise CheckFailed(f"building {image} failed; the last lines of {log}:\n{last}")
    print(f"   built {image}")


def ensure_compose_tool() -> str:
    venv = CACHE / "tools"
    tool = venv / "bin" / "podman-compose"
    if not tool.exists():
        run(sys.executable, "-m", "venv", str(venv))
        run(str(venv / "bin" / "pip"), "install", "--quiet", PODMAN_COMPOSE, capture=True)
    return str(tool)


# --- The stack -----------------------------------------------------------------------------------------------


class Stack:
    def __init__(self, tool: str, workdir: Path) -> None:
        self.project = f"dscheck{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        self.owner_password = secrets.token_urlsafe(18)
        example = (DOCKER / "compose.env.example").read_text()
        values = {
            "SECRET_KEY": secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": HOST,
            "CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
            "OWNER_DB_PASSWORD": self.owner_password,
            "APP_DB_PASSWORD": secrets.token_urlsafe(18),
            "MASTER_KEYS": "k1:" + __import__("base64").b64encode(secrets.token_bytes(32)).decode(),
            "S3_SECRET_KEY": secrets.token_urlsafe(18),
            "WEB_PORT": str(self.port),
            "WEB_BIND": "127.0.0.1",
        }
        lines = []
        for line in example.splitlines():
            key = line.split("=", 1)[0]
            lines.append(f"{key}={values[key]}" if key in values and not line.startswith("#") else line)
        lines.append("CHECK_ANALYSIS_PAUSE_SECONDS=6")
        self.env_file = workdir / "check.env"
        self.env_file.write_text("\n".join(lines) + "\n")
        self.compose = [
            tool, "-p", self.project, "--env-file", str(self.env_file),
            "-f", str(DOCKER / "compose.yaml"), "-f", str(DOCKER / "check" / "compose.check.yaml"),
        ]  # fmt: skip

    def up(self, *args: str) -> None:
        run(*self.compose, "up", "-d", *args, capture=True, timeout=900)

    def containers(self, service: str) -> list[str]:
        got = output(
            "podman", "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}",
        )  # fmt: skip
        return sorted(got.split())

    def one(self, service: str) -> str:
        names = self.containers(service)
        if len(names) != 1:
            raise CheckFailed(f"expected one container of {service}, found {names}")
        return names[0]

    def wait_healthy(self, services: list[str], timeout: float = 300) -> None:
        """Run each container's own health check until it passes (Podman starts no health-check timers
        without systemd, so the check runs them itself)."""
        deadline = time.monotonic() + timeout
        pending = [name for service in services for name in self.containers(service)]
        if not pending:
            raise CheckFailed(f"no containers for {services}")
        while pending:
            pending = [
                n for n in pending if run("podman", "healthcheck", "run", n, check=False, capture=True).returncode
            ]
            if pending and time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n" + self.logs(n)[-1500:] for n in pending)
                raise CheckFailed(f"not healthy after {timeout:.0f} s: {pending}\n{logs}")
            if pending:
                time.sleep(2)
        print(f"   healthy: {', '.join(services)}")

    def wait_exit(self, service: str, timeout: float = 600) -> None:
        name = self.one(service)
        code = output("podman", "wait", name, timeout=timeout)
        if code != "0":
            raise CheckFailed(f"{service} exited {code}:\n{self.logs(name)[-3000:]}")

    def logs(self, name: str) -> str:
        got = run("podman", "logs", name, check=False, capture=True)
        return got.stdout + got.stderr

    def down(self) -> None:
        run(*self.compose, "down", "-v", "-t", "5", check=False, capture=True, timeout=600)
        # podman-compose's down misses containers added by --scale: remove whatever still carries the label
        label = f"label=io.podman.compose.project={self.project}"
        left = output("podman", "ps", "-a", "-q", "--filter", label).split()
        if left:
            run("podman", "rm", "-f", "-t", "5", *left, check=False, capture=True)
        for volume in output("podman", "volume", "ls", "-q", "--filter", label).split():
            run("podman", "volume", "rm", "-f", volume, check=False, capture=True)
        run("podman", "network", "rm", "-f", f"{self.project}_default", check=False, capture=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- HTTP over the published port ----------------------------------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, *, token: str | None = None, json_body: Any = None, form: dict | None = None,
        files: dict | None = None, expect: tuple[int, ...] = (200, 201),
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        headers = {"Host": HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "127.0.0.1"}
        body: bytes | None = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif files is not None:
            boundary = uuid.uuid4().hex
            parts = io.BytesIO()
            for key, value in (form or {}).items():
                parts.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
            for key, (filename, content, ctype) in files.items():
                parts.write(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'
                    f"Content-Type: {ctype}\r\n\r\n".encode()
                )
                parts.write(content + b"\r\n")
            parts.write(f"--{boundary}--\r\n".encode())
            body, headers["Content-Type"] = parts.getvalue(), f"multipart/form-data; boundary={boundary}"
        elif form is not None:
            from urllib.parse import urlencode

            body, headers["Content-Type"] = urlencode(form).encode(), "application/x-www-form-urlencoded"
            headers["Referer"] = f"https://{HOST}{path}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        if response.status not in expect:
            raise CheckFailed(f"{method} {path} answered {response.status}: {data[:600]!r}")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return json.loads(self.request(method, path, **kwargs)[2])


# --- The journeys --------------------------------------------------------------------------------------------

SETUP = """
import json, secrets, time, pyotp
from django.db import transaction
from clinics import context, mfa, services
from clinics.models import Role, User
from clinics.permissions import API_KEY_DEFAULT_SCOPES
from clinics.tenancy import clinic_scope
context.actor_var.set(context.Actor(system="deploy_check"))
password = "Check-" + secrets.token_urlsafe(18)
with transaction.atomic():
    clinic = services.clinic_create(name="Deploy check clinic " + secrets.token_hex(3))
    with clinic_scope(clinic.id):
        email = f"dentist-{clinic.slug}@deploy-check.test"
        services.member_add(email=email, role=Role.DENTIST, password=password, full_name="Deploy Check Dentist")
        user = User.objects.get(email=email)
        totp = mfa.enrol_begin(user)
        enrolled_step = int(time.time() // 30)
        assert mfa.enrol_confirm(user, pyotp.TOTP(totp).at(enrolled_step * 30))
        _, api_key = services.api_key_create(name="deploy check", scopes=API_KEY_DEFAULT_SCOPES)
print("SETUP" + json.dumps({"clinic": str(clinic.id), "email": email, "password": password, "totp": totp,
                            "api_key": api_key, "enrolled_step": enrolled_step}))
"""


def sample_images() -> tuple[list[bytes], list[bytes]]:
    """Real intraoral photos and X-rays from the shared data where present (the image gate refuses drawn
    pictures, so the model would never run on them), else drawn ones."""
    from PIL import Image

    data = ROOT.parent / "shared" / "datasets"
    photos = sorted((data / "other-source-photos" / "images").glob("*.jpg"))[:8]
    xrays = (
        sorted((data / "dental-xrays" / "test").rglob("*.jpg"))[:4]
        or sorted((data / "dental-xrays").rglob("*.jpg"))[:4]
    )

    def encode(path: Path | None, seed: int, size: tuple[int, int]) -> bytes:
        out = io.BytesIO()
        if path is not None:
            with Image.open(path) as img:
                img.convert("RGB").resize(size).save(out, "JPEG", quality=85 + seed % 10)
        else:
            Image.new("RGB", size, (150 + seed, 80, 80)).save(out, "JPEG")
        return out.getvalue()

    photo_bytes = [encode(photos[i % len(photos)] if photos else None, i, (640, 480)) for i in range(8)]
    xray_bytes = [encode(xrays[i % len(xrays)] if xrays else None, i, (1024, 512)) for i in range(4)]
    return photo_bytes, xray_bytes


def setup_clinic(stack: Stack) -> dict[str, str]:
    got = output("podman", "exec", stack.one("web"), "python", "manage.py", "shell", "-c", SETUP, timeout=300)
    line = next(line for line in got.splitlines() if line.startswith("SETUP"))
    creds = json.loads(line[len("SETUP") :])
    # Enrolment used its step's code: the device refuses that step again (a replay), so the first log-in of the
    # check must wait for the next one (a fast stack reached it within the same 30 s and got 401 mfa_required).
    USED_STEPS.add(int(creds.pop("enrolled_step")))
    return creds


def create_patient(client: Client, key: str, label: str) -> str:
    patient = client.json(
        "POST", "/api/v1/patients/", token=key,
        json_body={"external_id": f"{label}-{uuid.uuid4().hex[:6]}", "given_name": "Check", "family_name": label,
                   "date_of_birth": "1980-05-17"},
    )  # fmt: skip
    return patient["id"]


def upload(client: Client, key: str, patient: str, content: bytes, modality: str) -> dict[str, Any]:
    return client.json(
        "POST", f"/api/v1/patients/{patient}/images/", token=key, form={"modality": modality},
        files={"file": (f"{modality}.jpg", content, "image/jpeg")},
    )  # fmt: skip


def wait_analyses(client: Client, key: str, ids: list[str], timeout: float = 600) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = {a: client.json("GET", f"/api/v1/analyses/{a}/", token=key) for a in ids}
        if all(g["status"] in ("done", "failed") for g in got.values()):
            failed = {a: g.get("failure_reason") or g for a, g in got.items() if g["status"] == "failed"}
            if failed:
                raise CheckFailed(f"analyses failed: {failed}")
            return got
        if time.monotonic() > deadline:
            raise CheckFailed(f"analyses not finished after {timeout:.0f} s: {[g['status'] for g in got.values()]}")
        time.sleep(1)


USED_STEPS: set[int] = set()


def fresh_code(secret: str) -> str:
    """A TOTP code of a 30-second step not used before (a used code is refused as a replay), with 5 s to spare."""
    import pyotp

    while int(time.time() // 30) in USED_STEPS or time.time() % 30 > 25:
        time.sleep(1)
    USED_STEPS.add(int(time.time() // 30))
    return pyotp.TOTP(secret).now()


def smoke_journey(stack: Stack, client: Client, creds: dict[str, str]) -> None:
    key = creds["api_key"]
    photos, xrays = sample_images()
    patient = create_patient(client, key, "Smoke")
    uploads = [upload(client, key, patient, photos[0], "photo"), upload(client, key, patient, photos[1], "photo")]
    uploads.append(upload(client, key, patient, xrays[0], "xray"))
    started = time.monotonic()
    analyses = wait_analyses(client, key, [u["analysis"]["id"] for u in uploads])
    analysed_in = time.monotonic() - started
    token = client.json(
        "POST", "/api/v1/auth/token/",
        json_body={"email": creds["email"], "password": creds["password"], "otp": fresh_code(creds["totp"])},
    )["token"]  # fmt: skip
    findings = [f for a in analyses.values() for f in a["findings"]]
    for finding in findings:
        if finding["status"] == "pending":
            client.json(
                "POST", f"/api/v1/findings/{finding['id']}/review/", token=token, json_body={"decision": "confirm"}
            )
    visit = client.json("GET", f"/api/v1/images/{uploads[0]['id']}/", token=token)["visit"]
    visit_id = visit["id"] if isinstance(visit, dict) else visit
    report = client.json("POST", f"/api/v1/visits/{visit_id}/report/", token=token)
    # The PDF: the dentist's browser session (login, second factor), as the report page links it.
    login = Client(stack.port)
    login.request("GET", "/login/")
    form = {"email": creds["email"], "password": creds["password"], "csrfmiddlewaretoken": login.cookies["csrftoken"]}
    login.request("POST", "/login/", form=form, expect=(302,))
    form = {"code": fresh_code(creds["totp"]), "csrfmiddlewaretoken": login.cookies["csrftoken"]}
    login.request("POST", "/login/verify/", form=form, expect=(302,))
    _, headers, pdf = login.request("GET", f"/visits/{visit_id}/report.pdf")
    if not pdf.startswith(b"%PDF") or headers.get("content-type") != "application/pdf":
        raise CheckFailed(f"the report did not download as a PDF: {headers.get('content-type')} {pdf[:40]!r}")
    statuses = {a["status"] for a in analyses.values()}
    derived = derived_by_worker(stack, [u["id"] for u in uploads])
    if derived != len(uploads):
        raise CheckFailed(f"previews and thumbnails made by worker-default for {derived} of {len(uploads)} uploads")
    result = (
        f"SMOKE: patient, 2 photos + 1 X-ray uploaded; {len(analyses)} analyses {sorted(statuses)} in "
        f"{analysed_in:.1f} s by the worker container; previews and thumbnails made after the answer by "
        f"worker-default for {derived} of {len(uploads)}; {len(findings)} findings reviewed by the dentist token; "
        f"report v{report['version']} signed by {report['signed_by']}; PDF {len(pdf)} bytes downloaded"
    )
    RESULTS.append(result)
    print("   " + result)


def completions(stack: Stack, service: str, since: str) -> dict[str, list[str]]:
    """analysis id -> the worker containers whose log says they finished it: 'analysis <id>: done:n/m' for the
    analysis a task claimed, 'analysis <id>: done: batched with <id>' for each other analysis of its batch."""
    found: dict[str, list[str]] = {}
    for name in stack.containers(service):
        got = run("podman", "logs", "--since", since, name, check=False, capture=True)
        for line in (got.stdout + got.stderr).splitlines():
            if "analysis " in line and ": done:" in line:
                analysis_id = line.split("analysis ", 1)[1].split(":", 1)[0].strip()
                found.setdefault(analysis_id, []).append(name)
    return found


def derived_by_worker(stack: Stack, image_ids: list[str], timeout: float = 60) -> int:
    """How many of these images have their preview and thumbnail, made by the ``patients.derive_image`` task (its
    audit event's actor is that task, not a reader: nothing in the journey reads a preview before this)."""
    code = (
        "from patients.models import Image; from clinics.models import AuditEvent; "
        f"ids = {image_ids!r}; "
        "made = {str(i.pk) for i in Image.unscoped.filter(pk__in=ids) if i.preview_key and i.thumbnail_key}; "
        "by_task = {e.object_id for e in AuditEvent.unscoped.filter(object_id__in=ids, action='image.derive', "
        "actor_label='system:patients.derive_image')}; print('DERIVED', len(made & by_task))"
    )
    env = f"DATABASE_URL=postgres://dentalscan_owner:{stack.owner_password}@db:5432/dentalscan"
    deadline = time.monotonic() + timeout
    while True:
        got = output("podman", "exec", "-e", env, stack.one("web"), "python", "manage.py", "shell", "-c", code)
        count = int(got.rsplit("DERIVED", 1)[1].split()[0])
        if count == len(image_ids) or time.monotonic() > deadline:
            return count
        time.sleep(2)


def db_counts(stack: Stack, ids: list[str]) -> dict[str, tuple[str, int, int]]:
    """For each analysis: status, attempts, and how many audit events recorded its completion."""
    code = (
        "import json; from analysis.models import Analysis; from clinics.models import AuditEvent; "
        f"ids = {ids!r}; "
        "events = getattr(AuditEvent, 'unscoped', AuditEvent.objects); "
        "rows = {str(a.pk): (a.status, a.attempts, events.filter(object_id=str(a.pk), "
        "action__in=['analysis.completed', 'analysis.not_assessable']).count()) "
        "for a in Analysis.unscoped.filter(pk__in=ids)}; print('ROWS' + json.dumps(rows))"
    )
    env = f"DATABASE_URL=postgres://dentalscan_owner:{stack.owner_password}@db:5432/dentalscan"
    got = output("podman", "exec", "-e", env, stack.one("web"), "python", "manage.py", "shell", "-c", code)
    return json.loads(next(line for line in got.splitlines() if line.startswith("ROWS"))[4:])


def kill_test(stack: Stack, client: Client, creds: dict[str, str]) -> None:
    key = creds["api_key"]
    photos, xrays = sample_images()
    since = output("date", "-u", "+%Y-%m-%dT%H:%M:%SZ")
    ids = []
    for n in range(4):  # four visits (one patient each): four batches, one at a time on the single worker
        patient = create_patient(client, key, f"Kill{n}")
        ids.append(upload(client, key, patient, photos[n + 2], "photo")["analysis"]["id"])
    worker = stack.one("worker-gpu")
    deadline = time.monotonic() + 180
    while not any(client.json("GET", f"/api/v1/analyses/{a}/", token=key)["status"] == "running" for a in ids):
        if time.monotonic() > deadline:
            raise CheckFailed("no analysis started running within 180 s")
        time.sleep(0.3)
    running = [a for a in ids if client.json("GET", f"/api/v1/analyses/{a}/", token=key)["status"] == "running"]
    run("podman", "kill", worker, capture=True)
    killed_at = time.monotonic()
    print(f"   killed {worker} while {len(running)} analysis running (model paused before writing results)")
    run("podman", "start", worker, capture=True)
    analyses = wait_analyses(client, key, ids, timeout=600)
    recovered = time.monotonic() - killed_at
    done = completions(stack, "worker-gpu", since)
    counts = db_counts(stack, ids)
    twice = {a: names for a, names in done.items() if a in ids and len(names) > 1}
    statuses = {a["status"] for a in analyses.values()}
    not_once = {a: c for a, c in counts.items() if c[2] != 1}
    if statuses != {"done"} or twice or not_once or len(counts) != len(ids):
        raise CheckFailed(f"after the kill: statuses {statuses}, finished more than once: {twice} {not_once}")
    result = (
        f"KILL: worker container killed mid-analysis ({len(running)} running) and restarted; all {len(ids)} analyses "
        f"done {recovered:.1f} s after the kill; each finished exactly once (one completion audit event each: "
        f"{sorted(c[2] for c in counts.values())}; worker log completion lines per analysis: "
        f"{sorted(len(done.get(a, [])) for a in ids)}); "
        f"attempts per analysis {sorted(c[1] for c in counts.values())}"
    )
    RESULTS.append(result)
    print("   " + result)


def scale_test(stack: Stack, client: Client, creds: dict[str, str]) -> None:
    key = creds["api_key"]
    run(*stack.compose, "up", "-d", "--no-deps", "--scale", "worker-gpu=2", "worker-gpu", capture=True, timeout=600)
    stack.wait_healthy(["worker-gpu"], timeout=300)
    workers = stack.containers("worker-gpu")
    if len(workers) != 2:
        raise CheckFailed(f"expected two worker containers, found {workers}")
    photos, _ = sample_images()
    since = output("date", "-u", "+%Y-%m-%dT%H:%M:%SZ")
    ids = []
    started = time.monotonic()
    for n in range(8):  # eight visits, uploaded one after another: both workers get some (a batch may take several)
        patient = create_patient(client, key, f"Scale{n}")
        ids.append(upload(client, key, patient, photos[n % len(photos)], "photo")["analysis"]["id"])
    wait_analyses(client, key, ids, timeout=600)
    took = time.monotonic() - started
    done = completions(stack, "worker-gpu", since)
    per_worker: dict[str, int] = {w: 0 for w in workers}
    for a in ids:
        for name in done.get(a, []):
            per_worker[name] += 1
    if sum(1 for v in per_worker.values() if v) < 2:
        raise CheckFailed(f"not both workers took jobs: {per_worker}")
    result = f"SCALE: 2 worker containers; 8 analyses done in {took:.1f} s; taken per worker: {per_worker}"
    RESULTS.append(result)
    print("   " + result)


CONNTRACK = Path("/proc/net/nf_conntrack")


def subnets_in(document: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every "subnet" value in ``podman network inspect`` output (CNI and netavark formats alike)."""
    found = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "subnet" and isinstance(value, str):
                found.append(ipaddress.ip_network(value, strict=False))
            else:
                found.extend(subnets_in(value))
    elif isinstance(document, list):
        for item in document:
            found.extend(subnets_in(item))
    return found


def tracked_flows(table: str) -> list[tuple[str, Any, Any, str]]:
    """(protocol, source, destination, destination port) of each connection in a conntrack table, in its original
    direction (the first src=, dst= and dport= of the line)."""
    flows = []
    for line in table.splitlines():
        words = line.split()
        first: dict[str, str] = {}
        for word in words:
            key, _, value = word.partition("=")
            if key in ("src", "dst", "dport") and key not in first:
                first[key] = value
        try:
            src, dst = ipaddress.ip_address(first["src"]), ipaddress.ip_address(first["dst"])
        except (KeyError, ValueError):
            continue
        flows.append((words[2] if len(words) > 2 else "?", src, dst, first.get("dport", "-")))
    return flows


def outside_flows(table: str, inside: list) -> tuple[int, set[str]]:
    """How many connections in the table come from the ``inside`` networks, and 'protocol address:port' of those
    that go to an address outside them (loopback aside)."""
    ours, outside = 0, set()
    for proto, src, dst, port in tracked_flows(table):
        if any(src in net for net in inside):
            ours += 1
            # multicast to the local link (IGMP membership reports to 224.0.0.22 when an interface comes up) never
            # leaves the link; anything else outside the stack's own network does
            local_multicast = dst in ipaddress.ip_network("224.0.0.0/24") or dst in ipaddress.ip_network("ff02::/16")
            if not dst.is_loopback and not local_multicast and not any(dst in net for net in inside):
                outside.add(f"{proto} {dst}:{port}")
    return ours, outside


class FlowWatch(threading.Thread):
    """Samples the connection tracking table while the stack runs; ``outside`` collects what left its network."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.stop, self.samples, self.seen = stack, threading.Event(), 0, 0
        self.outside: set[str] = set()
        self.inside: list = []

    def networks(self) -> list:
        names = output("podman", "network", "ls", "--format", "{{.Name}}").split()
        ours = [name for name in names if name.startswith(self.stack.project)]
        return subnets_in([json.loads(output("podman", "network", "inspect", name)) for name in ours])

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.inside:
                self.inside = self.networks()
            try:
                table = CONNTRACK.read_text()
            except OSError:
                return
            ours, outside = outside_flows(table, self.inside)
            self.samples, self.seen = self.samples + 1, max(self.seen, ours)
            self.outside |= outside
            self.stop.wait(0.2)

    def result(self) -> str:
        nets = ", ".join(str(n) for n in self.inside) or "?"
        if not CONNTRACK.exists():
            return "NETWORK: not checked (no /proc/net/nf_conntrack here)"
        return (
            f"NETWORK: connection tracking sampled {self.samples} times while the stack ran; up to {self.seen} "
            f"connections at once from its network ({nets}); to anywhere else: "
            f"{', '.join(sorted(self.outside)) if self.outside else 'none'}"
        )


def audit_check(stack: Stack) -> None:
    """The stack's beat and default worker seal every audit event within seconds of its commit: after the runs
    above, ``verify_audit_chain`` (as the database owner, in the web container) finds every chain intact and no
    event left unsealed for long; it is asked again while events are still being sealed."""
    env = f"DATABASE_URL=postgres://dentalscan_owner:{stack.owner_password}@db:5432/dentalscan"
    deadline = time.monotonic() + 60
    while True:
        got = run(
            "podman", "exec", "-e", env, stack.one("web"), "python", "manage.py", "verify_audit_chain",
            check=False, capture=True, timeout=300,
        )  # fmt: skip
        text = (got.stdout + got.stderr).strip()
        lines = [line for line in text.splitlines() if line.strip()]
        waiting = any(line.split()[0] != "0" for line in lines if "not sealed yet" in line)
        if got.returncode == 0 and (not waiting or time.monotonic() > deadline):
            break
        if got.returncode != 0:
            raise CheckFailed(f"verify_audit_chain exited {got.returncode}: {text[-1500:]}")
        time.sleep(3)
    RESULTS.append("AUDIT: " + "; ".join(line for line in lines if not line.startswith("Checked against")))
    print("   " + RESULTS[-1])


def image_sizes() -> list[str]:
    names = [DEBIAN_IMAGE, PYTHON_IMAGE, WEB_IMAGE, WORKER_IMAGE, *(image for _, image in STAND_INS.values())]
    lines = []
    for name in names:
        size = output("podman", "image", "inspect", name, "--format", "{{.Size}}")
        lines.append(f"   {name:<52} {int(size) / 1e6:9.0f} MB")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--skip-if-unavailable", action="store_true", help="exit 0 with the reason when Podman cannot run"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running (for inspection)")
    options = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ.setdefault("CONTAINERS_CONF", str(conf))
    reason = podman_unavailable()
    if reason:
        print(f"SKIPPED: {reason}" if options.skip_if_unavailable else f"FAILED: {reason}")
        return 0 if options.skip_if_unavailable else 1
    total = time.monotonic()
    stack: Stack | None = None
    workdir = Path(tempfile.mkdtemp(prefix="deploy-check-"))
    try:
        with step("base images (Debian root via debootstrap, cached; Python on it)"):
            ensure_base()
        with step("stand-in images: PostgreSQL, Redis, S3 (moto)"):
            for dockerfile, image in STAND_INS.values():
                build(dockerfile, image, args={"DEBIAN_IMAGE": PYTHON_IMAGE})
        with step("web image"):
            build("docker/web.Dockerfile", WEB_IMAGE, args={"BASE_IMAGE": PYTHON_IMAGE})
        with step("worker image (torch from the local wheel folder)"):
            build("docker/worker.Dockerfile", WORKER_IMAGE, args={"BASE_IMAGE": PYTHON_IMAGE})
        with step("podman-compose"):
            tool = ensure_compose_tool()
        stack = Stack(tool, workdir)
        with step("stack: db, redis, s3 healthy"):
            stack.up("db", "redis", "s3")
            watch = FlowWatch(stack)
            watch.start()
            stack.wait_healthy(["db", "redis", "s3"])
        with step("stack: buckets and migrate (migrations, application role, models registered)"):
            stack.up("--no-deps", "buckets", "migrate")
            stack.wait_exit("buckets")
            stack.wait_exit("migrate")
            tail = [line for line in stack.logs(stack.one("migrate")).splitlines() if line.strip()][-4:]
            print("   migrate: " + "\n   migrate: ".join(tail))
        with step("stack: web, workers, beat healthy"):
            stack.up("--no-deps", "web", "worker-gpu", "worker-default", "beat")
            stack.wait_healthy(["web", "worker-gpu", "worker-default"], timeout=420)
        client = Client(stack.port)
        with step("clinic and dentist (operator shell in the web container)"):
            creds = setup_clinic(stack)
        with step("smoke journey"):
            smoke_journey(stack, client, creds)
        with step("worker killed mid-analysis"):
            kill_test(stack, client, creds)
        with step("two workers"):
            scale_test(stack, client, creds)
        with step("audit trail sealed and verified"):
            audit_check(stack)
        watch.stop.set()
        watch.join()
        RESULTS.append(watch.result())
        print("   " + RESULTS[-1])
        if watch.outside:
            raise CheckFailed(f"the stack contacted addresses outside its network: {sorted(watch.outside)}")
        if CONNTRACK.exists() and (not watch.inside or not watch.seen):
            # a watch that never found the stack's network, or none of its connections, has checked nothing
            raise CheckFailed(f"the network watch saw none of the stack's connections (networks: {watch.inside})")
    except CheckFailed as exc:
        print(f"\nFAILED: {exc}", flush=True)
        if stack is not None and not options.keep:
            for service in ("migrate", "web", "worker-gpu"):
                for name in stack.containers(service):
                    print(f"--- logs of {name} (last lines)\n" + stack.logs(name)[-2500:])
        return_code = 1
    else:
        return_code = 0
    finally:
        if stack is not None and not options.keep:
            with step("tear down (containers, network, volumes)"):
                stack.down()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n== image sizes")
    print("\n".join(image_sizes()) if return_code == 0 else "   (not all built)")
    print("\n== time of each step")
    for name, seconds in TIMINGS:
        print(f"   {seconds:7.1f} s  {name}")
    print(f"   {time.monotonic() - total:7.1f} s  total")
    print("\n== results")
    for line in RESULTS:
        print("   " + line)
    print("PASSED" if return_code == 0 else "FAILED")
    return return_code


if __name__ == "__main__":
    sys.exit(main())
