"""Output serializers for lists that show many rows: the row is built from values already at hand, skipping DRF's
generic per-field attribute lookup (its ``get_attribute`` and ``Mapping`` checks cost more than the values
themselves on a page of 50 rows), while each value still goes through its declared field's ``to_representation``,
so the JSON is the same as DRF's (``tests/test_direct_output.py`` compares the two for every such serializer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rest_framework import serializers


class DirectOutput(serializers.Serializer):
    """Subclasses build ``values`` (every declared field's name: the attribute it reads, or, for a
    ``SerializerMethodField``, what the method gives) and return ``self.represent(values)``."""

    def represent(self, values: Mapping[str, Any]) -> dict[str, Any]:
        fields: list[tuple[str, Callable[[Any], Any] | None]] | None = self.__dict__.get("_direct_fields")
        if fields is None:
            fields = self.__dict__["_direct_fields"] = [
                (f.field_name, None if isinstance(f, serializers.SerializerMethodField) else f.to_representation)
                for f in self._readable_fields
            ]
        out = {}
        for name, to_representation in fields:
            value = values[name]
            out[name] = value if value is None or to_representation is None else to_representation(value)
        return out
