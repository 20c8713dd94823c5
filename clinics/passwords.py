"""Password rule beyond Django's: a breached password dressed up is still a breached password.

Django's ``CommonPasswordValidator`` refuses the 20,000 most common passwords from breach corpora, but
only verbatim: "Password123!", "Welcome2024!" or "iloveyou1234" pass it, and credential-stuffing lists
try exactly those first. ``BreachedPatternValidator`` reduces a password to its core -- lower case,
common character substitutions undone (0->o, 1->i, 3->e, 4->a, 5->s, 7->t, @->a, $->s), leading and
trailing digits, punctuation and spaces removed -- and refuses it when that core is itself on the common
list or is a word about this product or trade. Nothing leaves the server (no online breach lookup).
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.password_validation import CommonPasswordValidator
from django.core.exceptions import ValidationError

_UNLEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_EDGES = re.compile(r"^[\W\d_]+|[\W\d_]+$")
CONTEXT_WORDS = frozenset({"dentalscan", "dental", "dentist", "clinic", "tooth", "teeth", "password", "passwort"})


def password_cores(password: str) -> set[str]:
    """``"P@ssw0rd2024!"`` -> ``{"p@ssw0rd", "password"}``: edges of digits/symbols off, substitutions undone."""
    stripped = _EDGES.sub("", password.lower())
    return {stripped, stripped.translate(_UNLEET)} - {""}


class BreachedPatternValidator:
    def __init__(self) -> None:
        self._common = CommonPasswordValidator().passwords

    def validate(self, password: str, user: Any = None) -> None:
        if any(core in self._common or core in CONTEXT_WORDS for core in password_cores(password)):
            raise ValidationError(
                "This password is a common password with digits or symbols added; choose a passphrase of "
                "unrelated words instead.",
                code="password_breached_pattern",
            )

    def get_help_text(self) -> str:
        return "Your password cannot be a common password with digits or symbols around it."
