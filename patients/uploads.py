"""Upload handling that enforces the byte cap while streaming and never writes temporary files."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict


class LimitedMemoryUploadHandler(FileUploadHandler):
    """Keeps each uploaded file in memory and stops reading as soon as it passes IMAGE_MAX_BYTES.

    A request whose declared length is already over the cap is not read at all: its form data is empty
    (Django's "handled raw input" path; a ``StopUpload`` raised there would escape the parser as a 500).
    Either way the request is marked ``upload_too_large`` so the view can answer 413 with a clear error.
    """

    def handle_raw_input(
        self, input_data: Any, META: dict, content_length: int, boundary: bytes, encoding: str | None = None
    ) -> tuple[QueryDict, MultiValueDict] | None:
        if content_length > settings.IMAGE_MAX_BYTES + 64 * 1024:
            self.request.upload_too_large = True
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.buffer = BytesIO()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if start + len(raw_data) > settings.IMAGE_MAX_BYTES:
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
