"""The storage SOP classes dental imaging uses, accepted by the receiver, and which modality each one is here."""

from __future__ import annotations

from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalIntraOralXRayImageStorageForPresentation,
    DigitalIntraOralXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    VLEndoscopicImageStorage,
    VLPhotographicImageStorage,
)

# SOP class UID -> "xray" | "photo" | "either" (secondary capture: decided by its photometric interpretation).
# Panoramic images (modality PX) are DX images; intraoral ones (IO) have their own class.
ACCEPTED_SOP_CLASSES: dict[str, str] = {
    DigitalXRayImageStorageForPresentation: "xray",
    DigitalXRayImageStorageForProcessing: "xray",
    DigitalIntraOralXRayImageStorageForPresentation: "xray",
    DigitalIntraOralXRayImageStorageForProcessing: "xray",
    ComputedRadiographyImageStorage: "xray",
    SecondaryCaptureImageStorage: "either",
    VLPhotographicImageStorage: "photo",
    VLEndoscopicImageStorage: "photo",
}


def modality_of(sop_class: str, photometric: str) -> str:
    kind = ACCEPTED_SOP_CLASSES[sop_class]
    if kind == "either":
        return "xray" if photometric.strip().upper().startswith("MONOCHROME") else "photo"
    return kind
