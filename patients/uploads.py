"""Upload handling that enforces the byte cap while streaming and never writes temporary files."""

from __future__ import annotations

from functools import cached_property
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.urls import Resolver404, resolve
from django.utils.datastructures import MultiValueDict

# URL names whose requests carry several files: their whole request may reach UPLOAD_BATCH_MAX_BYTES (each file
# still at most IMAGE_MAX_BYTES).
BATCH_ROUTES = frozenset({"api:patient-image-batch"})


class LimitedMemoryUploadHandler(FileUploadHandler):
    """Keeps each uploaded file in memory and stops reading as soon as it passes IMAGE_MAX_BYTES (or a batch
    request as soon as it passes UPLOAD_BATCH_MAX_BYTES in all).

    A request whose declared length is already over the cap is not read at all: its form data is empty
    (Django's "handled raw input" path; a ``StopUpload`` raised there would escape the parser as a 500).
    Either way the request is marked ``upload_too_large`` so the view can answer 413 with a clear error.
    """

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.files = 0  # files of this request so far
        self.received = 0  # their bytes so far

    def handle_raw_input(
        self, input_data: Any, META: dict, content_length: int, boundary: bytes, encoding: str | None = None
    ) -> tuple[QueryDict, MultiValueDict] | None:
        if content_length > self._files_cap() + 64 * 1024:  # room for the form's other fields and boundaries
            self.request.upload_too_large = True
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    @cached_property
    def _batch(self) -> bool:
        """Whether this request is on a route that takes several files (``BATCH_ROUTES``)."""
        match = getattr(self.request, "resolver_match", None)
        if match is None:  # the body is being read before the URL was resolved
            try:
                match = resolve(self.request.path_info)
            except Resolver404:
                return False
        return match.view_name in BATCH_ROUTES

    def _files_cap(self) -> int:
        """Bytes the files of this request may hold together: one file's limit, or the batch limit."""
        return settings.UPLOAD_BATCH_MAX_BYTES if self._batch else settings.IMAGE_MAX_BYTES

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.files += 1
        if self._batch and self.files > settings.UPLOAD_BATCH_MAX_FILES:
            # A batch with more files than it may hold: stop reading now rather than after the whole body.
            self.request.upload_too_many_files = True
            raise StopUpload(connection_reset=False)
        self.buffer = BytesIO()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.received += len(raw_data)
        if start + len(raw_data) > settings.IMAGE_MAX_BYTES or self.received > self._files_cap():
            self.request.upload_too_large = True
            raise StopUpload(connection_reset=False)
        self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> InMemoryUploadedFile:
        self.buffer.seek(0)
        return InMemoryUploadedFile(
            file=self.buffer,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=file_size,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )
