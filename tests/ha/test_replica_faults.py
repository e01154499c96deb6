"""Faults under load with two real gateway replicas on PostgreSQL (tests/ha/replicas.py): kill -9 of the
leading replica while jobs are in flight, and PostgreSQL restarted under a steady load. Figures are printed."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.ha.conftest import HaPostgres
from tests.ha.load import Load, wait_all_done
from tests.ha.replicas import Proxy, resume_supervisor, two_replicas
from tests.helpers import Deployment, wait_for

pytestmark = [pytest.mark.ha, pytest.mark.postgres]
JOBS = 200


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """Asked for before ``deployment``: closed after its destroy, which reaches the gateway through it."""
    made = Proxy()
    yield made
    made.close()


def test_kill_9_of_the_leading_replica_loses_no_accepted_job(proxy: Proxy, deployment: Deployment,
                                                            ha_postgres: HaPostgres) -> None:
    with two_replicas(deployment, ha_postgres, proxy) as replicas:
        first = replicas.replica(0)
        assert first is not None and first["leader"], first
        payload = {"sleep": 0.3}
        # on the replica to be killed: /run clients, and /runsync ones that always have a request in flight
        doomed = [Load(replicas.urls[0], "test-key", clients=2, payload=payload, limit=JOBS // 2).start(),
                  Load(replicas.urls[0], "test-key", clients=2, payload=payload, route="runsync").start()]
        survivor = Load(replicas.urls[1], "test-key", clients=2, payload=payload, limit=JOBS).start()
        loads = [*doomed, survivor]

        def accepted() -> dict[str, str]:
            return {job: idem for load in loads for job, idem in load.accepted.items()}

        wait_for(lambda: len(accepted()) >= JOBS // 2 and doomed[0].accepted, 60, interval=0.02,
                 what="half the jobs accepted, through both replicas")
        pids = replicas.supervisor()
        os.kill(pids["pid"], signal.SIGSTOP)  # its supervisor does not restart it meanwhile
        try:
            for load in doomed:
                load.halt()  # its clients send no more: only the requests in flight at the kill fail
            os.kill(pids["child"], signal.SIGKILL)
            killed = time.monotonic()
            for load in doomed:
                load.stop()
            wait_for(lambda: (replicas.replica(1) or {}).get("leader"), 10, interval=0.05,
                     what="the survivor to lead")
            leads = time.monotonic() - killed
            wait_for(lambda: len(accepted()) >= JOBS, 60, interval=0.02, what=f"{JOBS} jobs accepted")
            survivor.stop()
            lost = [idem for load in doomed for idem in load.unanswered]
            through_killed = sum(len(load.accepted) for load in doomed)
            failed = [a for load in doomed for a in load.failed()]
            resent = 0
            for load in doomed:
                load.base_url = replicas.urls[1]
                resent += load.resend_unanswered()
            final = wait_all_done(replicas.urls[1], "test-key", list(accepted()), timeout=90)
            done = time.monotonic() - killed
        finally:
            resume_supervisor(replicas)
        completed = sum(1 for s in final.values() if s == "COMPLETED")
        print(f"\nkill -9 of the leader: {len(final)} jobs accepted ({through_killed} through the killed replica "
              f"before it died), {completed} completed; {len(lost)} requests failed (all on the killed replica, in "
              f"flight at the kill), {resent} accepted when resent to the survivor with their Idempotency-Key; "
              f"the survivor served throughout ({len(survivor.failed())} failed answers) and led {leads:.2f} s "
              f"after the kill; every job final {done:.1f} s after it")
        assert not survivor.failed(), survivor.statuses()
        in_flight = sum(load.clients for load in doomed)
        assert all(a.status == 0 for a in failed) and doomed[1].clients <= len(lost) <= in_flight, lost
        assert resent == len(lost)
        assert completed == len(final) >= JOBS, {s: n for s, n in final.items() if n != "COMPLETED"}
        keys = [idem for load in loads for idem in load.accepted.values()]
        assert len(set(keys)) == len(keys), "a resent request made a second job"


@pytest.mark.parametrize("down", [0.0, 3.0], ids=["restart", "down-3s"])
def test_postgres_restarted_under_load_answers_only_2xx_or_503_and_every_acknowledged_job_completes(
        down: float, proxy: Proxy, deployment: Deployment, ha_postgres: HaPostgres) -> None:
    with two_replicas(deployment, ha_postgres, proxy) as replicas:
        loads = [Load(url, "test-key", clients=2, payload={"sleep": 0.1}).start() for url in replicas.urls]
        wait_for(lambda: all(len(load.accepted) >= 20 for load in loads), 60, interval=0.05,
                 what="the load to run on both replicas")
        began = time.monotonic()
        ha_postgres.stop()
        time.sleep(down)
        ha_postgres.start()
        restarted = time.monotonic() - began
        wait_for(lambda: all(len(load.answers) and 200 <= load.answers[-1].status < 300 for load in loads), 60,
                 interval=0.05, what="both replicas to accept jobs again")
        serving = time.monotonic() - began
        wait_for(lambda: any((replicas.replica(i) or {}).get("leader") for i in (0, 1)), 30, interval=0.1,
                 what="a replica to lead again")
        leads = time.monotonic() - began
        time.sleep(1)
        for load in loads:
            load.stop()
        accepted = {job: idem for load in loads for job, idem in load.accepted.items()}
        final = wait_all_done(replicas.urls[1], "test-key", list(accepted), timeout=90)
        statuses = sum((load.statuses() for load in loads), start=Counter[int]())
        refusals = [a for load in loads for a in load.failed()]
        print(f"\npostgres restarted under load: it was down {restarted:.2f} s; both replicas accepted jobs again "
              f"{serving:.2f} s after the stop began, one led {leads:.2f} s after it; answers {dict(statuses)} "
              f"(refusals over {max(load.outage() for load in loads):.2f} s); {len(accepted)} jobs acknowledged, "
              f"{sum(1 for s in final.values() if s == 'COMPLETED')} completed")
        assert set(statuses) <= {200, 503}, statuses
        assert all(a.retry_after for a in refusals), "a 503 without Retry-After"
        assert all(s == "COMPLETED" for s in final.values()), {j: s for j, s in final.items() if s != "COMPLETED"}
