"""DICOM files made in the test with pydicom: a 16-bit digital intraoral X-ray, a VL photograph, and hostile
variants. Written as Part 10 files, as the practice's X-ray software would send them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalIntraOralXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    VLPhotographicImageStorage,
    generate_uid,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _base(sop_class: str, *, patient_id: str, name: str, birth: str, study_uid: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = birth
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = dt.date.today().strftime("%Y%m%d")
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "Test sensor"
    return ds


def xray_dataset(
    *,
    patient_id: str,
    name: str = "Marker^Alicesonmarker",
    birth: str = "19800517",
    study_uid: str,
    rows: int = 384,
    cols: int = 512,
) -> Dataset:
    """A 16-bit (12 bits stored) DX intraoral X-ray with a bright rectangle (a filling) on a dark gradient."""
    ds = _base(
        DigitalIntraOralXRayImageStorageForPresentation,
        patient_id=patient_id,
        name=name,
        birth=birth,
        study_uid=study_uid,
        modality="IO",
    )
    rng = np.random.default_rng(7)
    arr = (np.linspace(300, 1800, cols)[None, :] + rng.normal(0, 40, (rows, cols))).clip(0, 4095)
    arr[rows // 3 : rows // 2, cols // 3 : cols // 2] = 3900
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.astype("<u2").tobytes()
    return ds


def photo_dataset(
    *,
    patient_id: str,
    name: str = "Marker^Alicesonmarker",
    birth: str = "19800517",
    study_uid: str,
    rows: int = 240,
    cols: int = 320,
) -> Dataset:
    """A VL photographic image (intraoral camera): 8-bit RGB, pinkish gums and white teeth."""
    ds = _base(
        VLPhotographicImageStorage, patient_id=patient_id, name=name, birth=birth, study_uid=study_uid, modality="XC"
    )
    arr = np.zeros((rows, cols, 3), np.uint8)
    arr[...] = (190, 90, 100)
    arr[rows // 4 : rows // 2, :] = (235, 230, 215)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = arr.tobytes()
    return ds


def secondary_capture_dataset(*, patient_id: str, study_uid: str) -> Dataset:
    ds = xray_dataset(patient_id=patient_id, study_uid=study_uid, rows=64, cols=64)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path
