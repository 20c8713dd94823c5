"""Same work for every address: the time of the invitation (members form) and of the password-reset form, for an
address that has an account and one that has none, side by side.

Starts the embedded default (``config.settings.local``: SQLite, tasks in-process without a broker, mail to the
console) as ``make run`` does, with the rate limits lifted (``bench/settings.py``), on a fresh folder; seeds the demo
clinics and 200 more accounts in the second clinic; logs in as the first clinic's admin (password and TOTP); then
sends 200 pairs to each form, each pair one known and one unknown address in random order, timing each request from
the client (until the whole answer has arrived). The mails themselves go after the response
(``core.queue.task_send_after_response``); the script counts them in the server's output to show they went.

    python bench/bench_account_timing.py [--pairs 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, machine_line, table, write_json  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.stack import EmbeddedStack  # noqa: E402

ACCOUNTS = """
import json
from django.contrib.auth.hashers import make_password
from clinics.models import Clinic, Membership, User
clinic = Clinic.objects.order_by("created_at")[1]
password = make_password("bench-known-account-2027")
users = User.objects.bulk_create(
    [User(email=f"known{n}@bench.example", password=password, full_name=f"Known {n}") for n in range(COUNT)]
)
Membership.unscoped.bulk_create(
    [Membership(clinic=clinic, user=u, role="staff", display_name=u.full_name, created_account=True) for u in users]
)
print(json.dumps([u.email for u in users]))
"""


def _csrf(session, url: str) -> str:  # noqa: ANN001
    page = session.get(url, timeout=30)
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    if not found:
        raise SystemExit(f"no form at {url}: {page.status_code}")
    return found[1]


def _login(base: str, admin: dict[str, str]):  # noqa: ANN202
    import pyotp
    import requests

    session = requests.Session()
    token = _csrf(session, f"{base}/login/")
    step = session.post(
        f"{base}/login/",
        {"email": admin["email"], "password": admin["password"], "csrfmiddlewaretoken": token},
        allow_redirects=False,
        timeout=30,
    )
    if step.status_code != 302:
        raise SystemExit(f"log-in answered {step.status_code}")
    token = _csrf(session, f"{base}/login/verify/")
    code = pyotp.TOTP(admin["totp_secret"]).now()
    done = session.post(
        f"{base}/login/verify/", {"code": code, "csrfmiddlewaretoken": token}, allow_redirects=False, timeout=30
    )
    if done.status_code not in (200, 302):
        raise SystemExit(f"second factor answered {done.status_code}")
    return session


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=20)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "p10": q[1],
        "p25": statistics.quantiles(ordered, n=4)[0],
        "median": statistics.median(ordered),
        "p75": statistics.quantiles(ordered, n=4)[2],
        "p90": q[17],
        "max": ordered[-1],
    }


def main() -> int:
    import requests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    info = machine()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-account-timing-"))
    stack = EmbeddedStack(
        workdir=workdir, extra_env={"BENCH_EMBEDDED": "1", "RATE_LIMITS_DISABLED": "1", "ANALYSIS_WARMUP": "off"}
    )
    stack.settings_module = "bench.settings"
    total = args.pairs + args.warmup
    try:
        seeded = stack.prepare()
        known = __import__("json").loads(stack.python(ACCOUNTS.replace("COUNT", str(2 * total))))
        base = stack.start_web()
        admin = _login(base, seeded["clinics"][0]["users"]["clinic_admin"])
        anonymous = requests.Session()
        times: dict[tuple[str, str], list[float]] = {}
        statuses: dict[tuple[str, str], set[int]] = {}

        def send(form: str, kind: str, email: str, record: bool) -> None:
            if form == "invite":
                session, url, data = admin, f"{base}/clinic/members/", {"email": email, "role": "staff"}
            else:
                session, url, data = anonymous, f"{base}/password-reset/", {"email": email}
            data["csrfmiddlewaretoken"] = session.cookies.get("csrftoken") or _csrf(session, url)
            started = time.perf_counter()
            response = session.post(url, data, allow_redirects=False, timeout=60, headers={"Referer": url})
            elapsed = (time.perf_counter() - started) * 1000
            if record:
                times.setdefault((form, kind), []).append(elapsed)
                statuses.setdefault((form, kind), set()).add(response.status_code)

        for form in ("invite", "password_reset"):
            _csrf(
                admin if form == "invite" else anonymous,
                f"{base}/clinic/members/" if form == "invite" else f"{base}/password-reset/",
            )
            for i in range(total):
                pair = [
                    ("known", known[i if form == "invite" else total + i]),
                    ("unknown", f"nobody{form}{i}@bench.example"),
                ]
                rng.shuffle(pair)
                for kind, email in pair:
                    send(form, kind, email, record=i >= args.warmup)
        time.sleep(2)  # the last mails go after the last response
        log = stack.log("web.log")
        mails = {"invite": log.count("invites you to join"), "password_reset": log.count("Your DentalScan password")}
    finally:
        stack.stop_all()

    rows, results = [], {}
    for form in ("invite", "password_reset"):
        k, u = _summary(times[(form, "known")]), _summary(times[(form, "unknown")])
        results[form] = {
            "known": k,
            "unknown": u,
            "median_difference_ms": k["median"] - u["median"],
            "statuses": {kind: sorted(statuses[(form, kind)]) for kind in ("known", "unknown")},
            "mails_sent": mails[form],
        }
        for kind, s in (("known", k), ("unknown", u)):
            rows.append([form, kind, s["n"], s["min"], s["p10"], s["p25"], s["median"], s["p75"], s["p90"], s["max"]])
    print(machine_line(info))
    print(f"{args.pairs} pairs per form (after {args.warmup} warm-up pairs), milliseconds from request to full answer:")
    print(table(["form", "address", "n", "min", "p10", "p25", "median", "p75", "p90", "max"], rows))
    for form, r in results.items():
        print(
            f"{form}: median known - unknown = {r['median_difference_ms']:+.2f} ms; statuses {r['statuses']}; "
            f"mails sent after the responses: {r['mails_sent']}"
        )
    path = write_json(
        "account_timing.json",
        {"machine": info, "pairs": args.pairs, "warmup": args.warmup, "results": results},
        args.out,
    )
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
