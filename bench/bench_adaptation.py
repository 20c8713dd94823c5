"""A simulated new clinic adapts the photo model to itself from its dentists' reviews, through the REST API.

    python bench/bench_adaptation.py [--reviewed 40] [--seed 0]

The clinic's photos: healthy-looking photos from other sources (``../shared/datasets/other-source-photos``, minus
any source the active base model was trained on, as its ``model.json`` ``trained_on_other_sources`` says) mixed
with photos showing disease from the group *test* split of ``intraoral-photos`` (never trained on). A script plays
the dentist, through the REST API with a user token: it uploads each reviewed photo (one patient and visit each),
reads the analysis, confirms each suggestion whose condition the photo has, rejects the others as "not present",
adds the conditions the AI missed, and signs the visit's report (so a condition nobody noted counts as absent).
Then ``manage.py adapt_model --activate`` trains the clinic model (timed), and the held-back photos are uploaded
the same way and their shown findings counted. The base model's numbers on the same held-back photos come from
the same platform with no clinic model active (uploaded first).

Prints a table and writes ``bench/results/adaptation.json``. Runs on an embedded SQLite database in a temporary
folder, tasks in-process; needs the shared data sets (exits 2 without them).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="dentalscan-adapt-"))
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
os.environ.pop("REDIS_URL", None)  # tasks run in-process
os.environ["DATABASE_URL"] = f"sqlite:///{WORK / 'db.sqlite3'}"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402

from analysis.ml.data import datasets_root, photo_manifest_path, read_manifest  # noqa: E402
from analysis.ml.splits import train_val_test_split  # noqa: E402

CONDITIONS = ("caries", "gingivitis", "calculus", "ulcer")


def clinic_photos(reviewed: int, seed: int, base_meta: dict[str, Any]) -> dict[str, list[tuple[Path, set[str]]]]:
    """The reviewed and held-back photos, each with the conditions it shows (empty: healthy-looking)."""
    rng = random.Random(seed)
    trained_sources = set(base_meta.get("trained_on_other_sources") or [])
    other = datasets_root() / "other-source-photos"
    with (other / "manifest.csv").open() as handle:
        healthy = [
            (other / row["file"], set())
            for row in csv.DictReader(handle)
            if row["expected"] == "healthy_looking" and row["source"] not in trained_sources
        ]
    records = read_manifest(photo_manifest_path())
    _, _, test = train_val_test_split(records)
    sick = [(records[i].path, set(records[i].labels)) for i in test if records[i].labels]
    rng.shuffle(healthy)
    rng.shuffle(sick)
    n_healthy = min(reviewed // 2, len(healthy) // 2)
    n_sick = reviewed - n_healthy
    return {
        "reviewed": healthy[:n_healthy] + sick[:n_sick],
        "held_back_healthy": healthy[n_healthy:],
        "held_back_sick": sick[n_sick : n_sick + 80],
    }


class Dentist:
    def __init__(self, world: Any) -> None:
        from tests.conftest import token_client

        self.api = token_client(world, "dentist")
        self.staff = token_client(world, "staff")
        self.n = 0

    def upload(self, path: Path) -> dict[str, Any]:
        self.n += 1
        patient = self.staff.post(
            reverse("api:patient-list"),
            {
                "external_id": f"adapt-{self.n:04d}",
                "given_name": "Sim",
                "family_name": f"Patient{self.n}",
                "date_of_birth": (dt.date(1950, 1, 1) + dt.timedelta(days=97 * self.n)).isoformat(),
            },
            format="json",
        )
        assert patient.status_code == 201, patient.content
        patient = patient.json()
        f = io.BytesIO(path.read_bytes())
        f.name = path.name
        image = self.staff.post(
            reverse("api:patient-image-list", kwargs={"pk": patient["id"]}),
            {"file": f, "modality": "photo"},
            format="multipart",
        )
        assert image.status_code == 201, image.content
        body = image.json()
        analysis = self.api.get(reverse("api:analysis-detail", kwargs={"pk": body["analysis"]["id"]})).json()
        return {"image": body, "analysis": analysis}

    def review(self, path: Path, truth: set[str]) -> dict[str, int]:
        result = self.upload(path)
        counts = {"confirmed": 0, "rejected": 0, "added": 0}
        shown = set()
        for finding in result["analysis"]["findings"]:
            shown.add(finding["condition"])
            url = reverse("api:finding-review", kwargs={"pk": finding["id"]})
            if finding["condition"] in truth:
                answer = self.api.post(url, {"decision": "confirm"}, format="json")
                counts["confirmed"] += 1
            else:
                answer = self.api.post(url, {"decision": "reject", "reason": "not_present"}, format="json")
                counts["rejected"] += 1
            assert answer.status_code in (200, 201), answer.content
        for condition in sorted(truth - shown):  # what the AI missed, drawn over the whole photo
            answer = self.api.post(
                reverse("api:image-finding-add", kwargs={"pk": result["image"]["id"]}),
                {"condition": condition, "box": [0.05, 0.05, 0.9, 0.9]},
                format="json",
            )
            assert answer.status_code == 201, answer.content
            counts["added"] += 1
        signed = self.api.post(reverse("api:visit-report", kwargs={"pk": result["image"]["visit"]}), {}, format="json")
        assert signed.status_code == 201, signed.content
        return counts

    def shown(self, path: Path) -> tuple[set[str], str]:
        result = self.upload(path)
        return {f["condition"] for f in result["analysis"]["findings"]}, result["analysis"]["status"]


def held_back_rates(dentist: Dentist, photos: dict[str, list]) -> dict[str, Any]:
    flagged, refused = 0, 0
    for path, _ in photos["held_back_healthy"]:
        shown, status = dentist.shown(path)
        flagged += bool(shown)
        refused += status == "not_assessable"
    hits, total, sick_refused = 0, 0, 0
    per: dict[str, list[int]] = {c: [0, 0] for c in CONDITIONS}
    for path, truth in photos["held_back_sick"]:
        shown, status = dentist.shown(path)
        sick_refused += status == "not_assessable"
        for condition in truth:
            per[condition][0] += condition in shown
            per[condition][1] += 1
            hits += condition in shown
            total += 1
    healthy = len(photos["held_back_healthy"])
    return {
        "healthy_images": healthy,
        "healthy_with_any_finding": flagged,
        "false_finding_rate": round(flagged / healthy, 4) if healthy else None,
        "healthy_not_assessable": refused,
        "sick_images": len(photos["held_back_sick"]),
        "sick_not_assessable": sick_refused,
        "sensitivity": round(hits / total, 4) if total else None,
        "sensitivity_per_condition": {c: round(h / n, 4) if n else None for c, (h, n) in per.items()},
    }


def simulate(reviewed: int = 40, seed: int = 0) -> dict[str, Any]:
    from analysis.models import ClinicModel
    from analysis.registry import artifact_path, model_version_active, read_artifact
    from clinics.tenancy import clinic_scope
    from tests.conftest import build_clinic

    setup_test_environment()
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(WORK / "img")},
        },
    }
    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    call_command("register_model", shipped=True, stdout=io.StringIO())
    base = model_version_active("photo")
    photos = clinic_photos(reviewed, seed, read_artifact(artifact_path(base)))
    world = build_clinic("sim", patient_name="Simulated")
    dentist = Dentist(world)
    started = time.perf_counter()
    decisions = {"confirmed": 0, "rejected": 0, "added": 0}
    for path, truth in photos["reviewed"]:
        for k, v in dentist.review(path, truth).items():
            decisions[k] += v
    review_seconds = time.perf_counter() - started
    before = held_back_rates(dentist, photos)
    out = io.StringIO()
    call_command("adapt_model", clinic=str(world.clinic.id), modality="photo", activate=True, json=True, stdout=out)
    adapted_line = json.loads(out.getvalue())
    with clinic_scope(world.clinic.id):
        model = ClinicModel.objects.get(status="active")
        training_seconds = model.training_seconds
    after = held_back_rates(dentist, photos)
    return {
        "base_model": base.model_id,
        "clinic_model": adapted_line["model"],
        "reviewed_images": len(photos["reviewed"]),
        "reviewed_healthy": sum(1 for _, t in photos["reviewed"] if not t),
        "decisions": decisions,
        "review_seconds": round(review_seconds, 1),
        "training_seconds": training_seconds,
        "adapt_model": adapted_line,
        "held_back_base": before,
        "held_back_adapted": after,
        "sensitivity_drop": (
            round(before["sensitivity"] - after["sensitivity"], 4)
            if before["sensitivity"] is not None and after["sensitivity"] is not None
            else None
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reviewed", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (datasets_root() / "other-source-photos" / "manifest.csv").exists():
        print("needs ../shared/datasets (other-source-photos and intraoral-photos)")
        return 2
    info = machine()
    result = simulate(args.reviewed, args.seed)
    b, a = result["held_back_base"], result["held_back_adapted"]
    print(machine_line(info))
    print(
        f"{result['base_model']} -> {result['clinic_model']}: {result['reviewed_images']} reviewed photos "
        f"({result['reviewed_healthy']} healthy-looking), decisions {result['decisions']}, "
        f"training {result['training_seconds']:.2f} s"
    )
    print(
        table(
            ["held-back photos", "base", "clinic model"],
            [
                [
                    f"healthy-looking with any finding (of {b['healthy_images']})",
                    f"{b['healthy_with_any_finding']} ({b['false_finding_rate']:.0%})",
                    f"{a['healthy_with_any_finding']} ({a['false_finding_rate']:.0%})",
                ],
                [
                    f"sensitivity on {b['sick_images']} photos with disease",
                    f"{b['sensitivity']:.3f}",
                    f"{a['sensitivity']:.3f}",
                ],
                *[
                    [f"  {c}", str(b["sensitivity_per_condition"][c]), str(a["sensitivity_per_condition"][c])]
                    for c in CONDITIONS
                ],
                [
                    "not assessable (healthy / disease)",
                    f"{b['healthy_not_assessable']} / {b['sick_not_assessable']}",
                    f"{a['healthy_not_assessable']} / {a['sick_not_assessable']}",
                ],
            ],
        )
    )
    path = write_json("adaptation.json", {"machine": info, "args": vars(args), **result})
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
