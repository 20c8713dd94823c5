"""Log records carry the request's reference (``X-Request-ID``, also shown on the error page), so a fault a user
quotes can be found in the logs."""

from __future__ import annotations

import logging

from clinics import context


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = context.request_id_var.get() or "-"
        return True
