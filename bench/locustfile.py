"""The mixed rush-hour scenario for Locust, run by ``bench/bench_locust.py`` (which builds the data and starts the
server): staff search patients, open their images and upload photos; dentists open review pages and decide on
findings; an integrator polls the analyses. Every simulated person sends about one request per second
(``constant_throughput``).

Reads ``BENCH_LOCUST_DATA`` (a JSON file written by the driver: the API key, accounts, ids, a photo) and
``BENCH_LOCUST_MIX`` (``staff,dentists,integrators``: how many of each). Only ``127.0.0.1`` may be the host.
No Django here: it runs in Locust's own environment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import struct
import time
from pathlib import Path
from urllib.parse import urlparse

from locust import HttpUser, constant_throughput, events, task

DATA = json.loads(Path(os.environ["BENCH_LOCUST_DATA"]).read_text())
STAFF, DENTISTS, INTEGRATORS = (int(n) for n in os.environ.get("BENCH_LOCUST_MIX", "20,20,10").split(","))
UPLOAD_EVERY_S = float(os.environ.get("BENCH_LOCUST_UPLOAD_EVERY_S", "30"))
PHOTO = Path(DATA["photo"]).read_bytes()
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@events.test_start.add_listener
def _local_only(environment, **_kwargs) -> None:  # noqa: ANN001
    host = urlparse(environment.host or "").hostname
    if host != "127.0.0.1":
        raise SystemExit(f"this scenario runs against 127.0.0.1 only, not {host!r}")


def totp(secret_b32: str, at: float | None = None) -> str:
    """RFC 6238 (SHA-1, 30 s, 6 digits), as authenticator apps and ``clinics.mfa`` compute it."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", int((at or time.time()) // 30)), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


class _Accounts:
    """Hands each simulated person an account of their own (a TOTP code is accepted once per account)."""

    def __init__(self, accounts: list[dict]) -> None:
        self.accounts, self.next = accounts, 0

    def take(self) -> dict:
        account = self.accounts[self.next % len(self.accounts)]
        self.next += 1
        return account


_staff_accounts = _Accounts(DATA["staff"])
_dentist_accounts = _Accounts(DATA["dentists"])


class Staff(HttpUser):
    """Front desk: finds patients, looks at their images, uploads a photo now and then (API, user token)."""

    fixed_count = STAFF
    wait_time = constant_throughput(1)

    def on_start(self) -> None:
        account = _staff_accounts.take()
        response = self.client.post(
            "/api/v1/auth/token/", json={"email": account["email"], "password": account["password"]}, name="log in"
        )
        self.client.headers["Authorization"] = f"Bearer {response.json()['token']}"
        self.rng = random.Random(account["email"])
        self.next_upload = time.monotonic() + self.rng.uniform(0, UPLOAD_EVERY_S)

    @task(4)
    def patients_page(self) -> None:
        self.client.get(f"/api/v1/patients/?page={self.rng.randint(1, DATA['patient_pages'])}", name="patients list")

    @task(2)
    def search(self) -> None:
        self.client.post(
            "/api/v1/patients/search/", json={"query": f"Family{self.rng.randint(0, 96)}"}, name="patient search"
        )

    @task(3)
    def images(self) -> None:
        patient = self.rng.choice(DATA["patients"])
        self.client.get(f"/api/v1/patients/{patient}/images/", name="patient's images list")
        self.client.get(f"/api/v1/images/{self.rng.choice(DATA['images'])}/", name="image detail")
        if UPLOAD_EVERY_S and time.monotonic() >= self.next_upload:
            self.next_upload = time.monotonic() + UPLOAD_EVERY_S
            self.client.post(
                f"/api/v1/patients/{patient}/images/",
                files={"file": ("photo.jpg", PHOTO, "image/jpeg")},
                data={"modality": "photo"},
                name="upload photo",
            )


class Dentist(HttpUser):
    """Reviews visits in the browser pages (session log-in with a TOTP code) and decides on findings."""

    fixed_count = DENTISTS
    wait_time = constant_throughput(1)

    def on_start(self) -> None:
        account = _dentist_accounts.take()
        self.rng = random.Random(account["email"])
        page = self.client.get("/login/", name="log in")
        token = _CSRF_INPUT.search(page.text).group(1)
        self.client.post(
            "/login/",
            data={"email": account["email"], "password": account["password"], "csrfmiddlewaretoken": token},
            name="log in",
        )
        page = self.client.get("/login/verify/", name="log in")
        token = _CSRF_INPUT.search(page.text).group(1)
        self.client.post(
            "/login/verify/",
            data={"code": totp(account["totp_secret"]), "csrfmiddlewaretoken": token},
            name="log in",
        )

    @task(4)
    def review_page(self) -> None:
        self.client.get(f"/visits/{self.rng.choice(DATA['visits'])}/review/", name="review page")

    @task(1)
    def worklist(self) -> None:
        self.client.get("/visits/", name="worklist page")

    @task(3)
    def decide(self) -> None:
        finding = self.rng.choice(DATA["findings"])
        decision = self.rng.choice([{"decision": "confirm"}, {"decision": "reject", "reason": "not_present"}])
        self.client.post(
            f"/api/v1/findings/{finding}/review/",
            json=decision,
            headers={"X-CSRFToken": self.client.cookies.get("csrftoken", "")},
            name="finding decision",
        )


class Integrator(HttpUser):
    """A practice system polling for finished analyses with the clinic's API key."""

    fixed_count = INTEGRATORS
    wait_time = constant_throughput(1)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {DATA['api_key']}"
        self.rng = random.Random()

    @task(3)
    def analyses_page(self) -> None:
        self.client.get(f"/api/v1/analyses/?page={self.rng.randint(1, DATA['analysis_pages'])}", name="analyses list")

    @task(1)
    def finished(self) -> None:
        self.client.get("/api/v1/analyses/?status=done", name="analyses list, status=done")
