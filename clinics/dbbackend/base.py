from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base

from ..rls import rls_execute_wrapper


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
