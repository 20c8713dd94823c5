"""Kill, restart and break things under real load, then prove nothing was lost or duplicated.

After every scenario: each accepted upload (201) has exactly one analysis, finished (``done``); no
image row lacks a blob and no blob lacks an image row (no orphans, no partial rows); no analysis or
finding lacks its image; ``manage.py verify_audit_chain`` exits 0.

Timings are shortened through the environment: redelivery after 6 s (visibility timeout), a claim
is stale after 8 s, the lost-message sweep runs every 2 s for analyses queued over 4 s.
"""

from __future__ import annotations

import pytest

from tests.stack import Api, Stack, invariant_violations, png, wait_until

from .conftest import Cluster

pytestmark = [pytest.mark.faults]

FAST = {
    "CELERY_VISIBILITY_TIMEOUT": "6",
    "ANALYSIS_STALE_AFTER_SECONDS": "8",
    "ANALYSIS_REQUEUE_AFTER_SECONDS": "4",
    "ANALYSIS_REQUEUE_EVERY_SECONDS": "2",
}


def upload_many(api: Api, patient_id: str, n: int, seed: int, stack: Stack | None = None) -> dict[str, str]:
    """Upload n photos; returns {image id: analysis id} of the accepted ones (all must be accepted)."""
    accepted = {}
    for i in range(n):
        status, body = api.upload(patient_id, png(seed + i))
        assert status == 201, (status, body, stack.log("web.log")[-4000:] if stack else "")
        accepted[body["id"]] = body["analysis"]["id"]
    return accepted


def wait_running(api: Api, analysis_ids: list[str], timeout: float = 90) -> None:
    wait_until(
        lambda: any(api.analysis_status(a) == "running" for a in analysis_ids),
        timeout=timeout,
        what="a worker to claim an analysis",
        interval=0.1,
    )


def assert_recovered(stack: Stack, api: Api, accepted: dict[str, str], procs: list = (), timeout: float = 120) -> dict:
    final = api.wait_done(list(accepted.values()), timeout=timeout, procs=procs)
    state = stack.state()
    problems = invariant_violations(state, set(accepted))
    logs = "\n".join(f"--- {p.log_path.name}\n{p.log_path.read_text(errors='replace')[-3000:]}" for p in stack.procs)
    assert set(final.values()) == {"done"} and not problems, f"{final}\n{problems}\n{logs}"
    # Each accepted upload's thumbnail is served, made by the first read where no worker made it (its message may
    # have died with the broker): nothing of an upload depends on a message surviving.
    for image_id in accepted:
        thumbnail = api.get(f"/api/v1/images/{image_id}/file", variant="thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8", thumbnail.content[:200]
    state = stack.state()
    problems = invariant_violations(state, set(accepted))
    made = [i for i in state["images"] if i["preview_key"] and i["thumbnail_key"]]
    assert not problems and len(made) == len(state["images"]), f"{problems}\n{state['images']}"
    audit = stack.verify_audit_chain()
    assert audit.returncode == 0, audit.stdout + audit.stderr
    return state


def test_worker_sigkill_mid_task_loses_nothing(stack: Stack, fault_cluster: Cluster) -> None:
    stack.extra_env.update(FAST)
    api = Api(stack.start_web(), fault_cluster.api_key)
    accepted = upload_many(api, api.create_patient("fault-a"), 4, seed=100)
    first = stack.start_worker(name="w1", ANALYSIS_DEBUG_SLEEP_SECONDS="4")
    wait_running(api, list(accepted.values()))
    Stack.kill(first)  # SIGKILL while it holds the claims, before any result is written
    # The broker redelivers the unacked message only after a restore pass (about 100 s here); the beat's
    # sweep re-sends it as soon as the claim is stale (8 s). Either way the claim is taken over once.
    second = stack.start_worker(name="w2", beat=True, ANALYSIS_DEBUG_SLEEP_SECONDS="0.5")
    state = assert_recovered(stack, api, accepted, procs=[second])
    assert max(a["attempts"] for a in state["analyses"]) >= 2  # the killed claim was taken over


def test_redis_restart_with_jobs_queued_loses_nothing(stack: Stack, fault_cluster: Cluster) -> None:
    stack.extra_env.update(FAST)
    api = Api(stack.start_web(), fault_cluster.api_key)
    patients = [api.create_patient(f"fault-b{i}") for i in range(3)]
    worker = stack.start_worker(name="w", beat=True, ANALYSIS_DEBUG_SLEEP_SECONDS="3")
    accepted = upload_many(api, patients[0], 3, seed=200)
    wait_running(api, list(accepted.values()))
    accepted |= upload_many(api, patients[1], 3, seed=210)  # queued behind the running batch
    fault_cluster.redis.stop()  # a non-persistent broker: every queued and unacked message is gone
    try:
        status, body = api.upload(patients[2], png(220))  # accepted while the broker is down
    finally:
        fault_cluster.redis.start()
    assert status == 201, (status, body)  # committed: the client must not be told to retry
    accepted[body["id"]] = body["analysis"]["id"]
    assert_recovered(stack, api, accepted, procs=[worker])


def test_postgres_restart_while_a_worker_runs_loses_nothing(stack: Stack, fault_cluster: Cluster) -> None:
    stack.extra_env.update(FAST)
    api = Api(stack.start_web(), fault_cluster.api_key)
    patient = api.create_patient("fault-c")
    worker = stack.start_worker(name="w", ANALYSIS_DEBUG_SLEEP_SECONDS="3")
    accepted = upload_many(api, patient, 3, seed=300)
    wait_running(api, list(accepted.values()))
    fault_cluster.pg.restart(mode="fast", down_seconds=2)  # the worker's connection dies mid-task
    status, body = api.upload(patient, png(310))
    if status == 201:  # the database may already be back: then it must be analysed like the rest
        accepted[body["id"]] = body["analysis"]["id"]
    accepted |= upload_many(api, patient, 2, seed=320, stack=stack)
    assert_recovered(stack, api, accepted, procs=[worker])


def test_storage_write_failure_mid_upload_leaves_nothing_behind(stack: Stack, fault_cluster: Cluster) -> None:
    switch = stack.workdir / "storage-fault"
    stack.extra_env.update(FAST, FAULT_STORAGE_SWITCH=str(switch))
    api = Api(stack.start_web(), fault_cluster.api_key)
    patient = api.create_patient("fault-d")
    worker = stack.start_worker(name="w")
    accepted = upload_many(api, patient, 2, seed=400)
    switch.touch()  # from now on the second blob of each upload fails half-written (disk full)
    failures = [api.upload(patient, png(410 + i)) for i in range(3)]
    assert all(status >= 500 for status, _ in failures), failures
    assert all(body is None or "error" in body for _, body in failures), failures
    switch.unlink()
    accepted |= upload_many(api, patient, 2, seed=420)
    assert_recovered(stack, api, accepted, procs=[worker])
