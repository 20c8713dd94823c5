"""Row-level security with Django's connection pool (``DATABASE_POOL_MAX_SIZE``): a pooled PostgreSQL connection
carries the previous user's ``app.clinic_id`` in its session, so the backend must set the scope again before the
first statement after every checkout, never trust what the connection still holds."""

from __future__ import annotations

import copy

import pytest
from django.db import connections

from clinics.tenancy import clinic_scope, deactivate_clinic

from ..conftest import World, requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pooled():  # noqa: ANN201
    """A second connection to the test database, through a pool of one connection (so every checkout is the same
    server session), as the application role, like the suite's own."""
    settings_dict = copy.deepcopy(connections["default"].settings_dict)
    settings_dict["CONN_MAX_AGE"] = 0
    settings_dict.setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 1, "timeout": 10}
    wrapper = connections["default"].__class__(settings_dict, alias="pool_test")
    yield wrapper
    wrapper.close()
    wrapper.close_pool()


def _visible(wrapper, sql: str) -> set:  # noqa: ANN001
    with wrapper.cursor() as cursor:
        cursor.execute(sql)
        rows = {row[0] for row in cursor.fetchall()}
    return rows


def _session(wrapper) -> tuple[int, str]:  # noqa: ANN001
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), current_user")
        return cursor.fetchone()


def test_a_pooled_connection_never_keeps_the_last_clinics_scope(alice: World, bob: World, pooled) -> None:  # noqa: ANN001
    with clinic_scope(alice.clinic.id):
        pid_a, user = _session(pooled)
        assert user == "dentalscan_test_app"  # the application role: RLS applies
        assert _visible(pooled, "SELECT id FROM patients_patient") == {alice.patient.pk}
    pooled.close()  # back to the pool: the server session (and its app.clinic_id = alice) lives on
    with clinic_scope(bob.clinic.id):
        pid_b, _ = _session(pooled)
        assert pid_b == pid_a, "the pool of one must hand out the same server session"
        assert _visible(pooled, "SELECT id FROM patients_patient") == {bob.patient.pk}
    pooled.close()
    deactivate_clinic()
    pid_c, _ = _session(pooled)
    assert pid_c == pid_a
    # No clinic in scope: nothing, although the session last held bob's scope.
    assert _visible(pooled, "SELECT id FROM patients_patient") == set()
    pooled.close()
    # Even a raw setting left behind by someone else's use of the session is overwritten before the next query.
    with clinic_scope(alice.clinic.id):
        with pooled.cursor() as cursor:
            cursor.execute("SELECT 1")
        pooled.connection.execute("SELECT set_config('app.clinic_id', %s, false)", [str(bob.clinic.pk)])
        pooled.close()
        assert _visible(pooled, "SELECT id FROM patients_patient") == {alice.patient.pk}


PROBE_POOL = """
import django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("SELECT 1")
print("pool", connection.settings_dict["CONN_MAX_AGE"], connection.pool.min_size, connection.pool.max_size)
"""


def test_the_pool_is_configured_from_the_environment() -> None:
    """``DATABASE_POOL_MAX_SIZE`` (and its min size) turn the pool on for PostgreSQL, persistent connections off."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = {**os.environ, "DATABASE_POOL_MAX_SIZE": "3", "DATABASE_POOL_MIN_SIZE": "2"}
    env["DATABASE_URL"] = "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connections["default"].settings_dict)
    done = subprocess.run(
        [sys.executable, "-c", PROBE_POOL], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "pool 0 2 3"
