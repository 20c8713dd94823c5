"""On PostgreSQL, the audit table refuses UPDATE and DELETE of rows at the database level.

TRUNCATE is not trapped here: test databases are flushed with it. It is a table-owner privilege,
which the application's database role must not hold in production.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION clinics_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'clinics_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER clinics_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON clinics_auditevent
    FOR EACH ROW EXECUTE FUNCTION clinics_auditevent_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS clinics_auditevent_no_update_delete ON clinics_auditevent;
DROP FUNCTION IF EXISTS clinics_auditevent_append_only();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("clinics", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
