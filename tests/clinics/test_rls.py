"""PostgreSQL row-level security: the second wall between clinics, below the ORM scoping.

The whole suite runs on PostgreSQL as an application role that owns nothing and cannot bypass RLS
(tests/conftest.py), so every other test also proves the application works under these policies.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from clinics.rls import RLS_TABLES
from clinics.tenancy import clinic_scope, deactivate_clinic
from patients.models import Patient

from ..conftest import World, requires_postgres

pytestmark = requires_postgres


def _rows(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def test_the_application_role_owns_nothing_and_cannot_bypass(db: object) -> None:
    ((user, superuser, bypass),) = _rows(
        "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert user == "dentalscan_test_app" and not superuser and not bypass
    owned = _rows(
        "SELECT relname FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    )
    assert owned == []


def test_every_clinic_table_has_forced_rls_and_a_policy(db: object) -> None:
    with_clinic_column = {
        name
        for (name,) in _rows(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND column_name = 'clinic_id'"
        )
    }
    # User tokens are looked up by their secret before any clinic is known (like sessions).
    assert with_clinic_column - {"clinics_usertoken"} == set(RLS_TABLES)
    for table in RLS_TABLES:
        ((enabled, forced),) = _rows(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [table]
        )
        assert enabled and forced, table
        assert _rows("SELECT 1 FROM pg_policies WHERE tablename = %s AND policyname = 'clinic_isolation'", [table])


def test_a_query_without_a_clinic_returns_no_rows(alice: World, bob: World) -> None:
    deactivate_clinic()
    # A forgotten filter (raw SQL here) with no clinic in scope sees nothing at all.
    assert _rows("SELECT count(*) FROM patients_patient") == [(0,)]
    assert _rows("SELECT count(*) FROM analysis_finding") == [(0,)]
    assert _rows("SELECT count(*) FROM clinics_membership") == [(0,)]
    # The explicit escape hatch still works where code says so.
    assert Patient.unscoped.count() == 2


def test_a_forgotten_filter_sees_only_the_clinic_in_scope(alice: World, bob: World) -> None:
    with clinic_scope(alice.clinic.id):
        ids = {row[0] for row in _rows("SELECT id FROM patients_patient")}
        assert ids == {alice.patient.pk}
        images = {row[0] for row in _rows("SELECT id FROM patients_image")}
        assert images == {alice.image.pk}
        # Rows of another clinic can be neither written nor moved there.
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("UPDATE patients_patient SET clinic_id = %s", [bob.clinic.pk])
        assert _rows("SELECT count(*) FROM patients_patient WHERE id = %s", [bob.patient.pk]) == [(0,)]
        updated = _rows("UPDATE patients_patient SET sex = 'unknown' WHERE id = %s RETURNING id", [bob.patient.pk])
        assert updated == []


def test_inserting_a_row_for_another_clinic_is_refused(alice: World, bob: World) -> None:
    with clinic_scope(alice.clinic.id):
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO analysis_conditionthreshold (clinic_id, modality, condition, threshold)"
                    " VALUES (%s, 'photo', 'caries', 0.5)",
                    [bob.clinic.pk],
                )


def test_setup_db_roles_creates_a_role_without_ownership_or_bypass(db: object) -> None:
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")  # the command is run by the owner; undone with the test's transaction
    out = StringIO()
    call_command("setup_db_roles", "--app-role", "dentalscan_rls_cmd_test", stdout=out)
    ((superuser, bypass, login),) = _rows(
        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'dentalscan_rls_cmd_test'"
    )
    assert login and not superuser and not bypass
    privileges = _rows(
        "SELECT privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = 'dentalscan_rls_cmd_test' AND table_name = 'clinics_auditevent'"
    )
    assert {p for (p,) in privileges} == {"SELECT", "INSERT"}


def test_an_event_of_the_clinic_in_scope_is_written_without_the_bypass(alice: World, bob: World) -> None:
    """Nearly every request records an event of its own clinic: row-level security lets it in as it is, so it is
    inserted with the bypass closed (no set_config round trips around it); other chains still need the bypass."""
    from clinics import audit
    from clinics.dbbackend.base import desired_state
    from clinics.models import AuditEvent

    seen: list[tuple[str, tuple[str, str]]] = []

    def watch(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        seen.append((sql.split()[0].upper(), desired_state()))
        return execute(sql, params, many, context)

    with clinic_scope(alice.clinic.id), connection.execute_wrapper(watch):
        own = audit.record(action="test.own", clinic_id=alice.clinic.id)
        other = audit.record(action="test.other", clinic_id=bob.clinic.id)
        global_ = audit.record(action="test.global", clinic_id=None)
    inserts = [state for verb, state in seen if verb == "INSERT"]
    assert inserts == [(str(alice.clinic.id), "off"), (str(alice.clinic.id), "on"), (str(alice.clinic.id), "on")]
    stored = {e.action: e.clinic_id for e in AuditEvent.unscoped.filter(pk__in=[own.pk, other.pk, global_.pk])}
    assert stored == {"test.own": alice.clinic.id, "test.other": bob.clinic.id, "test.global": None}
