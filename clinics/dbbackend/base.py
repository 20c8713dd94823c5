from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus

from ..rls import rls_bypass_open

INERROR = TransactionStatus.INERROR


def desired_state() -> tuple[str, str]:
    """``(app.clinic_id, app.rls_bypass)`` as the application's scope wants them now."""
    # Imported here, not at the top: Django loads this backend while model classes are being defined, and
    # clinics.tenancy defines ClinicScopedModel, so a top-level import would re-enter the loading models.
    from ..tenancy import current_clinic_id

    clinic_id = current_clinic_id()
    return (str(clinic_id) if clinic_id else "", "on" if rls_bypass_open() else "off")


def rls_execute_wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict) -> Any:
    connection = context["connection"]
    state = desired_state()
    raw = connection.connection
    # In an aborted transaction only ROLLBACK (TO SAVEPOINT) can run; the state is re-set after it.
    if getattr(connection, "rls_state", None) != state and raw.info.transaction_status != INERROR:
        # On the raw connection, not this cursor: it may be a server-side (named) cursor.
        raw.execute(
            "SELECT set_config('app.clinic_id', %s, false), set_config('app.rls_bypass', %s, false)", list(state)
        )
        connection.rls_state = state
    return execute(sql, params, many, context)


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL backend plus ``clinics.rls``: every statement runs with ``app.clinic_id``
    set to the clinic in scope. A rollback undoes ``set_config``, so the remembered state is dropped
    then and set again before the next statement.

    ``DATABASE_APP_ROLE`` (optional): ``SET ROLE`` to that role on connect, for a login role that is
    a member of the application role (the test suite logs in as the owner and works as the app role).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rls_state: tuple[str, str] | None = None
        self.execute_wrappers.append(rls_execute_wrapper)

    def init_connection_state(self) -> None:
        super().init_connection_state()
        self.rls_state = None
        role = getattr(settings, "DATABASE_APP_ROLE", "")
        if role:
            self.connection.execute("SELECT set_config('role', %s, false)", [role])

    def _rollback(self) -> None:
        super()._rollback()
        self.rls_state = None

    def _savepoint_rollback(self, sid: str) -> None:
        # The ROLLBACK TO SAVEPOINT statement itself passes through the wrapper: forget the state
        # only afterwards, or the wrapper would run set_config inside the aborted transaction.
        super()._savepoint_rollback(sid)
        self.rls_state = None

    def _close(self) -> None:
        self.rls_state = None
        super()._close()
