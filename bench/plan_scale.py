"""Plan at scale: 1,000 endpoints on 100 hosts, against a matching state (plus 1% changed endpoints).

Prints, from one run on this machine:
  (a) `gpuform plan --no-refresh` end to end in a subprocess (load, validate, plan, render), best of N;
  (b) the pure plan() call alone, best of N;
  peak memory (max RSS) of the subprocess;
and each figure as a ratio of its target: (a) <= 2 s, (b) <= 0.3 s, <= 300 MB.

With ``--sizes 1000,3000,10000`` it prints instead, for each size, `gpuform validate` and `gpuform plan
--no-refresh` end to end (best of --repeat) with the peak memory of each, and the cost per endpoint, which
should stay flat (linear cost).

Usage: python bench/plan_scale.py [--endpoints 1000] [--hosts 100] [--repeat 5] [--sizes 1000,3000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpuform.config.load import load
from gpuform.plan.planner import PlanOptions, plan
from gpuform.provider import registry
from gpuform.resources.desired import build
from gpuform.state.model import ResourceState, State
from gpuform.state.store import LocalStateStore

TARGETS = {"cli_s": 2.0, "plan_s": 0.3, "rss_mb": 300.0}


def pools_yaml(hosts: int) -> tuple[str, list[str]]:
    """Pools holding ``hosts`` hosts: SSH pools of 10 hosts when an SSH provider is installed, else local pools."""
    ssh = next((p for p in ("baremetal", "docker") if p in registry()), None)
    lines, names = ["pools:"], []
    if ssh:
        for p in range(max(1, hosts // 10)):
            names.append(f"rack{p}")
            lines.append(f"  rack{p}:\n    provider: {ssh}\n    price_per_gpu_second: {{H100-80GB: 0.00115, "
                         "A100-80GB: 0.00076, cpu: 0.00001}\n    hosts:")
            lines += [f"      - {{address: 10.{p}.0.{h + 1}, user: ops}}" for h in range(10)]
    else:
        for p in range(hosts):
            names.append(f"host{p}")
            lines.append(f"  host{p}: {{provider: local, price_per_gpu_second: {{H100-80GB: 0.00115, cpu: 0.00001}}}}")
    return "\n".join(lines), names


def config_yaml(endpoints: int, hosts: int) -> str:
    pools, names = pools_yaml(hosts)
    out = [pools, "gateway:", f"  main: {{pool: {names[0]}, listen: 127.0.0.1:18080, api_keys: {{app: k}}}}",
           "policies:", '  office: {schedule: [{cron: "0 8 * * 1-5", duration: 10h, min_workers: 1}]}', "endpoints:"]
    for i in range(endpoints):
        out.append(f"""  ep{i}:
    pool: {names[i % len(names)]}
    worker: {{template: custom, image: "registry.local/worker:{i % 7}", command: [python, handler.py],
             env: {{MAX_MODEL_LEN: 8192, SHARD: "{i}"}}}}
    gpu: {{types: [H100-80GB, A100-80GB], count: {1 + i % 2}}}
    scaling: {{min_workers: {i % 2}, max_workers: 15, idle_timeout: 60s, scaler: queue_delay, scaler_value: 4}}
    execution_timeout: 600s
    policy: office""")
    return "\n".join(out) + "\n"


def matching_state(directory: Path) -> State:
    config = load(directory, env={})
    state = State()
    for addr, want in build(config, state.lineage).items():
        attrs = json.loads(json.dumps(want.attributes))
        if want.kind == "endpoint" and int(want.name[2:]) % 100 == 0:
            attrs["scaling"]["max_workers"] = 10  # 1% of endpoints changed since the last apply
        state.resources[addr] = ResourceState(addr, want.kind, want.name, want.provider, attrs,
                                              computed={"pid": 1}, dependencies=sorted(want.dependencies))
    return state


def time_cli(directory: Path, repeat: int) -> tuple[float, float, int]:
    best, rss = float("inf"), 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "gpuform", "-C", str(directory), "plan", "--no-refresh"],
                              capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=False)
        best = min(best, time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"plan failed:\n{proc.stderr[-2000:]}")
        changed = proc.stdout.count("will be updated in-place")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return best, rss, changed


def measured(argv: list[str]) -> tuple[float, float, str]:
    """Run ``argv``; its wall time, its own peak memory (MB, from wait4) and its output."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(argv[3:])} exited {proc.returncode}:\n{out[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024, out


def per_endpoint(sizes: list[int], hosts: int, repeat: int) -> None:
    print(f"{'endpoints':>9s}  {'validate':>9s} {'ms/ep':>6s} {'MB':>5s}   {'plan':>9s} {'ms/ep':>6s} {'MB':>5s}")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            (directory / "gpuform.yaml").write_text(config_yaml(size, hosts))
            LocalStateStore(directory / "state").write(matching_state(directory))
            row = [size]
            for command in (["validate"], ["plan", "--no-refresh"]):
                runs = [measured([sys.executable, "-m", "gpuform", "-C", str(directory), *command])
                        for _ in range(repeat)]
                best = min(r[0] for r in runs)
                row += [best, best / size * 1000, max(r[1] for r in runs)]
        print("{:9d}  {:8.2f}s {:6.2f} {:5.0f}   {:8.2f}s {:6.2f} {:5.0f}".format(*row))


def time_plan(directory: Path, repeat: int) -> float:
    config = load(directory, env={})
    state = LocalStateStore(directory / "state").read()
    desired = build(config, state.lineage)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        plan(desired, state, None, PlanOptions())
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", help="comma-separated endpoint counts: per-endpoint cost at each")
    args = parser.parse_args()
    if args.sizes:
        per_endpoint([int(n) for n in args.sizes.split(",")], args.hosts, args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "gpuform.yaml").write_text(config_yaml(args.endpoints, args.hosts))
        LocalStateStore(directory / "state").write(matching_state(directory))
        lines = len((directory / "gpuform.yaml").read_text().splitlines())
        cli_s, rss_mb, changed = time_cli(directory, args.repeat)
        plan_s = time_plan(directory, args.repeat)
    print(f"config: {args.endpoints} endpoints on {args.hosts} hosts, {lines} YAML lines; plan shows {changed} "
          "updates (1% of endpoints changed)")
    rows = [("(a) gpuform plan --no-refresh, end to end", cli_s, "s", TARGETS["cli_s"]),
            ("(b) plan() alone", plan_s, "s", TARGETS["plan_s"]),
            ("peak memory of (a)", rss_mb, "MB", TARGETS["rss_mb"])]
    for name, value, unit, target in rows:
        verdict = "ok" if value <= target else "OVER TARGET"
        print(f"{name:45s} {value:8.3f} {unit:2s}  target {target:6.2f} {unit:2s}  ratio {value / target:5.2f}  {verdict}")


if __name__ == "__main__":
    main()
