"""Password policy: at least 12 characters, not a common (breached) password -- verbatim or dressed up with
digits and symbols -- and not a word about the product or the trade."""

from __future__ import annotations

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from clinics import services
from clinics.models import Role, User
from clinics.passwords import password_cores
from clinics.tenancy import clinic_scope

from ..conftest import PASSWORD


@pytest.mark.parametrize(
    "password",
    [
        "Password123!",  # passes Django's own list: common word + digits + symbol
        "P@ssw0rd2024!!",
        "Welcome2024!",
        "Summer2025!!",
        "iloveyou1234",
        "!!Sunshine2026",
        "Dentalscan2026!",
        "password1234",  # verbatim on the list
        "short1!",  # too short
        "123456789012345",  # numbers only
    ],
)
def test_common_passwords_are_refused_even_dressed_up(password: str) -> None:
    with pytest.raises(ValidationError):
        validate_password(password)


@pytest.mark.parametrize(
    "password", [PASSWORD, "mauve lantern ferry quietly", "Tr0ub4dor&3xyz-Kq", "orbit-pebble-92-saffron"]
)
def test_passphrases_are_accepted(password: str) -> None:
    validate_password(password)


def test_the_core_of_a_password() -> None:
    assert password_cores("P@ssw0rd2024!") == {"p@ssw0rd", "password"}
    assert password_cores("2024!!") == set()


def test_adding_a_member_with_a_dressed_up_common_password_says_why(alice) -> None:  # noqa: ANN001
    with clinic_scope(alice.clinic.id), pytest.raises(ValidationError) as refused:
        services.member_add(email="new@alice.test", role=Role.STAFF, password="Welcome2024!")
    assert "common password with digits or symbols" in " ".join(refused.value.messages)
    assert not User.objects.filter(email="new@alice.test").exists()
