"""The deployment files, validated by the means available here (no Docker engine on this machine):
the compose file by docker-compose's own schema validation and interpolation, the Dockerfiles and
the compose services by the rules an IT admin expects (pinned images, non-root, health checks,
secrets only from the environment, a GPU reservation for the inference worker)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / "compose.env.example"
needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")


def _compose(*args: str, env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    command = ["docker-compose", "-f", str(COMPOSE)]
    if env_file is not None:
        command += ["--env-file", str(env_file)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, cwd=DOCKER, check=False)


@needs_compose
def test_compose_file_is_valid_and_fully_configured_by_environment(tmp_path: Path) -> None:
    ok = _compose("config", "-q")
    assert ok.returncode == 0, ok.stderr
    rendered = yaml.safe_load(_compose("config").stdout)
    services = rendered["services"]
    assert {"db", "redis", "s3", "web", "worker-gpu", "worker-default", "migrate"} <= set(services)
    gpu = services["worker-gpu"]
    assert gpu["environment"]["WORKER_QUEUES"] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["worker-default"]["environment"]["WORKER_QUEUES"] == "default"
    # The web app and workers share one configuration: database, broker, bucket and keys.
    for name in ("web", "worker-gpu", "worker-default"):
        env = services[name]["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert env["DATABASE_URL"].startswith("postgres://dentalscan_app:")  # the role without BYPASSRLS
        assert env["REDIS_URL"] and env["STORAGE_S3_BUCKET"] and env["MASTER_KEYS"]
    # MinIO starts empty: a one-shot service makes the image bucket and the checkpoint bucket (object lock, a
    # default retention) before anything that writes to them starts.
    buckets = services["buckets"]
    script = " ".join(buckets["command"]).replace("$$", "$")  # what the container's shell gets
    assert buckets["environment"]["IMAGES_BUCKET"] == services["web"]["environment"]["STORAGE_S3_BUCKET"]
    checkpoint_bucket = services["web"]["environment"]["AUDIT_CHECKPOINT_S3_BUCKET"]
    assert buckets["environment"]["CHECKPOINT_BUCKET"] == checkpoint_bucket
    assert 'mc mb --ignore-existing "store/$IMAGES_BUCKET"' in script
    assert 'mc mb --ignore-existing --with-lock "store/$CHECKPOINT_BUCKET"' in script
    assert "mc retention set --default GOVERNANCE" in script
    for name in ("web", "worker-gpu", "worker-default", "beat"):
        assert services[name]["depends_on"]["buckets"]["condition"] == "service_completed_successfully", name
        assert services[name]["environment"]["AUDIT_CHECKPOINT_S3_BUCKET"] == checkpoint_bucket, name
    # A required secret left out stops the stack from starting, with its name.
    partial = tmp_path / "partial.env"
    partial.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines() if "MASTER_KEYS" not in line))
    missing = _compose("config", "-q", env_file=partial)
    assert missing.returncode != 0 and "MASTER_KEYS" in missing.stderr


def test_compose_takes_secrets_only_from_the_environment() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|MASTER_KEYS|ACCESS_KEY", key):
                assert "${" in str(value), f"{name}.{key} must come from the environment"
        if name in ("db", "redis", "s3"):
            assert "healthcheck" in service, f"{name} needs a health check"
            assert re.search(r":\S*\d", service["image"]) and not service["image"].endswith(":latest"), name


@pytest.mark.parametrize("dockerfile", ["web.Dockerfile", "worker.Dockerfile"])
def test_dockerfiles_follow_the_rules(dockerfile: str) -> None:
    lines = [
        line.strip() for line in (DOCKER / dockerfile).read_text().replace("\\\n", " ").splitlines() if line.strip()
    ]
    instructions = [line for line in lines if not line.startswith("#")]
    # The base is a build argument (a local base where no registry is reachable), by default the official image,
    # pinned and small.
    base_arg = next(line for line in instructions if line.startswith("ARG BASE_IMAGE="))
    assert re.fullmatch(r"ARG BASE_IMAGE=python:3\.11\.\d+-slim-bookworm", base_arg), base_arg
    assert instructions.index(base_arg) < instructions.index("FROM ${BASE_IMAGE}")
    assert [line for line in instructions if line.startswith("FROM ")] == ["FROM ${BASE_IMAGE}"]
    users = [line for line in instructions if line.startswith("USER ")]
    assert users and users[-1] != "USER root", "the image must run as a non-root user"
    assert any(line.startswith("HEALTHCHECK ") for line in instructions)
    assert not any(line.startswith("ADD ") for line in instructions), "use COPY; never ADD remote files"
    for line in instructions:
        if "pip install" in line:
            assert "--no-cache-dir" in line, line
            if "torch==" not in line:  # the project itself: every package at its pinned version
                assert "-c constraints.txt" in line, line
    # Every package the project installs (pyproject's package list: the apps of INSTALLED_APPS and the core layer),
    # the templates and the static files are in the image: a package left out fails only when the image starts.
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    names = sorted({name.rstrip("*") for name in packages})
    assert {"config", "core", "clinics", "patients", "analysis", "dicom"} <= set(names)
    for package in [*names, "templates", "static"]:
        assert f"COPY {package} ./{package}" in instructions, package
    # An extra CA bundle and a wheel folder are optional build mounts, passed to every pip install.
    assert "ARG EXTRA_CA_BUNDLE=" in instructions and "ARG WHEELS_DIR=" in instructions
    for line in instructions:
        if "pip install" in line:
            assert "${EXTRA_CA_BUNDLE:+PIP_CERT=$EXTRA_CA_BUNDLE}" in line, line
    copied = " ".join(line for line in instructions if line.startswith("COPY "))
    assert "var" not in copied.split() and ".env" not in copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", ".env"} <= set(ignored)


def test_application_containers_run_with_a_read_only_root_filesystem() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("migrate", "web", "worker-gpu", "worker-default", "beat"):
        assert services[name]["read_only"] is True, name
        assert services[name]["tmpfs"] == ["/tmp"], name


def test_the_web_container_runs_threaded_processes_sized_by_the_environment() -> None:
    """gunicorn's gthread workers, WEB_PROCESSES x WEB_THREADS from the environment (the image's defaults, the
    compose file's variables), and one pooled database connection per thread."""
    cmd = next(line for line in (DOCKER / "web.Dockerfile").read_text().splitlines() if line.startswith("CMD"))
    shell = json.loads(cmd.removeprefix("CMD").strip())[-1]
    assert "--worker-class gthread" in shell
    assert '--workers "${WEB_PROCESSES:-4}"' in shell and '--threads "${WEB_THREADS:-2}"' in shell
    assert "ENV WEB_PROCESSES=4 WEB_THREADS=2" in (DOCKER / "web.Dockerfile").read_text()
    web = yaml.safe_load(COMPOSE.read_text())["services"]["web"]["environment"]
    assert web["WEB_PROCESSES"] == "${WEB_PROCESSES:-4}" and web["WEB_THREADS"] == "${WEB_THREADS:-2}"
    assert web["DATABASE_POOL_MAX_SIZE"] == "${DATABASE_POOL_MAX_SIZE:-2}"  # = the threads, by default
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    assert example["DATABASE_POOL_MAX_SIZE"] == example["WEB_THREADS"]


def test_deploy_check_skips_with_the_reason_where_podman_is_missing(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "DEPLOY_CHECK_CACHE": str(tmp_path / "cache")}
    skipped = subprocess.run(
        [sys.executable, str(DOCKER / "deploy_check.py"), "--skip-if-unavailable"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr
    assert "SKIPPED: podman is not installed" in skipped.stdout
    failed = subprocess.run(
        [sys.executable, str(DOCKER / "deploy_check.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1 and "FAILED: podman is not installed" in failed.stdout


def test_the_deploy_checks_network_watch_flags_connections_leaving_the_stacks_network() -> None:
    """The NETWORK line of the deploy check: connections from the stack's subnet to itself or to loopback are its
    own; one to any other address (a registry, the machine's own PostgreSQL) is reported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_check", DOCKER / "deploy_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inspect = [{"plugins": [{"ipam": {"ranges": [[{"subnet": "10.89.3.0/24", "gateway": "10.89.3.1"}]]}}]}]
    inside = module.subnets_in(inspect)
    assert [str(n) for n in inside] == ["10.89.3.0/24"]
    table = "\n".join(
        [
            "ipv4 2 tcp 6 86399 ESTABLISHED src=10.89.3.5 dst=10.89.3.2 sport=40000 dport=5432 "
            "src=10.89.3.2 dst=10.89.3.5 sport=5432 dport=40000 [ASSURED] mark=0 zone=0 use=2",
            "ipv4 2 udp 17 25 src=10.89.3.5 dst=10.89.3.1 sport=5353 dport=53 src=10.89.3.1 dst=10.89.3.5 "
            "sport=53 dport=5353 mark=0 zone=0 use=2",
            "ipv4 2 tcp 6 86399 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=50000 dport=38123 "
            "src=10.89.3.7 dst=10.89.3.1 sport=8000 dport=50000 [ASSURED] mark=0 zone=0 use=2",
        ]
    )
    assert module.outside_flows(table, inside) == (2, set())
    leaving = table + (
        "\nipv4 2 tcp 6 119 SYN_SENT src=10.89.3.6 dst=151.101.0.223 sport=41000 dport=443 [UNREPLIED] "
        "src=151.101.0.223 dst=192.168.1.4 sport=443 dport=41000 mark=0 zone=0 use=2"
        "\nipv4 2 tcp 6 119 SYN_SENT src=10.89.3.6 dst=192.168.1.4 sport=41001 dport=5432 [UNREPLIED] "
        "src=192.168.1.4 dst=10.89.3.6 sport=5432 dport=41001 mark=0 zone=0 use=2"
    )
    assert module.outside_flows(leaving, inside) == (4, {"tcp 151.101.0.223:443", "tcp 192.168.1.4:5432"})
    # The kernel's IGMP reports to the local link's multicast group are not the stack contacting anyone.
    igmp = "\nipv4 2 unknown 2 599 src=10.89.3.6 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=10.89.3.6 mark=0 use=2"
    assert module.outside_flows(table + igmp, inside) == (3, set())
