"""Throwaway services and processes for fault tests and benchmarks.

Nothing here touches the machine's shared PostgreSQL or Redis: ``PrivatePostgres`` and ``PrivateRedis``
start their own servers on free ports, in a temporary folder, and can be stopped and restarted at will.
``Stack`` ties one database, one broker and one image folder together and starts the real processes
(``manage.py`` commands, ``runserver``, a Celery worker) against them, each in its own subprocess, so the
test process itself never connects Django to them.

Used by ``tests/faults`` (fault injection) and ``bench/bench_end_to_end.py`` / ``bench/bench_api_load.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
APP_ROLE = "dentalscan_fault_app"


# --- discovery ---------------------------------------------------------------------------------
def pg_bindir() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for found in shutil.which("pg_config"), shutil.which("initdb"):
        if found:
            candidates.append(Path(found).resolve().parent)
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists() and (path / "postgres").exists():
            return path
    return None


def missing_services() -> str | None:
    """Why private services cannot be started here, or None when they can."""
    if pg_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found"
    if shutil.which("redis-server") is None:
        return "redis-server not found"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root and runuser is missing (initdb refuses root)"
    try:
        import psycopg  # noqa: F401
        import redis  # noqa: F401
        import requests  # noqa: F401
    except ImportError as exc:
        return f"python package missing: {exc.name}"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_exc!r})")


# --- PostgreSQL --------------------------------------------------------------------------------
class PrivatePostgres:
    """A private PostgreSQL cluster (trust authentication, superuser ``postgres``) on a free port."""

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.base = Path(base or tempfile.mkdtemp(prefix="dentalscan-pg-"))
        self.data = self.base / "data"
        self.port = port or free_port()
        self.log = self.base / "postgres.log"
        self._as_owner = os.geteuid() == 0
        if self._as_owner:
            shutil.chown(self.base, "postgres", "postgres")
            self.base.chmod(0o700)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self._as_owner:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, cwd="/")  # noqa: S603

    def init(self) -> PrivatePostgres:
        self._run(self.bindir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> PrivatePostgres:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, mode: str = "fast", down_seconds: float = 0.0) -> None:
        self.stop(mode)
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def running(self) -> bool:
        return self._run(self.bindir / "pg_ctl", "-D", self.data, "status", check=False).returncode == 0

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres", params: Any = None) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


# --- Redis -------------------------------------------------------------------------------------
class PrivateRedis:
    """A private, non-persistent Redis (``--save "" --appendonly no``): a restart loses every message."""

    def __init__(self, port: int | None = None, base: Path | None = None) -> None:
        self.port = port or free_port()
        self.base = Path(base or tempfile.mkdtemp(prefix="dentalscan-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(  # noqa: S603
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, timeout=20, what=f"redis on port {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# --- the application against them ------------------------------------------------------------
def master_keys() -> str:
    return f"stack1:{base64.b64encode(secrets.token_bytes(32)).decode()}"


class Stack:
    """One database, one broker and one image folder, and the real processes that use them."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        workdir: Path,
        settings_module: str = "config.settings.test",
        app_role: str = "",
        keys: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.images = self.workdir / "images"
        self.images.mkdir(exist_ok=True)
        (self.workdir / "var").mkdir(exist_ok=True)
        self.settings_module = settings_module
        self.app_role = app_role
        self.keys = keys or master_keys()
        self.extra_env = dict(extra_env or {})
        self.procs: list[subprocess.Popen[bytes]] = []
        self.web_port: int | None = None

    def env(self, *, as_app: bool = True, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "DENTALSCAN_IMAGES_DIR": str(self.images),
            "DENTALSCAN_VAR_DIR": str(self.workdir / "var"),
            "MASTER_KEYS": self.keys,
            "MASTER_KEY_ID": "stack1",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
            **extra,
        }
        env.pop("DATABASE_APP_ROLE", None)
        if as_app and self.app_role:
            env["DATABASE_APP_ROLE"] = self.app_role
        return env

    # one-shot commands
    def manage(self, *args: str, as_app: bool = False, check: bool = True, timeout: float = 300) -> str:
        result = subprocess.run(  # noqa: S603
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env(as_app=as_app),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result.stdout

    def python(self, code: str, *, as_app: bool = False, timeout: float = 300) -> str:
        """Run ``code`` after ``django.setup()`` in a subprocess; returns its stdout."""
        prelude = "import django; django.setup()\n"
        result = subprocess.run(  # noqa: S603
            [PYTHON, "-c", prelude + code],
            cwd=ROOT,
            env=self.env(as_app=as_app),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result.stdout

    def prepare(self, *, model_dir: Path | None = None, shipped: bool = False) -> dict[str, Any]:
        """Migrate, create the application role, seed the demo clinics, register a photo model.
        Returns ``seed_demo --json``'s object."""
        self.manage("migrate", "--noinput")
        if self.app_role:
            self.manage("setup_db_roles", "--app-role", self.app_role)
        if model_dir is not None:
            self.manage("register_model", str(model_dir))
        elif shipped:
            self.manage("register_model", "--shipped")
        return json.loads(self.manage("seed_demo", "--json"))

    # long-running processes
    def _spawn(self, args: list[str], log_name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / log_name).open("ab")
        proc = subprocess.Popen(  # noqa: S603
            args, cwd=ROOT, env=self.env(**extra_env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc.log_path = self.workdir / log_name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def start_web(self, port: int | None = None, **extra_env: str) -> str:
        import requests

        self.web_port = port or free_port()
        proc = self._spawn(
            [PYTHON, "manage.py", "runserver", f"127.0.0.1:{self.web_port}", "--noreload", "--skip-checks"],
            "web.log",
            **extra_env,
        )

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"web server exited:\n{self.log('web.log')[-3000:]}")
            return requests.get(f"{self.base_url}/api/v1/schema/", timeout=5).status_code < 500

        wait_until(up, timeout=90, what="the web server", interval=0.3)
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start_worker(  # noqa: ANN201
        self, queues: str = "gpu", name: str = "worker", concurrency: int = 1, beat: bool = False, **extra_env: str
    ):
        """A real Celery worker; ``beat=True`` embeds the beat scheduler (periodic tasks)."""
        args = [PYTHON, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-n", f"{name}@%h"]
        if beat:
            args += ["-B", "-s", str(self.workdir / f"{name}-beat-schedule")]
        if concurrency == 1:
            args += ["--pool", "solo"]
        else:
            args += ["--pool", "prefork", "--concurrency", str(concurrency)]
        args += ["--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info"]
        return self._spawn(args, f"{name}.log", **extra_env)

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL after 20 s."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)

    # state checks
    def state(self) -> dict[str, Any]:
        """Everything the fault tests assert on, read by the owner role (RLS does not apply to it)."""
        return json.loads(self.python(STATE_CODE))

    def verify_audit_chain(self) -> subprocess.CompletedProcess[str]:
        """Seal what the scenario recorded (as the periodic sealer would), then verify."""
        subprocess.run(  # noqa: S603
            [PYTHON, "manage.py", "seal_audit"], cwd=ROOT, env=self.env(as_app=False), check=True, timeout=120
        )
        return subprocess.run(  # noqa: S603
            [PYTHON, "manage.py", "verify_audit_chain"],
            cwd=ROOT,
            env=self.env(as_app=False),
            capture_output=True,
            text=True,
            timeout=300,
        )


class EmbeddedStack(Stack):
    """The embedded default that ``make run`` starts: SQLite and local storage in ``workdir``, analyses in the
    web process (no broker), ``config.settings.local``, no DEBUG unless asked for."""

    def __init__(self, *, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        super().__init__(
            database_url="", redis_url="", workdir=workdir, settings_module="config.settings.local", extra_env=extra_env
        )

    def env(self, *, as_app: bool = True, **extra: str) -> dict[str, str]:
        env = super().env(as_app=False, **extra)
        for name in ("DATABASE_URL", "REDIS_URL", "DEBUG", "STORAGE_S3_BUCKET", "AUDIT_CHECKPOINT_S3_BUCKET"):
            if not extra.get(name) and not self.extra_env.get(name):
                env.pop(name, None)
        return env


class Api:
    """A small client of the public REST API (``requests``), authenticated by a clinic API key."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60) -> None:
        import requests

        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def create_patient(self, external_id: str, given: str = "Fault", family: str = "Tester") -> str:
        body = {"external_id": external_id, "given_name": given, "family_name": family, "date_of_birth": "1980-01-02"}
        response = self.session.post(f"{self.base}/api/v1/patients/", json=body, timeout=self.timeout)
        if response.status_code != 201:
            raise AssertionError(f"patient create: {response.status_code} {response.text[:300]}")
        return response.json()["id"]

    def upload(self, patient_id: str, data: bytes, name: str = "photo.png", modality: str = "photo"):  # noqa: ANN201
        """(status code, body or None); never raises for a server-side failure."""
        import requests

        try:
            response = self.session.post(
                f"{self.base}/api/v1/patients/{patient_id}/images/",
                files={"file": (name, data, "image/png")},
                data={"modality": modality},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            return 0, {"error": repr(exc)}
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body

    def get(self, path: str, **params: Any):  # noqa: ANN201
        return self.session.get(f"{self.base}{path}", params=params or None, timeout=self.timeout)

    def analysis_status(self, analysis_id: str) -> str | None:
        try:
            response = self.get(f"/api/v1/analyses/{analysis_id}/")
        except Exception:  # noqa: BLE001 - the server may be in the middle of a fault
            return None
        return response.json().get("status") if response.status_code == 200 else None

    def wait_done(self, analysis_ids: list[str], *, timeout: float, procs: list[Any] = ()) -> dict[str, str]:
        """Poll until every analysis is done or failed; returns the final statuses."""
        pending = set(analysis_ids)
        final: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for analysis_id in list(pending):
                status = self.analysis_status(analysis_id)
                if status in ("done", "failed"):
                    final[analysis_id] = status
                    pending.discard(analysis_id)
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"process {proc.args[:6]} exited with {proc.returncode}")
            if pending:
                time.sleep(0.5)
        for analysis_id in pending:
            final[analysis_id] = self.analysis_status(analysis_id) or "unknown"
        return final


def png(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A distinct small PNG photo (content differs per seed)."""
    import io

    import numpy as np
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(arr, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


STATE_CODE = r"""
import json, os
from pathlib import Path
from django.conf import settings
from analysis.models import Analysis, Finding
from patients.models import Image
from clinics.rls import rls_bypass

with rls_bypass():
    images = list(Image.unscoped.values("id", "original_key", "preview_key", "thumbnail_key", "model_input_key"))
    analyses = list(Analysis.unscoped.values("id", "image_id", "status", "attempts", "failure_reason"))
    findings = list(Finding.unscoped.values("id", "analysis_id", "image_id"))
root = Path(settings.STORAGES["images"]["OPTIONS"]["location"])
blobs = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
print(json.dumps({"images": images, "analyses": analyses, "findings": findings, "blobs": blobs}, default=str))
"""


def invariant_violations(state: dict[str, Any], accepted_image_ids: set[str] | None = None) -> list[str]:
    """What is wrong with a recovered installation (empty when nothing was lost or duplicated).

    - every accepted upload (201) has an image row, and every image row has exactly one analysis, done;
    - every image row's original exists, and every other blob it names (the model-input copy; the preview and
      thumbnail once a worker or a first read made them after the upload was answered); no blob exists that no
      image row names (no orphans);
    - no analysis or finding points at a missing image or analysis; findings only on done analyses."""
    problems: list[str] = []
    images = {str(i["id"]): i for i in state["images"]}
    blobs = set(state["blobs"])
    named: set[str] = set()
    for image in images.values():
        for key in ("original_key", "preview_key", "thumbnail_key", "model_input_key"):
            if not image.get(key):
                if key == "original_key":  # the others are made later (or, the copy, only for some models)
                    problems.append(f"image {image['id']} has no {key}")
            elif image[key] not in blobs:
                problems.append(f"image {image['id']}: blob {image[key]} missing")
            else:
                named.add(image[key])
    orphans = blobs - named
    if orphans:
        problems.append(f"{len(orphans)} orphan blob(s) in storage: {sorted(orphans)[:5]}")
    if accepted_image_ids is not None:
        lost = accepted_image_ids - set(images)
        if lost:
            problems.append(f"{len(lost)} accepted upload(s) without an image row: {sorted(lost)[:5]}")
        extra = set(images) - accepted_image_ids
        if extra:
            problems.append(f"{len(extra)} image row(s) for uploads that were not accepted: {sorted(extra)[:5]}")
    by_image: dict[str, list[dict]] = {}
    for analysis in state["analyses"]:
        if str(analysis["image_id"]) not in images:
            problems.append(f"analysis {analysis['id']} without its image")
        by_image.setdefault(str(analysis["image_id"]), []).append(analysis)
    for image_id in images:
        found = by_image.get(image_id, [])
        if len(found) != 1:
            problems.append(f"image {image_id} has {len(found)} analyses")
        elif found[0]["status"] != "done":
            problems.append(
                f"image {image_id}: analysis {found[0]['id']} is {found[0]['status']} {found[0]['failure_reason']!r}"
            )
    analyses = {str(a["id"]): a for a in state["analyses"]}
    for finding in state["findings"]:
        owner = analyses.get(str(finding["analysis_id"]))
        if owner is None:
            problems.append(f"finding {finding['id']} without its analysis")
        elif owner["status"] != "done":
            problems.append(f"finding {finding['id']} on a {owner['status']} analysis")
        if str(finding["image_id"]) not in images:
            problems.append(f"finding {finding['id']} without its image")
    return problems


@contextlib.contextmanager
def private_services(workdir: Path | None = None) -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    pg = PrivatePostgres().init().start()
    rd = PrivateRedis(base=workdir).start() if workdir else PrivateRedis().start()
    try:
        yield pg, rd
    finally:
        rd.destroy()
        pg.destroy()
