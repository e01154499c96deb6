"""examples/ha for real under faults: replica r0 on h1, r1 on h2 (a baremetal pool), the HA tier's own
PostgreSQL, the example's HAProxy in front on this machine, echo workers on both hosts.

1. h2 is lost (its link cut) with 200 jobs in flight: the replica and the workers on h2 are gone at once.
   Every accepted job completes through r0; clients see errors only for requests in flight to r1 at the cut,
   and sending those again with their Idempotency-Key is accepted; the jobs h2's workers held run again on h1
   within 15 s with the default timings (61 s before: 30 s leases, and a tick blocked on the lost host), and
   r0, when it leads, keeps leading throughout.
2. PostgreSQL restarts under a steady load: the replicas answer 503 with Retry-After meanwhile (never a 500),
   reconnect by themselves, and every acknowledged job completes.
3. kill -9 of the leading replica (its supervisor and gateway) with 200 jobs on their way: every accepted job
   completes through the survivor, which leads within seconds; only requests in flight to the killed replica
   fail, and are accepted when resent; `plan` shows the dead replica as a repair and apply brings it back.
Each phase prints its figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests import haproxy
from tests.conftest import REPO, destroy_after_test, free_port, run_gpuform
from tests.contract.hosts import host_dir, load_hosts, ssh
from tests.ha.conftest import HaPostgres
from tests.ha.load import Load, wait_all_done
from tests.helpers import wait_for

pytestmark = [pytest.mark.ha, pytest.mark.slow]
KEY = "ha-hosts-key"
H2_LINK = "gpf-h2"
HOSTS = ("10.77.0.11", "10.77.0.12")  # r0 on h1, r1 on h2


def _workers(http: httpx.Client, admin: str) -> list[dict]:  # type: ignore[type-arg]
    answer = http.get("/admin/endpoints/echo/status", headers={"Authorization": f"Bearer {admin}"})
    rows: list[dict] = answer.json()["worker_list"] if answer.status_code == 200 else []  # type: ignore[type-arg]
    return [w for w in rows if w["state"] in ("idle", "running")]


def test_h2_lost_under_200_jobs_then_postgres_restarted_under_load(tmp_path: Path, ha_postgres: HaPostgres) -> None:
    info = load_hosts()
    directory = tmp_path / "ha"
    shutil.copytree(REPO / "examples" / "ha", directory)
    config = directory / "gpuform.yaml"
    text = config.read_text().replace("scaling: {min_workers: 0, max_workers: 8", "scaling: {min_workers: 4, "
                                      "max_workers: 8").replace("gpu: {types: [H100-80GB, A100-80GB, cpu]}",
                                                                "gpu: {types: [cpu]}")  # spread over both hosts
    assert "min_workers: 4" in text and "types: [cpu]" in text
    config.write_text(text)
    port, lb_port, stats = free_port(), free_port(), free_port()
    lb = info["gateway"]
    variables = ["host1=10.77.0.11", "host2=10.77.0.12", f"ssh_key={info['ssh']['identity_file']}",
                 f"known_hosts={info['ssh']['known_hosts']}", f"port={port}", f"lb={lb}", f"lb_port={lb_port}"]
    args = [a for v in variables for a in ("--var", v)]
    env = {"GPUFORM_API_KEY": KEY, "GATEWAY_DB_URL": ha_postgres.url()}
    balancer = subprocess.Popen(["haproxy", "-db", "-f", str(directory / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                                stderr=(tmp_path / "haproxy.log").open("w"),
                                env={**os.environ, "GPUFORM_LB_BIND": f"{lb}:{lb_port}",
                                     "GPUFORM_LB_STATS": f"127.0.0.1:{stats}",
                                     "GPUFORM_R0": f"10.77.0.11:{port}", "GPUFORM_R1": f"10.77.0.12:{port}"})
    base, stats_url = f"http://{lb}:{lb_port}", f"http://127.0.0.1:{stats}/stats;csv"
    try:
        applied = run_gpuform("-C", str(directory), *args, "apply", "--auto-approve", env=env, timeout=900)
        assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
        admin = (directory / "state" / "secrets" / "gateway.main.admin_key").read_text()
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as http:
            wait_for(lambda: haproxy.up(stats_url) == {"r0", "r1"}, 30, what="haproxy to see both replicas")
            def spread() -> list[dict]:  # type: ignore[type-arg]
                ws = _workers(http, admin)
                return ws if len(ws) >= 4 and {w["host"] for w in ws} == {"gpu1", "gpu2"} else []

            try:
                hosts = wait_for(spread, 180, what="echo workers on both hosts")
            except AssertionError:
                print(http.get("/admin/endpoints/echo/status", headers={"Authorization": f"Bearer {admin}"}).text)
                raise
            on_h2 = {w["id"] for w in hosts if w["host"] == "gpu2"}
            before = _leadership(port, admin)
            _lose_h2_under_load(base, on_h2)
            if before is not None and before[0] == 0:  # r0 on h1 led: losing h2 (its workers, r1) must not depose it
                assert _leadership(port, admin) == before, "r0 on h1 led, and kept leading while h2 was lost"
            wait_for(lambda: ssh("10.77.0.12", "true", check=False).returncode == 0, 30, what="h2 back")
            wait_for(lambda: haproxy.up(stats_url) == {"r0", "r1"}, 60, what="r1 back in haproxy after the link")
            _restart_postgres_under_load(base, ha_postgres)
            _kill_the_leader_under_load(base, admin, port, directory, args, env)
            wait_for(lambda: haproxy.up(stats_url) == {"r0", "r1"}, 60, what="the repaired replica back in haproxy")
    finally:
        subprocess.run(["ip", "link", "set", H2_LINK, "up"], check=False)
        balancer.terminate()
        balancer.wait(10)
        wait_for(lambda: ssh("10.77.0.12", "true", check=False).returncode == 0, 30, what="h2 back")
        destroy_after_test(directory, *args, env=env)


def _lose_h2_under_load(base: str, on_h2: set[str]) -> None:
    load = Load(base, KEY, clients=8, payload={"sleep": 0.3}, limit=260).start()
    wait_for(lambda: len(load.accepted) >= 200, 60, interval=0.02, what="200 jobs accepted")
    subprocess.run(["ip", "link", "set", H2_LINK, "down"], check=True)  # the other 60 go out across the cut
    cut = time.monotonic()
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, trust_env=False,
                          timeout=10) as http:
            def status(job: str) -> dict:  # type: ignore[type-arg]
                for _ in range(20):  # a read in flight to r1 as the balancer drops it fails: read it again
                    try:
                        answer: dict = http.get(f"/v2/echo/status/{job}").json()  # type: ignore[type-arg]
                        return answer
                    except httpx.HTTPError:
                        time.sleep(0.2)
                raise AssertionError(f"no answer for job {job} through the balancer")

            def stuck(job: str) -> bool:
                st = status(job)
                return st.get("status") == "IN_PROGRESS" and st.get("workerId") in on_h2
            held = [j for j in list(load.accepted) if stuck(j)]  # jobs h2's workers held: they can't answer
            wait_for(lambda: not any(stuck(j) for j in held), 60, interval=0.2, what="h2's jobs to be requeued")
            requeued = time.monotonic() - cut
            settled = load.settle()
            failed, retried, final = settled.failed, settled.resent, settled.final
            answered = time.monotonic() - cut
            rerun = {j: status(j).get("workerId") for j in held}
    finally:
        subprocess.run(["ip", "link", "set", H2_LINK, "up"], check=True)
    counts = Counter(final.values())
    print(f"\nh2 lost under load: 200 jobs accepted before the cut, {len(held)} held by h2's workers and requeued "
          f"{requeued:.1f} s after it (default timings: heartbeat 3 s, lease 12 s); {len(load.answers)} requests in "
          f"all, {len(failed)} failed ({dict(Counter(a.status for a in failed))}), {retried} resent with their "
          f"Idempotency-Key and accepted; all {len(load.accepted)} accepted jobs answered {answered:.1f} s after "
          f"the cut: {dict(counts)}")
    assert held, "h2's workers held jobs at the cut"
    assert requeued <= 15, f"a lost host's jobs run again within 15 s, not {requeued:.1f} s"
    assert counts == Counter({"COMPLETED": len(load.accepted)}), counts
    assert len(load.accepted) == 260 and retried == len(failed), "every request that failed at the cut is accepted " \
                                                                  "when sent again"
    assert all(w not in on_h2 for w in rerun.values()), rerun
    assert len(failed) <= 16, f"only requests in flight to r1 at the cut fail (8 clients): {len(failed)}"


def _leader(port: int, admin: str) -> int | None:
    """Which replica leads (0 on h1, 1 on h2), asked of each replica directly; None while none does."""
    found = _leadership(port, admin)
    return None if found is None else found[0]


def _leadership(port: int, admin: str) -> tuple[int, int] | None:
    """The leading replica and its epoch, asked of each replica directly; None while none does."""
    for index, host in enumerate(HOSTS):
        try:
            answer = httpx.get(f"http://{host}:{port}/admin/status", headers={"Authorization": f"Bearer {admin}"},
                               trust_env=False, timeout=5)
        except httpx.HTTPError:
            continue
        replica = (answer.json().get("replica") or {}) if answer.status_code == 200 else {}
        if replica.get("leader"):
            return index, int(replica["epoch"])
    return None


def _kill_the_leader_under_load(base: str, admin: str, port: int, directory: Path, args: list[str],
                                env: dict[str, str]) -> None:
    """kill -9 of the leading replica's supervisor and gateway on its host with 200 jobs on their way: no
    accepted job is lost, the survivor answers every id, only requests in flight to the killed one fail (and
    are accepted when resent with their Idempotency-Key); then plan shows the repair and apply makes it."""
    lineage = json.loads((directory / "state" / "gpuform.state.json").read_text())["lineage"]
    [index] = wait_for(lambda: [i for i in [_leader(port, admin)] if i is not None], 30, interval=0.2,
                       what="a leader (after the restart)")
    host, key = HOSTS[index], "main" if index == 0 else f"main.r{index}"
    pids = json.loads(ssh(host, "cat", f"{host_dir(lineage)}/gateways/{key}/supervisor.pid").stdout)
    load = Load(base, KEY, clients=8, payload={"sleep": 0.3}, limit=200).start()
    wait_for(lambda: len(load.accepted) >= 100, 60, interval=0.02, what="100 jobs accepted")
    ssh(host, "kill", "-9", str(pids["pid"]), str(pids["child"]))
    killed = time.monotonic()
    wait_for(lambda: _leader(port, admin) not in (None, index), 30, interval=0.1, what="the survivor to lead")
    leads = time.monotonic() - killed
    settled = load.settle()
    failed, retried, final = settled.failed, settled.resent, settled.final
    done = time.monotonic() - killed
    counts = Counter(final.values())
    print(f"\nkill -9 of the leader r{index} on {host} under load: {len(load.accepted)} jobs accepted, "
          f"{dict(counts)}; {len(failed)} requests failed ({dict(Counter(a.status for a in failed))}), {retried} "
          f"resent with their Idempotency-Key and accepted; the survivor led {leads:.2f} s after the kill; every "
          f"job final {done:.1f} s after it")
    assert counts == Counter({"COMPLETED": len(load.accepted)}), counts
    assert len(load.accepted) == 200 and retried == len(failed)
    assert len(failed) <= 8, f"only requests in flight to the killed replica fail (8 clients): {len(failed)}"

    planned = run_gpuform("-C", str(directory), *args, "plan", "-detailed-exitcode", env=env, timeout=300)
    assert planned.returncode == 2 and f"replica r{index}" in planned.stdout and "not running" in planned.stdout, \
        planned.stdout[-3000:] + planned.stderr[-2000:]
    applied = run_gpuform("-C", str(directory), *args, "apply", "--auto-approve", env=env, timeout=600)
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    assert run_gpuform("-C", str(directory), *args, "plan", "-detailed-exitcode", env=env,
                       timeout=300).returncode == 0


def _restart_postgres_under_load(base: str, pg: HaPostgres) -> None:
    load = Load(base, KEY, clients=4, payload={"sleep": 0.05})
    load.start()
    time.sleep(2)
    started = time.monotonic()
    pg.restart()
    restarted = time.monotonic() - started
    time.sleep(4)
    load.stop()
    statuses = load.statuses()
    final = wait_all_done(base, KEY, list(load.accepted), timeout=120)
    unavailable = [a for a in load.answers if a.status == 503]
    print(f"\nPostgreSQL restarted under load ({restarted:.1f} s): answers {dict(statuses)}, 503s over "
          f"{(unavailable[-1].at - unavailable[0].at) if unavailable else 0:.1f} s, every one with Retry-After: "
          f"{all(a.retry_after for a in unavailable)}; acknowledged jobs {dict(Counter(final.values()))}")
    assert set(statuses) <= {200, 503}, statuses
    assert all(a.retry_after for a in unavailable)
    assert set(final.values()) == {"COMPLETED"}, Counter(final.values())
    assert statuses[200] > 0
