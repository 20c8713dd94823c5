"""Per-request context (request id, client IP, acting principal) read by the audit trail.

Set by ``RequestContextMiddleware`` and by the base views after authentication; tasks set the
principal themselves. Reset at the end of every request so nothing leaks into the next one.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type hints only: the context is read by every layer and needs no model at run time
    from .models import ApiKey, User


@dataclass(frozen=True)
class Actor:
    user: User | None = None
    api_key: ApiKey | None = None
    system: str = ""  # a command or task acting on its own, e.g. "seed_demo"

    @property
    def label(self) -> str:
        if self.user is not None:
            return self.user.email
        if self.api_key is not None:
            return f"api-key:{self.api_key.prefix}"
        return f"system:{self.system}" if self.system else ""


request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
client_ip_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_ip", default=None)
actor_var: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("actor", default=None)
# Values worth computing once per request (unwrapped data keys: ``patients.keys``); None outside a request, so a
# worker process keeps nothing from one task to the next.
request_cache_var: contextvars.ContextVar[dict[object, object] | None] = contextvars.ContextVar(
    "request_cache", default=None
)


def request_cache() -> dict[object, object] | None:
    return request_cache_var.get()


def reset() -> None:
    request_id_var.set("")
    client_ip_var.set(None)
    actor_var.set(None)
    request_cache_var.set(None)
