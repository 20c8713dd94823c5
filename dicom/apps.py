from django.apps import AppConfig


class DicomConfig(AppConfig):
    name = "dicom"
    verbose_name = "DICOM: receiving from imaging systems, sending reviewed results back"

    def ready(self) -> None:
        # Imported here, not at the top: both import models, which exist only once the apps are loaded.
        # ``tasks`` registers the send task in every process; ``services`` is what the analysis app calls on signing
        # (registered below: analysis imports nothing of this app).
        from analysis.reports import report_signed_register
        from analysis.services import analysis_finished_register
        from patients.exports import clinical_record_register
        from patients.orphans import blob_references_register
        from patients.services import patient_erase_register, quota_usage_register

        from . import tasks  # noqa: F401
        from .exports import patient_dicom_record
        from .services import analysis_finished, held_blobs, held_bytes, inbox_erase_for, report_signed

        report_signed_register(report_signed)
        analysis_finished_register(analysis_finished)
        blob_references_register(held_blobs)  # the inbox's held files: not orphans
        clinical_record_register(patient_dicom_record)  # the patient's export: what the imaging system sent
        quota_usage_register(held_bytes)  # the inbox's held files count in the clinic's storage quota
        patient_erase_register(inbox_erase_for)  # an erased patient's files waiting in the inbox go too
