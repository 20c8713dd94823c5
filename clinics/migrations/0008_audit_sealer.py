"""Audit events are inserted unsealed and sealed afterwards (``clinics.audit.seal_chain``): no lock on the
request path. On PostgreSQL the append-only trigger becomes:

- INSERT: only unsealed rows (``seq``, ``prev_hash``, ``hash`` empty); ``xact_id`` is set to the inserting
  transaction's id (``pg_current_xact_id()``, 64 bits, never wraps), whatever the client sent.
- UPDATE: only the sealer's, once: an unsealed row gets all three seal fields and no other column changes.
- DELETE: refused, as before.

The application's role gets UPDATE on the three seal columns only (``clinics.rls.app_role_grants_sql``; run
``manage.py setup_db_roles`` again after this migration, as the deployment does on every start).
"""

from django.db import migrations, models

FORWARD = """
CREATE OR REPLACE FUNCTION clinics_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.seq IS NOT NULL OR NEW.prev_hash IS NOT NULL OR NEW.hash IS NOT NULL THEN
            RAISE EXCEPTION 'clinics_auditevent is append-only: events are inserted unsealed'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        NEW.xact_id := pg_current_xact_id()::text::bigint;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE'
       AND OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
       AND to_jsonb(NEW) - ARRAY['seq', 'prev_hash', 'hash'] = to_jsonb(OLD) - ARRAY['seq', 'prev_hash', 'hash']
    THEN
        RETURN NEW;  -- the sealer, once per row
    END IF;
    RAISE EXCEPTION 'clinics_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS clinics_auditevent_no_update_delete ON clinics_auditevent;
CREATE TRIGGER clinics_auditevent_append_only
    BEFORE INSERT OR UPDATE OR DELETE ON clinics_auditevent
    FOR EACH ROW EXECUTE FUNCTION clinics_auditevent_append_only();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS clinics_auditevent_append_only ON clinics_auditevent;
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


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('clinics', '0007_invitations_clinic_sessions'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='auditevent',
            options={'base_manager_name': 'unscoped', 'default_manager_name': 'objects', 'ordering': ['chain', models.OrderBy(models.F('seq'), nulls_last=True), 'id']},
        ),
        migrations.AddField(
            model_name='auditevent',
            name='xact_id',
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='hash',
            field=models.CharField(editable=False, max_length=64, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='prev_hash',
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='seq',
            field=models.PositiveBigIntegerField(editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(condition=models.Q(('seq__isnull', True)), fields=['chain', 'id'], name='audit_unsealed'),
        ),
        migrations.RunPython(forward, backward),
    ]
