"""The DICOM receiver (C-STORE SCP), built on pynetdicom, run by ``manage.py dicom_scp``.

Invariants:
- An association is accepted only when its called AE title is a clinic's and its calling AE title (and address,
  when the clinic lists addresses) is on that clinic's allow-list (``services.association_check``); otherwise it is
  rejected during negotiation (A-ASSOCIATE-RJ, permanent, "called AE title not recognised" or "calling AE title not
  recognised") and the rejection is audited. The clinic found at negotiation is the only scope its instances are
  stored in.
- Only the storage SOP classes of dental imaging (``sopclasses``) in uncompressed little-endian transfer syntaxes
  are negotiated: other presentation contexts are refused during negotiation; an instance that passes negotiation
  but not the checks gets a failure status (``services.DicomRefusal``) and nothing is stored.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.acse import ACSE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from clinics import context
from clinics.tenancy import clinic_scope

from .models import DicomNode
from .services import (
    STATUS_PROCESSING_FAILURE,
    DicomRefusal,
    association_check,
    instance_receive,
    instance_too_large,
    preliminary_check,
)
from .sopclasses import ACCEPTED_SOP_CLASSES

logger = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# A-ASSOCIATE-RJ (result, source, reason): rejected-permanent, by the service user (PS3.8 9.3.4).
REJECT_CALLING = (0x01, 0x01, 0x03)
REJECT_CALLED = (0x01, 0x01, 0x07)


class PolicyACSE(ACSE):
    """ACSE that asks the clinic settings whether to accept, before pynetdicom's own checks and negotiation."""

    def _negotiate_as_acceptor(self) -> None:
        request = self.requestor.primitive
        called = str(request.called_ae_title or "").strip()
        calling = str(request.calling_ae_title or "").strip()
        address = str(self.assoc.requestor.address_info.address) if self.assoc.requestor.address_info else ""
        close_old_connections()
        context.client_ip_var.set(address or None)
        try:
            clinic_id = association_check(called_ae=called, calling_ae=calling, address=address)
        except Exception:  # noqa: BLE001 - the database is down: refuse (transient), never accept unchecked
            logger.exception("association check failed")
            self.send_reject(0x02, 0x01, 0x01)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        if clinic_id is None:
            node_known = association_check_known(called)
            connections.close_all()  # this thread's connection: no EVT_CONN_CLOSE follows a rejection
            self.send_reject(*(REJECT_CALLING if node_known else REJECT_CALLED))
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        self.assoc.dentalscan_clinic_id = clinic_id  # type: ignore[attr-defined]
        self.assoc.acceptor.ae_title = called
        super()._negotiate_as_acceptor()


def association_check_known(called: str) -> bool:
    return DicomNode.unscoped.filter(called_ae=called).exists()


class PolicyRequestHandler(RequestHandler):
    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.acse = PolicyACSE(assoc)
        return assoc


def _handle_store(event: Any) -> int:
    """One C-STORE: rebuild the Part 10 file from the negotiated transfer syntax and hand it to the services."""
    assoc = event.assoc
    clinic_id = getattr(assoc, "dentalscan_clinic_id", None)
    if clinic_id is None:  # not reachable: unchecked associations are rejected
        return 0x0124
    calling = str(assoc.requestor.ae_title).strip()
    close_old_connections()
    context.actor_var.set(context.Actor(system="dicom_scp"))
    address = assoc.requestor.address_info.address if assoc.requestor.address_info else None
    context.client_ip_var.set(str(address) if address else None)
    try:
        with clinic_scope(clinic_id):
            received = instance_receive(data=_part10(event, calling), calling_ae=calling)
        if received.instance.image_id:
            visits = getattr(assoc, "dentalscan_visits", set())
            visits.add(received.instance.image.visit_id)
            assoc.dentalscan_visits = visits
    except DicomRefusal as refusal:
        logger.info("C-STORE refused: %s (0x%04X)", refusal.code, refusal.status)
        return refusal.status
    except Exception:  # noqa: BLE001 - a failure of ours: the sender keeps the image and may retry
        logger.exception("C-STORE failed")
        return STATUS_PROCESSING_FAILURE
    finally:
        context.actor_var.set(None)
    return 0x0000


def _part10(event: Any, calling: str) -> bytes:
    """The received instance as a Part 10 file. The server writes each dataset to a temporary file as it arrives
    (pynetdicom's ``STORE_RECV_CHUNKED_DATASET``, with the file meta from the negotiated context), so a large one
    never sits in memory; one over ``IMAGE_MAX_BYTES`` is refused (0xA700, audited) without being read."""
    try:
        path = event.dataset_path
    except AttributeError:  # received whole into memory (not through ``server``)
        buffer = io.BytesIO()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = event.request.AffectedSOPClassUID
        meta.MediaStorageSOPInstanceUID = event.request.AffectedSOPInstanceUID
        meta.TransferSyntaxUID = event.context.transfer_syntax
        buffer.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buffer, meta, enforce_standard=True)
        buffer.write(event.request.DataSet.getvalue())
        return buffer.getvalue()
    size = path.stat().st_size
    if size > settings.IMAGE_MAX_BYTES:
        raise instance_too_large(size, calling_ae=calling)
    return path.read_bytes()


def _handle_released(event: Any) -> None:
    """The sender is done: send the preliminary report of each visit it added to (when the clinic wants one and
    the analyses are finished; otherwise the last analysis to finish sends it)."""
    assoc = event.assoc
    clinic_id = getattr(assoc, "dentalscan_clinic_id", None)
    visits = getattr(assoc, "dentalscan_visits", set())
    logger.info("association released: %d visit(s) received", len(visits))
    if clinic_id is None or not visits:
        return
    close_old_connections()
    context.actor_var.set(context.Actor(system="dicom_scp"))
    try:
        with clinic_scope(clinic_id):
            for visit_id in visits:
                preliminary_check(visit_id)
    except Exception:  # noqa: BLE001 - the images are stored; a preliminary report is a convenience
        logger.exception("preliminary report not queued")
    finally:
        context.actor_var.set(None)


def _handle_closed(event: Any) -> None:
    """Each association runs in its own thread, with its own database connection: closed with it."""
    connections.close_all()


def make_ae() -> AE:
    ae = AE(ae_title="DENTALSCAN")
    for sop_class in ACCEPTED_SOP_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.add_supported_context("1.2.840.10008.1.1", TRANSFER_SYNTAXES)  # Verification (C-ECHO)
    ae.maximum_associations = 20
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    return ae


def server(host: str, port: int, *, ssl_context: Any = None) -> ThreadedAssociationServer:
    """A started receiver in its own threads; ``shutdown()`` stops it."""
    _config.STORE_RECV_CHUNKED_DATASET = True  # each dataset to a temporary file as it arrives, not into memory
    ae = make_ae()
    handlers = [
        (evt.EVT_C_STORE, _handle_store),
        (evt.EVT_C_ECHO, lambda event: 0x0000),
        (evt.EVT_RELEASED, _handle_released),
        (evt.EVT_CONN_CLOSE, _handle_closed),
    ]
    srv = ae.make_server(
        (host, port),
        ae_title="DENTALSCAN",
        contexts=ae.supported_contexts,
        ssl_context=ssl_context,
        evt_handlers=handlers,
        server_class=ThreadedAssociationServer,
        request_handler=PolicyRequestHandler,
    )
    ae._servers.append(srv)  # as pynetdicom's own start_server does, so that srv.shutdown() can unregister it
    return srv
