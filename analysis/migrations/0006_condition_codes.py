"""Stored condition names become the platform's codes (``core.conditions``).

The X-ray detectors 1.0.0-1.2.0 wrote their data set's class names (``Cavity``, ``Fillings``, ``Impacted Tooth``,
``Implant``) into findings, scores, thresholds and the registry, while dentists' own findings used the codes
(``cavity``, ``filling``...), so the screen, the glossary, FHIR and the agreement figures did not line up.
Rewritten here: findings, their decision records (before/after), analysis scores, clinic thresholds and the
registered model versions (labels, thresholds). Signed report snapshots are never rewritten (they are the signed
record); their readers map old names with ``core.conditions.canonical``.
"""

from __future__ import annotations

from django.db import migrations

from clinics.rls import rls_bypass

# Frozen here (a migration must not change when the live vocabulary does): the names stored before the codes.
LEGACY = {"Cavity": "cavity", "Fillings": "filling", "Impacted Tooth": "impacted_tooth", "Implant": "implant"}


def canonical(name: str) -> str:
    return LEGACY.get(name, name)


def _keys(mapping: dict) -> dict:
    return {canonical(k): v for k, v in mapping.items()} if isinstance(mapping, dict) else mapping


def _state(value: dict | None) -> dict | None:
    if isinstance(value, dict) and isinstance(value.get("condition"), str):
        return {**value, "condition": canonical(value["condition"])}
    return value


def forwards(apps, schema_editor) -> None:  # noqa: ANN001
    Finding = apps.get_model("analysis", "Finding")
    FindingDecision = apps.get_model("analysis", "FindingDecision")
    Analysis = apps.get_model("analysis", "Analysis")
    ConditionThreshold = apps.get_model("analysis", "ConditionThreshold")
    ModelVersion = apps.get_model("analysis", "ModelVersion")
    with rls_bypass():  # every clinic's rows (PostgreSQL row-level security)
        for old in Finding.objects.order_by().values_list("condition", flat=True).distinct():
            if canonical(old) != old:
                Finding.objects.filter(condition=old).update(condition=canonical(old))
        for decision in FindingDecision.objects.all().iterator():
            before, after = _state(decision.before), _state(decision.after)
            if (before, after) != (decision.before, decision.after):
                FindingDecision.objects.filter(pk=decision.pk).update(before=before, after=after)
        for analysis in Analysis.objects.exclude(scores={}).only("id", "scores").iterator():
            scores = _keys(analysis.scores)
            if scores != analysis.scores:
                Analysis.objects.filter(pk=analysis.pk).update(scores=scores)
        for row in ConditionThreshold.objects.all():
            code = canonical(row.condition)
            if code == row.condition:
                continue
            taken = ConditionThreshold.objects.filter(clinic_id=row.clinic_id, modality=row.modality, condition=code)
            if taken.exists():  # the clinic already set the code itself: that choice wins
                row.delete()
            else:
                ConditionThreshold.objects.filter(pk=row.pk).update(condition=code)
        for model in ModelVersion.objects.all():
            labels = [canonical(label) for label in model.labels]
            thresholds = _keys(model.thresholds)
            if (labels, thresholds) != (model.labels, model.thresholds):
                ModelVersion.objects.filter(pk=model.pk).update(labels=labels, thresholds=thresholds)


class Migration(migrations.Migration):
    dependencies = [("analysis", "0005_report_amends_restrict")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
