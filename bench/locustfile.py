"""The mixed rush-hour scenario for Locust, run by ``bench/bench_locust.py`` (which builds the data and starts the
server): staff search patients, open their images and upload photos; dentists open review pages and decide on
findings; an integrator polls the analyses. Every simulated person starts about one task a second, at
random moments independent of the others (``poisson_throughput``: exponential gaps between task starts, so the
arrivals of many people together are a Poisson stream, as independent people clicking are). ``BENCH_LOCUST_PACING=
constant`` uses Locust's ``constant_throughput`` instead: every person keeps the phase of the moment Locust started
them, and Locust starts them in batches (``--spawn-rate`` a second, each batch at one instant), so their requests
come in bursts with gaps between them (locustio/locust#1281): a burst of tens of simultaneous requests each second.

Reads ``BENCH_LOCUST_DATA`` (a JSON file written by the driver: the API key, accounts, ids, a photo) and
``BENCH_LOCUST_MIX`` (``staff,dentists,integrators``: how many of each). Only ``127.0.0.1`` may be the host.
No Django here: it runs in Locust's own environment.
"""

from __future__ import annotations

import base64
import functools
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

import gevent
from locust import HttpUser, constant_throughput, events, task

DATA = json.loads(Path(os.environ["BENCH_LOCUST_DATA"]).read_text())
STAFF, DENTISTS, INTEGRATORS = (int(n) for n in os.environ.get("BENCH_LOCUST_MIX", "20,20,10").split(","))
UPLOAD_EVERY_S = float(os.environ.get("BENCH_LOCUST_UPLOAD_EVERY_S", "30"))
PACING = os.environ.get("BENCH_LOCUST_PACING", "poisson")
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


def poisson_throughput(per_second: float):  # noqa: ANN201
    """A Locust ``wait_time``: task starts ``Exp(per_second)`` apart on average, each planned from the previous
    planned start (as ``constant_throughput`` plans from the previous one), so a slow answer does not lower the
    rate; a task that overran its slot starts the next one at once."""

    def wait_time(user: HttpUser) -> float:
        now = time.monotonic()
        planned = max(getattr(user, "_planned_start", now) + user.pacing_rng.expovariate(per_second), now)
        user._planned_start = planned
        return planned - now

    return wait_time


def pacing(per_second: float):  # noqa: ANN201
    return constant_throughput(per_second) if PACING == "constant" else poisson_throughput(per_second)


def _independent_person(on_start):  # noqa: ANN001, ANN202
    """Each request on a connection of its own (``Connection: close``), as the TLS proxy in front of gunicorn
    sends them by default (nginx speaks HTTP/1.0 to its upstream, without keep-alive): no request waits behind
    another in a gunicorn process that happens to hold its kept-alive connection while others are idle, and none
    is sent on a connection gunicorn is closing for idleness. Then, before a person's first task, a random wait of
    up to one period, so that people started in the same batch do not send their first requests at the same
    instant (only with the Poisson pacing)."""

    @functools.wraps(on_start)
    def wrapper(self: HttpUser) -> None:
        self.pacing_rng = random.Random()
        self.client.headers["Connection"] = "close"
        on_start(self)
        if PACING != "constant":
            gevent.sleep(self.pacing_rng.uniform(0, 1))

    return wrapper


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
    wait_time = pacing(1)

    @_independent_person
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
    wait_time = pacing(1)

    @_independent_person
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
    wait_time = pacing(1)

    @_independent_person
    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {DATA['api_key']}"
        self.rng = random.Random()

    @task(3)
    def analyses_page(self) -> None:
        self.client.get(f"/api/v1/analyses/?page={self.rng.randint(1, DATA['analysis_pages'])}", name="analyses list")

    @task(1)
    def finished(self) -> None:
        self.client.get("/api/v1/analyses/?status=done", name="analyses list, status=done")
