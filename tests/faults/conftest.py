"""Fault tests: each scenario runs against its OWN throwaway PostgreSQL cluster and Redis server (free
ports, temporary folders), never the machine's shared services, with the real processes: the web app
(``runserver``), Celery workers, ``manage.py`` commands. The test process only drives them over HTTP and
inspects the result in subprocesses.

One private cluster per session; each test gets a fresh database cloned from a migrated template
(demo clinics seeded, a tiny randomly initialised photo model registered), a fresh Redis database and
a fresh image folder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.stack import APP_ROLE, PrivatePostgres, PrivateRedis, Stack, master_keys, missing_services

SETTINGS = "tests.faults.settings"
TEMPLATE_DB = "fault_template"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection tests with private PostgreSQL/Redis servers")


@dataclass
class Cluster:
    pg: PrivatePostgres
    redis: PrivateRedis
    keys: str
    seed: dict[str, Any]
    base: Path

    @property
    def api_key(self) -> str:
        return self.seed["clinics"][0]["api_key"]


def tiny_photo_model(out: Path) -> Path:
    """A randomly initialised 64 px photo model artefact (fast on any CPU; findings are likely)."""
    import torch

    from analysis.ml import LABELS
    from analysis.ml.artifacts import export_artifact
    from analysis.ml.model import build_model

    torch.manual_seed(0)
    model = build_model(len(LABELS), input_size=64, pretrained=False)
    with torch.no_grad():
        model.head.bias.fill_(2.0)
    export_artifact(
        out,
        model.state_dict(),
        labels=LABELS,
        thresholds=dict.fromkeys(LABELS, 0.3),
        temperature=dict.fromkeys(LABELS, 1.0),
        logit_bias=dict.fromkeys(LABELS, 0.0),
        input_size=64,
        name="photo-fault",
        version="0.0.1",
    )
    return out


@pytest.fixture(scope="session")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = missing_services()
    if reason:
        pytest.skip(f"fault tests need private PostgreSQL and Redis servers: {reason}")
    base = tmp_path_factory.mktemp("faults")
    pg = PrivatePostgres().init().start()
    (base / "redis").mkdir()
    redis = PrivateRedis(base=base / "redis").start()
    keys = master_keys()
    try:
        pg.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        template = Stack(
            database_url=pg.url(TEMPLATE_DB),
            redis_url=redis.url(15),
            workdir=base / "template",
            settings_module=SETTINGS,
            app_role=APP_ROLE,
            keys=keys,
        )
        seed = template.prepare(model_dir=tiny_photo_model(base / "model"))
        yield Cluster(pg=pg, redis=redis, keys=keys, seed=seed, base=base)
    finally:
        redis.destroy()
        pg.destroy()


_numbers = itertools.count(1)


@pytest.fixture
def stack(fault_cluster: Cluster, tmp_path: Path) -> Iterator[Stack]:
    n = next(_numbers)
    name = f"fault_{n}"
    # A scenario that failed half-way may have left a service down: bring it back first.
    if not fault_cluster.pg.running():
        fault_cluster.pg.start()
    try:
        fault_cluster.redis.ping()
    except Exception:  # noqa: BLE001
        fault_cluster.redis.start()
    fault_cluster.pg.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    db = n % 15
    import redis as redis_lib

    redis_lib.Redis(port=fault_cluster.redis.port, db=db).flushdb()
    s = Stack(
        database_url=fault_cluster.pg.url(name),
        redis_url=fault_cluster.redis.url(db),
        workdir=tmp_path / "stack",
        settings_module=SETTINGS,
        app_role=APP_ROLE,
        keys=fault_cluster.keys,
    )
    try:
        yield s
    finally:
        s.stop_all()
        if fault_cluster.pg.running():
            fault_cluster.pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
