"""A private Orthanc (Debian's ``orthanc`` package) as the practice's PACS, for tests and the benchmark.

Its own configuration file in a temporary folder: its own HTTP and DICOM ports on 127.0.0.1, its own storage,
no peers and no known modalities (it accepts C-STORE from anyone, as a PACS on a practice network does), no
plugins, no HTTP authentication (loopback only, ``RemoteAccessAllowed`` off). It can be stopped and started again
on the same ports and storage (the "PACS down while sending" test).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC_AET = "ORTHANC"


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (shutil.which("orthanc"))


def missing_dicom_tools() -> str | None:
    """Why the DICOM test bed cannot run here (``make tools`` installs it as root), or None."""
    for tool, package in (("storescu", "dcmtk"), ("dciodvfy", "dicom3tools")):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian package {package}; `make tools` installs it)"
    if orthanc_binary() is None:
        return "Orthanc not found (Debian package orthanc; `make tools` installs it)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateOrthanc:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder or tempfile.mkdtemp(prefix="orthanc-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.aet = ORTHANC_AET
        self.process: subprocess.Popen[bytes] | None = None
        config = {
            "Name": "dentalscan-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {},
            "OrthancPeers": {},
            "Plugins": [],
            "StableAge": 1,
        }
        self.config_path = self.folder / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> None:
        binary = orthanc_binary()
        assert binary, "Orthanc is not installed"
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen([binary, str(self.config_path)], stdout=log, stderr=log, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:  # noqa: S310 - loopback test server
            body = answer.read()
        return json.loads(body) if answer.headers.get_content_type() == "application/json" else body

    def instances(self) -> list[dict[str, Any]]:
        """Every stored instance with its tags (``/instances/{id}/simplified-tags``) and id."""
        found = []
        for orthanc_id in self.get("/instances"):
            tags = self.get(f"/instances/{orthanc_id}/simplified-tags")
            found.append({"id": orthanc_id, **tags})
        return found

    def file(self, orthanc_id: str) -> bytes:
        return self.get(f"/instances/{orthanc_id}/file")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
