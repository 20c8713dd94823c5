"""The DICOM test bed: a private Orthanc as the PACS, dcmtk's ``storescu`` as the X-ray software."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .orthanc import PrivateOrthanc, missing_dicom_tools

MISSING = missing_dicom_tools()
needs_dicom_tools = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[PrivateOrthanc]:
    """A private Orthanc, started for the test and stopped (its storage removed) after it."""
    if MISSING:
        pytest.skip(MISSING)
    server = PrivateOrthanc(tmp_path / "orthanc")
    server.start()
    try:
        yield server
    finally:
        server.close()
