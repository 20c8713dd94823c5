"""PostgreSQL row-level security: the database's own wall between clinics.

Invariants:
- Every clinic-owned table (``RLS_TABLES``) has RLS enabled and forced, with one policy that lets a
  row through only when its ``clinic_id`` equals the connection's ``app.clinic_id``, or while the
  explicit cross-clinic escape hatch is open (``app.rls_bypass = 'on'``).
- The connection settings follow the application's scope: before every SQL statement, the database
  backend ``clinics.dbbackend`` brings ``app.clinic_id`` in line with ``clinics.tenancy``'s current clinic
  (empty when none) and ``app.rls_bypass`` in line with ``rls_bypass()``. A query with no clinic in
  scope therefore sees no clinic rows, even if the ORM filter were forgotten.
- ``rls_bypass()`` is opened only by the ``unscoped`` managers (authentication lookups, the audit
  writer and verifier, operator commands), i.e. exactly where the code already says it crosses clinics.
- The application's database role owns no table, is not a superuser and lacks BYPASSRLS
  (``manage.py setup_db_roles``); the owner and superusers are for migrations only.

SQLite (the embedded default) has no RLS: the ORM scoping of ``clinics.tenancy`` is the only wall there.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

# Clinic-owned tables. UserToken is not here: it is looked up by its secret before any clinic is known,
# like a session row, and carries no patient data.
RLS_TABLES: tuple[str, ...] = (
    "clinics_membership",
    "clinics_apikey",
    "clinics_invitation",
    "clinics_auditevent",
    "patients_patient",
    "patients_datakey",
    "patients_visit",
    "patients_image",
    "patients_breakglassgrant",
    "analysis_analysis",
    "analysis_finding",
    "analysis_findingdecision",
    "analysis_conditionthreshold",
    "analysis_webhookendpoint",
    "analysis_webhookdelivery",
    "analysis_report",
    "analysis_amendment",
    "analysis_uploadidempotencykey",
    "analysis_clinicmodel",
    "analysis_analysissettings",
    "analysis_visitnote",
    "dicom_dicomnode",
    "dicom_dicominstance",
    "dicom_dicomsend",
)
POLICY = "clinic_isolation"
_CONDITION = (
    "current_setting('app.rls_bypass', true) = 'on' "
    "OR clinic_id = NULLIF(current_setting('app.clinic_id', true), '')::uuid"
)

_bypass: contextvars.ContextVar[int] = contextvars.ContextVar("rls_bypass", default=0)


@contextmanager
def rls_bypass() -> Iterator[None]:
    """Let the statements of this block cross clinics (the ``unscoped`` managers use it)."""
    token = _bypass.set(_bypass.get() + 1)
    try:
        yield
    finally:
        _bypass.reset(token)


def rls_bypass_open() -> bool:
    """Whether the current statement runs inside ``rls_bypass()``."""
    return _bypass.get() > 0


def enable_sql(table: str) -> list[str]:
    return [
        f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY',
        f'ALTER TABLE "{table}" FORCE ROW LEVEL SECURITY',
        f'DROP POLICY IF EXISTS {POLICY} ON "{table}"',
        f'CREATE POLICY {POLICY} ON "{table}" USING ({_CONDITION}) WITH CHECK ({_CONDITION})',
    ]


def disable_sql(table: str) -> list[str]:
    return [
        f'DROP POLICY IF EXISTS {POLICY} ON "{table}"',
        f'ALTER TABLE "{table}" NO FORCE ROW LEVEL SECURITY',
        f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY',
    ]


def app_role_grants_sql(role: str, *, allow_truncate: bool = False) -> list[str]:
    """Privileges of the application's role: data only, never DDL or ownership; the audit table is
    insert-and-read only, except the three seal columns the sealer fills once (the trigger of migration
    ``clinics.0008`` refuses any other update). ``allow_truncate`` is for the test suite, which empties
    tables between tests."""
    quoted = '"' + role.replace('"', '""') + '"'
    table_privileges = "SELECT, INSERT, UPDATE, DELETE" + (", TRUNCATE" if allow_truncate else "")
    return [
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"GRANT {table_privileges} ON ALL TABLES IN SCHEMA public TO {quoted}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {quoted}",
        f"REVOKE UPDATE, DELETE ON clinics_auditevent FROM {quoted}",
        f"GRANT UPDATE (seq, prev_hash, hash) ON clinics_auditevent TO {quoted}",
    ]
