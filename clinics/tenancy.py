"""Tenant scoping that fails closed.

Invariant: every query of clinic-owned data goes through ``ClinicScopedManager`` (the default
manager ``objects`` of every ``ClinicScopedModel``), which filters by the clinic of the current
scope. With no scope set, any query raises ``TenantScopeError`` instead of returning rows of every
clinic. The scope is set from the authenticated identity only (a membership or an API key), by the
base view classes and by tasks (``clinic_scope(clinic_id)``), and is reset at the end of every
request by ``RequestContextMiddleware``.

Cross-clinic work (audit verification, maintenance commands) must say so explicitly through the
``unscoped`` manager.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import models

from .rls import rls_bypass

_current_clinic_id: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar("current_clinic_id", default=None)


class TenantScopeError(RuntimeError):
    """A clinic-owned table was queried with no clinic in scope, or for another clinic."""


def current_clinic_id() -> uuid.UUID | None:
    return _current_clinic_id.get()


def require_clinic_id() -> uuid.UUID:
    clinic_id = _current_clinic_id.get()
    if clinic_id is None:
        raise TenantScopeError("No clinic in scope: clinic-owned data cannot be queried.")
    return clinic_id


def activate_clinic(clinic_id: uuid.UUID | str | None) -> contextvars.Token:
    value = uuid.UUID(str(clinic_id)) if clinic_id is not None else None
    return _current_clinic_id.set(value)


def deactivate_clinic(token: contextvars.Token | None = None) -> None:
    if token is not None:
        _current_clinic_id.reset(token)
    else:
        _current_clinic_id.set(None)


@contextmanager
def clinic_scope(clinic_id: uuid.UUID | str) -> Iterator[uuid.UUID]:
    """Run a block (a task, a command) inside one clinic's scope."""
    token = activate_clinic(clinic_id)
    try:
        yield require_clinic_id()
    finally:
        _current_clinic_id.reset(token)


class ClinicScopedQuerySet(models.QuerySet):
    def create(self, **kwargs: Any) -> Any:
        clinic_id = require_clinic_id()
        given = kwargs.pop("clinic", None)
        given_id = kwargs.pop("clinic_id", None) or (given.pk if given is not None else None)
        if given_id is not None and uuid.UUID(str(given_id)) != clinic_id:
            raise TenantScopeError("Refusing to create a row for another clinic than the one in scope.")
        kwargs["clinic_id"] = clinic_id
        return super().create(**kwargs)


class ClinicScopedManager(models.Manager.from_queryset(ClinicScopedQuerySet)):  # type: ignore[misc]
    use_in_migrations = False

    def get_queryset(self) -> ClinicScopedQuerySet:
        return super().get_queryset().filter(clinic_id=require_clinic_id())


class UnscopedQuerySet(models.QuerySet):
    """The explicit cross-clinic escape hatch. On PostgreSQL its statements run with the row-level
    security bypass open (``clinics.rls``), so crossing clinics is possible exactly where the code says
    ``unscoped`` and nowhere else. Saves of single rows (``Model.save``) are not bypassed: they must
    match the clinic in scope."""

    def _fetch_all(self) -> None:
        with rls_bypass():
            super()._fetch_all()

    def iterator(self, chunk_size: int | None = None) -> Iterator[Any]:
        # Materialised inside the bypass: a half-consumed generator must not hold it open.
        with rls_bypass():
            rows = list(super().iterator(chunk_size=chunk_size))
        return iter(rows)

    def count(self) -> int:
        with rls_bypass():
            return super().count()

    def exists(self) -> bool:
        with rls_bypass():
            return super().exists()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with rls_bypass():
            return super().aggregate(*args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        with rls_bypass():
            return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        with rls_bypass():
            return super().delete()

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[Any]:
        with rls_bypass():
            return super().bulk_create(*args, **kwargs)


UnscopedManager = models.Manager.from_queryset(UnscopedQuerySet)


class ClinicScopedModel(models.Model):
    """Base of every clinic-owned model: ``objects`` is scoped, ``unscoped`` is the escape hatch."""

    clinic = models.ForeignKey("clinics.Clinic", on_delete=models.PROTECT, related_name="+", editable=False)

    objects = ClinicScopedManager()
    unscoped = UnscopedManager()  # noqa: DJ012 - a manager, not a field

    class Meta:
        abstract = True
        base_manager_name = "unscoped"
        default_manager_name = "objects"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A row can only be written inside its own clinic's scope.
        clinic_id = require_clinic_id()
        if self.clinic_id is None:
            self.clinic_id = clinic_id
        elif self.clinic_id != clinic_id:
            raise TenantScopeError("Refusing to write a row of another clinic than the one in scope.")
        super().save(*args, **kwargs)
