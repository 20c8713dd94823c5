"""DICOM receiving and sending back, with the real processes: ``manage.py dicom_scp`` (a subprocess) receives from a
pynetdicom SCU over one association; a private Orthanc (Debian's package) is the PACS.

    python bench/bench_dicom.py [--images 20] [--size 1536x1024] [--visit 4]

Embedded default (SQLite in a throwaway folder, no broker: analyses run inside the receiver, as on a one-box install).

1. Images received per second over one association, 16-bit DX intraoral X-rays of ``--size``:
   - for a patient nobody knows (inbox): DICOM parse, the intake's checks and decode, encryption, storage;
   - for a known patient (matched): the same plus the upload pipeline and the analysis of each image (in-process).
2. A visit of ``--visit`` X-rays: seconds from the first C-STORE to (a) every analysis finished, (b) the preliminary
   SR stored in Orthanc (the clinic's setting), and from a dentist's signature (findings decided by this script) to
   (c) the signed SR and secondary captures stored in Orthanc.

Writes ``bench/results/dicom.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", default="1536x1024", help="columns x rows of each X-ray")
    parser.add_argument("--visit", type=int, default=4)
    parser.add_argument(
        "--xrays",
        default=str(ROOT.parent / "shared" / "datasets" / "dental-xrays" / "test" / "images"),
        help="folder of real dental X-rays (JPEG) sent as 16-bit DX at their own size; synthetic ones without it",
    )
    args = parser.parse_args()
    cols, rows = (int(v) for v in args.size.split("x"))

    work = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    os.environ.pop("REDIS_URL", None)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=f"sqlite:///{work / 'db.sqlite3'}",
        DENTALSCAN_VAR_DIR=str(work / "var"),
        DENTALSCAN_IMAGES_DIR=str(work / "images"),
        ANALYSIS_WARMUP="0",
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from pydicom.uid import generate_uid
    from pynetdicom import AE

    from tests.dicom.factories import xray_dataset
    from tests.dicom.orthanc import PrivateOrthanc, missing_dicom_tools
    from tests.dicom.scp_process import dicom_scp

    missing = missing_dicom_tools()
    if missing:
        sys.exit(f"cannot run: {missing}")
    call_command("migrate", verbosity=0)
    os.environ.update(MASTER_KEYS=settings.MASTER_KEYS, MASTER_KEY_ID=settings.MASTER_KEY_ID)

    import datetime as dt

    from analysis.models import Analysis, Finding
    from analysis.reports import report_sign
    from clinics import services as clinic_services
    from clinics.models import Role
    from clinics.tenancy import clinic_scope
    from config.celery import app as celery_app
    from dicom.services import dicom_node_configure
    from patients.services import patient_create

    celery_app.conf.task_always_eager = True
    orthanc = PrivateOrthanc(work / "orthanc")
    orthanc.start()
    clinic = clinic_services.clinic_create(name="Bench clinic", slug="bench")
    with clinic_scope(clinic.id):
        dentist = clinic_services.member_add(
            email="dentist@bench.test", role=Role.DENTIST, password="correct-horse-battery-staple-42"
        ).user
        patient_create(external_id="P-1", given_name="Bench", family_name="Patient", date_of_birth=dt.date(1980, 1, 1))
        dicom_node_configure(
            called_ae="BENCH",
            calling_aes=["SENSOR"],
            dest_ae=orthanc.aet,
            dest_host="127.0.0.1",
            dest_port=orthanc.dicom_port,
            send_preliminary=True,
        )

    real = sorted(Path(args.xrays).glob("*.jpg"))[: max(args.images, args.visit)] if Path(args.xrays).is_dir() else []
    results_source = f"{len(real)} real X-rays from {args.xrays}" if real else f"synthetic {cols}x{rows}"

    def dataset(patient_id: str, study: str, index: int):  # noqa: ANN202
        if not real:
            return xray_dataset(patient_id=patient_id, study_uid=study, rows=rows, cols=cols)
        import numpy as np
        from PIL import Image

        grey = np.asarray(Image.open(real[index % len(real)]).convert("L"), dtype=np.uint16) * 16  # 12 bits stored
        ds = xray_dataset(patient_id=patient_id, study_uid=study, rows=grey.shape[0], cols=grey.shape[1])
        ds.PixelData = grey.astype("<u2").tobytes()
        return ds

    def datasets(patient_id: str, n: int, study: str) -> list:
        return [dataset(patient_id, study, i) for i in range(n)]

    def send_all(port: int, items: list) -> tuple[float, list[int]]:
        ae = AE(ae_title="SENSOR")
        ae.add_requested_context(items[0].SOPClassUID, "1.2.840.10008.1.2.1")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 600
        assoc = ae.associate("127.0.0.1", port, ae_title="BENCH")
        assert assoc.is_established
        started = time.perf_counter()
        statuses = [int(assoc.send_c_store(ds).Status) for ds in items]
        elapsed = time.perf_counter() - started
        assoc.release()
        return elapsed, statuses

    results: dict = {"machine": machine(), "images": args.images}
    try:
        with dicom_scp(Path(os.environ["DENTALSCAN_IMAGES_DIR"])) as port:
            # warm-up: load the model once in the receiver (not counted)
            send_all(port, datasets("P-1", 1, generate_uid()))
            inbox_s, statuses = send_all(port, datasets("NOBODY", args.images, generate_uid()))
            assert set(statuses) == {0}, statuses
            matched_s, statuses = send_all(port, datasets("P-1", args.images, generate_uid()))
            assert set(statuses) == {0}, statuses
            results["inbox_images_per_s"] = args.images / inbox_s
            results["matched_analysed_images_per_s"] = args.images / matched_s

            # a visit of N X-rays: C-STORE -> analysed -> preliminary SR; signature -> signed SR
            with clinic_scope(clinic.id):
                from patients.models import Visit

                Visit.objects.all().update(locked=True)  # the earlier rounds' visit is closed: a new visit starts
            before = {i["id"] for i in orthanc.instances()}
            study = generate_uid()
            visit_items = datasets("P-1", args.visit, study)
            t0 = time.perf_counter()
            send_all(port, visit_items)
            sops = {ds.SOPInstanceUID for ds in visit_items}
            with clinic_scope(clinic.id):
                while Analysis.objects.filter(image__dicom_instance__isnull=False, status__in=["queued", "running"]):
                    time.sleep(0.05)
            t_analysed = time.perf_counter() - t0

            def study_objects() -> list[dict]:
                return [i for i in orthanc.instances() if i["id"] not in before and i["StudyInstanceUID"] == study]

            while not any(i.get("Modality") == "SR" for i in study_objects()):
                time.sleep(0.05)
            t_preliminary = time.perf_counter() - t0
            with clinic_scope(clinic.id):
                from dicom.models import DicomInstance

                visit_id = DicomInstance.objects.filter(image__isnull=False).latest("received_at").image.visit_id
                # the dentist's decisions on the suggestions shown (the clinic's thresholds): the most probable one per
                # image confirmed, the others rejected
                from analysis.selectors import visit_findings

                shown = visit_findings(Visit.objects.get(pk=visit_id))
                confirmed = [found[0].pk for found in shown.values() if found]
                rejected = [f.pk for found in shown.values() for f in found[1:]]
                Finding.objects.filter(pk__in=confirmed).update(status="confirmed")
                Finding.objects.filter(pk__in=rejected).update(status="rejected", reason="not_present")
                findings_in_sr = len(confirmed) + len(rejected)
                visit = Visit.objects.get(pk=visit_id)
                visit.locked = False
                Visit.objects.filter(pk=visit_id).update(locked=False)
                t1 = time.perf_counter()
                if os.environ.get("BENCH_PROFILE"):
                    import cProfile
                    import pstats

                    profile = cProfile.Profile()
                    profile.runcall(report_sign, visit=visit, signer=dentist)
                    pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
                else:
                    report_sign(visit=visit, signer=dentist)
            while sum(1 for i in study_objects() if i.get("Modality") == "SR") < 2:
                time.sleep(0.05)
            t_signed = time.perf_counter() - t1
            assert sops  # the visit's images were all sent
            results.update(
                visit_images=args.visit,
                visit_cstore_to_analysed_s=t_analysed,
                visit_cstore_to_preliminary_sr_s=t_preliminary,
                visit_sign_to_signed_sr_s=t_signed,
                objects_in_study=len(study_objects()),
                findings_decided_in_visit=findings_in_sr,
                source=results_source,
            )
    finally:
        orthanc.close()

    print(machine_line(results["machine"]))
    print(
        table(
            ["measure", "value"],
            [
                [f"inbox: images/s over one association ({results['source']})", results["inbox_images_per_s"]],
                ["matched + analysed in-process: images/s", results["matched_analysed_images_per_s"]],
                [f"visit of {args.visit}: C-STORE start -> all analysed (s)", results["visit_cstore_to_analysed_s"]],
                [
                    f"visit of {args.visit}: C-STORE start -> preliminary SR in Orthanc (s)",
                    results["visit_cstore_to_preliminary_sr_s"],
                ],
                [
                    f"signature -> signed SR + SC in Orthanc (s; {results['findings_decided_in_visit']} findings)",
                    results["visit_sign_to_signed_sr_s"],
                ],
            ],
        )
    )
    print(f"written: {write_json('dicom.json', results).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
