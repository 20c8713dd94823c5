"""Create or update the application's PostgreSQL role: a login role that owns nothing, is not a
superuser and cannot bypass row-level security, with data privileges only (the audit table is
insert-and-read). Run as the owner of the tables (the role that runs migrations)."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from clinics.rls import app_role_grants_sql


class Command(BaseCommand):
    help = "Create/update the application's database role (no ownership, no superuser, no BYPASSRLS)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--app-role", required=True, help="Name of the application's role, e.g. dentalscan_app")
        parser.add_argument(
            "--password-env", default="", help="Environment variable holding the role's password (LOGIN role)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("Database roles and row-level security exist on PostgreSQL only.")
        role = options["app_role"]
        password = os.environ.get(options["password_env"], "") if options["password_env"] else ""
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            exists = cursor.fetchone() is not None
            quoted = connection.ops.quote_name(role)
            attributes = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT"
            cursor.execute(f"{'ALTER' if exists else 'CREATE'} ROLE {quoted} WITH {attributes}")
            if password:
                cursor.execute(f"ALTER ROLE {quoted} WITH PASSWORD %s", [password])
            for statement in app_role_grants_sql(role):
                cursor.execute(statement)
            cursor.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}"
            )
            cursor.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {quoted}")
        self.stdout.write(f"Role {role}: no ownership, no superuser, no BYPASSRLS; data privileges granted.")
