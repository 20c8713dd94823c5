"""The encryption primitives and the master-key provider every app uses (``core.crypto``, ``core.key_providers``)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core import crypto
from core.key_providers import StaticKeyProvider, key_provider, reset_key_provider

ROOT = Path(__file__).resolve().parents[2]


def test_a_ciphertext_decrypts_only_with_its_key_and_associated_data() -> None:
    key = crypto.new_data_key()
    blob = crypto.encrypt(key, b"pixels", b"image:1:original")
    assert b"pixels" not in blob
    assert crypto.decrypt(key, blob, b"image:1:original") == b"pixels"
    with pytest.raises(crypto.IntegrityFailure):
        crypto.decrypt(key, blob, b"image:2:original")  # moved onto another object
    with pytest.raises(crypto.IntegrityFailure):
        crypto.decrypt(crypto.new_data_key(), blob, b"image:1:original")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(crypto.IntegrityFailure):
        crypto.decrypt(key, flipped, b"image:1:original")
    with pytest.raises(crypto.IntegrityFailure):
        crypto.decrypt(key, blob[:20], b"image:1:original")


def test_blind_index_is_keyed_and_normalised() -> None:
    key = crypto.new_data_key()
    assert crypto.blind_index(key, "  Van  der Berg ") == crypto.blind_index(key, "van der berg")
    assert crypto.blind_index(key, "van der berg") != crypto.blind_index(crypto.new_data_key(), "van der berg")


@pytest.mark.parametrize("module", ["core.crypto", "core.errors", "core.conditions"])
def test_plain_core_modules_import_no_django(module: str) -> None:
    """analysis.ml and patients.intake import these, and must stay free of Django."""
    code = f"import sys, {module}; sys.exit(1 if any(m.split('.')[0] == 'django' for m in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_static_provider_wraps_with_the_current_key_and_names_unknown_ones() -> None:
    keys = ",".join(f"{name}:{base64.b64encode(bytes([n]) * 32).decode()}" for n, name in enumerate(["old", "new"]))
    provider = StaticKeyProvider(keys=keys, current="new")
    wrapped = provider.wrap("new", b"k" * 32, b"datakey:1")
    assert provider.unwrap("new", wrapped, b"datakey:1") == b"k" * 32
    with pytest.raises(crypto.UnknownMasterKey):
        provider.unwrap("gone", wrapped, b"datakey:1")
    with pytest.raises(ImproperlyConfigured):
        StaticKeyProvider(keys=keys, current="missing")


@pytest.mark.parametrize("path", ["core.key_providers.StaticKeyProvider", "patients.crypto.StaticKeyProvider"])
def test_key_provider_setting_accepts_the_current_and_the_former_dotted_path(settings: object, path: str) -> None:
    """Deployments whose environment still says KEY_PROVIDER=patients.crypto.StaticKeyProvider keep working."""
    settings.KEY_PROVIDER = path  # type: ignore[attr-defined]
    reset_key_provider()
    try:
        assert isinstance(key_provider(), StaticKeyProvider)
    finally:
        reset_key_provider()
