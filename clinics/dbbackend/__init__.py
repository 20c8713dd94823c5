"""PostgreSQL backend that keeps the connection's row-level-security settings in line with the
application's clinic scope (see ``clinics.rls``)."""
