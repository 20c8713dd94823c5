"""PostgreSQL row-level security on every clinic-owned table (see ``clinics.rls``).

The table list is frozen here; a test checks that every table with a clinic column is covered, so a
new clinic-owned model needs its own migration calling ``enable_sql``.
"""

from django.db import migrations

from clinics.rls import disable_sql, enable_sql

TABLES = (
    "clinics_membership",
    "clinics_apikey",
    "clinics_auditevent",
    "patients_patient",
    "patients_datakey",
    "patients_visit",
    "patients_image",
    "analysis_analysis",
    "analysis_finding",
    "analysis_findingdecision",
    "analysis_conditionthreshold",
    "analysis_webhookendpoint",
    "analysis_webhookdelivery",
    "analysis_report",
    "analysis_amendment",
)


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        for statement in enable_sql(table):
            schema_editor.execute(statement, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        for statement in disable_sql(table):
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("clinics", "0003_mfa_security_stamp"),
        ("patients", "0003_encrypted_identity_schema"),
        ("analysis", "0004_reports"),
    ]
    operations = [migrations.RunPython(forward, backward)]
