"""The upload page's script (``static/js/upload.js``) sends one ``Idempotency-Key`` per file and the same key
again when that file is retried, so a retry after a lost answer cannot store the file twice. Run with Node on a
minimal fake page (``upload_js_harness.mjs``); the browser journey is in ``tests/e2e``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("upload_js_harness.mjs")
NODE = shutil.which("node")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.mark.skipif(NODE is None, reason="needs Node.js")
@pytest.mark.parametrize("scenario", ["lost_then_ok", "server_error_then_ok", "throttled_then_ok"])
def test_a_retried_file_is_sent_with_the_same_key_and_each_file_with_its_own(scenario: str) -> None:
    run = subprocess.run(  # noqa: S603 - our own harness and script
        [NODE, str(HARNESS), str(ROOT / "static/js/upload.js"), scenario],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(run.stdout)
    sent = result["sent"]
    assert [s["name"] for s in sent] == ["first.png", "second.png", "first.png"]  # the first file, retried
    keys = [s["key"] for s in sent]
    assert all(isinstance(k, str) and UUID.match(k) for k in keys), keys  # crypto.randomUUID, valid for the API
    assert keys[0] == keys[2]  # the retry reuses its file's key
    assert keys[0] != keys[1]  # another file, another key
    assert result["rows"] == ["ok", "ok"]
