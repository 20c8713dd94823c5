"""The test bed itself: a private Orthanc takes a C-STORE from dcmtk's storescu and shows it in its REST API."""

from __future__ import annotations

import subprocess

from pydicom.uid import generate_uid

from .conftest import needs_dicom_tools
from .factories import write, xray_dataset


@needs_dicom_tools
def test_private_orthanc_stores_what_storescu_sends(orthanc, tmp_path) -> None:
    assert orthanc.get("/instances") == []
    study = generate_uid()
    path = write(xray_dataset(patient_id="P-1", study_uid=study), tmp_path / "x.dcm")
    run = subprocess.run(
        ["storescu", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    [stored] = orthanc.instances()
    assert stored["StudyInstanceUID"] == study and stored["PatientID"] == "P-1"
    orthanc.stop()
    run = subprocess.run(
        ["storescu", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0  # stopped means stopped
