"""Volume staging onto 8 hosts: operator-to-every-host vs host-to-host, in one run.

Makes its own hosts st1..st8 (network namespaces 10.86.0.11-18 on bridge gpfst0, each with its own sshd,
/root, /srv, /tmp and /run in a private mount namespace; nothing of the CI test hosts h1/h2 is touched) and
removes them at the end. This machine's link to the hosts is shaped to --uplink-mbit (tc on the bridge: only
traffic this machine sends is limited, as an operator's laptop uplink would be); the hosts reach each other
unshaped, as machines on one rack's network. The same files are staged twice onto empty hosts through the
baremetal provider, with ``host_to_host: false`` and then ``true``; the figures are wall time and the bytes
this machine sent (the bridge's tx counter, SSH included, and gpuform's own count of file bytes).
Needs root. Usage: python bench/staging_scale.py [--hosts 8] [--files 8] [--mb 8] [--uplink-mbit 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpuform.provider import ProviderContext, VolumeSpec
from gpuform.providers.baremetal import BaremetalPool
from gpuform.providers.baremetal.provider import BaremetalProvider

BRIDGE, NET, ROOT = "gpfst0", "10.86.0", Path("/var/lib/gpuform-bench-staging")
BINDS = ("root", "srv", "tmp", "run")
HOLDER = """set -eu
d=$1
for b in root srv tmp run; do mount --bind "$d/$b" "/$b"; done
mkdir -p /run/sshd && chmod 755 /run/sshd
exec /usr/sbin/sshd -D -f "$d/sshd_config" -E "$d/sshd.log"
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


class Hosts:
    """st1..stN: a netns each, a bridge, sshd in a private mount namespace; ``down`` removes everything."""

    def __init__(self, count: int) -> None:
        self.names = [f"st{i}" for i in range(1, count + 1)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.key = ROOT / "id_ed25519"
        self.known = ROOT / "known_hosts"

    def addr(self, name: str) -> str:
        return f"{NET}.{10 + int(name[2:])}"

    def up(self, uplink_mbit: int) -> None:
        self.down()
        ROOT.mkdir(parents=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{NET}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        sh("tc", "qdisc", "add", "dev", BRIDGE, "root", "tbf", "rate", f"{uplink_mbit}mbit", "burst", "256kb",
           "latency", "50ms")
        known = [self._host(name) for name in self.names]
        self.known.write_text("".join(known))
        for name in self.names:
            self._wait(name)

    def _host(self, name: str) -> str:
        d, ns, veth = ROOT / name, f"gpfst-{name}", f"gpfst-{name}"
        for b in BINDS:
            (d / b).mkdir(parents=True)
        (d / "root" / ".ssh").mkdir(mode=0o700)
        shutil.copy(f"{self.key}.pub", d / "root" / ".ssh" / "authorized_keys")
        (d / "tmp").chmod(0o1777)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "hostkey"))
        (d / "sshd_config").write_text(
            f"ListenAddress {self.addr(name)}:22\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "StrictModes no\nMaxStartups 200\nMaxSessions 100\nSubsystem sftp internal-sftp\n")
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", BRIDGE)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.addr(name)}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        with open(d / "holder.log", "wb") as log:
            self.procs.append(subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", "--", "unshare", "--mount", "--propagation", "private", "--",
                 "sh", "-c", HOLDER, "holder", str(d)], stdout=subprocess.DEVNULL, stderr=log))
        return f"{self.addr(name)} {' '.join((d / 'hostkey.pub').read_text().split()[:2])}\n"

    def _wait(self, name: str) -> None:
        deadline = time.monotonic() + 20
        while sh("ssh", "-F", "/dev/null", "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known}",
                 "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", f"root@{self.addr(name)}", "true",
                 check=False).returncode != 0:
            if time.monotonic() > deadline:
                log = (ROOT / name / "sshd.log").read_text() if (ROOT / name / "sshd.log").exists() else "(no log)"
                raise SystemExit(f"{name}: sshd did not come up: {log[-500:]}")
            time.sleep(0.2)

    def down(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
        self.procs.clear()
        for name in self.names:
            sh("ip", "netns", "del", f"gpfst-{name}", check=False)
            sh("ip", "link", "del", f"gpfst-{name}", check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        shutil.rmtree(ROOT, ignore_errors=True)


def tx_bytes() -> int:
    return int(Path(f"/sys/class/net/{BRIDGE}/statistics/tx_bytes").read_text())


def stage(hosts: Hosts, work: Path, h2h: bool) -> tuple[float, int, int, dict[str, dict[str, int]]]:
    """Stage ./src onto empty hosts; (seconds, bytes this machine sent, file bytes gpuform counted, tallies)."""
    pool = BaremetalPool.model_validate({
        "provider": "baremetal", "known_hosts": str(hosts.known), "data_dir": "/srv/gpuform-data",
        "hosts": [{"address": hosts.addr(n), "identity_file": str(hosts.key), "name": n} for n in hosts.names]})
    ctx = ProviderContext(lineage="bench-staging", state_dir=work / "state", config_dir=work)
    provider = BaremetalProvider("bench", pool, ctx)
    volume = VolumeSpec(pool="bench", path="/srv/weights", source="src", host_to_host=h2h, parallel_hosts=8)
    provider.remove_volume("w", volume)
    provider.hosts.each(lambda h: provider.hosts.conn(h).run(["true"]))  # connected before the clock starts
    before, started = tx_bytes(), time.monotonic()
    attrs = provider.stage_volume("w", volume)
    seconds, sent = time.monotonic() - started, tx_bytes() - before
    provider.remove_volume("w", volume)
    provider.hosts.close()
    tallies = attrs["hosts"]
    return seconds, sent, sum(t["bytes_from_this_machine"] for t in tallies.values()), tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--mb", type=int, default=8, help="size of each file")
    parser.add_argument("--uplink-mbit", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    hosts = Hosts(args.hosts)
    with tempfile.TemporaryDirectory(prefix="gpuform-staging-bench-") as tmp:
        work = Path(tmp)
        (work / "src").mkdir()
        for i in range(args.files):
            (work / "src" / f"shard{i:02}.bin").write_bytes(os.urandom(args.mb << 20))
        total = args.files * (args.mb << 20)
        try:
            hosts.up(args.uplink_mbit)
            print(f"{args.hosts} hosts, {args.files} files x {args.mb} MiB = {total / 2**20:.0f} MiB, "
                  f"this machine's uplink {args.uplink_mbit} Mbit/s, hosts to each other unshaped; "
                  f"{os.cpu_count()} CPUs shared by every host, load average {os.getloadavg()[0]:.1f}", flush=True)
            results = {}
            for label, h2h in (("operator-to-every-host", False), ("host-to-host", True)):
                seconds, sent, counted, tallies = stage(hosts, work, h2h)
                results[label] = (seconds, sent)
                served = sum(t["from_hosts"] for t in tallies.values())
                print(f"{label:24} {seconds:6.1f} s   sent from this machine {sent / 2**20:7.1f} MiB "
                      f"({sent / total:4.2f}x the volume; file bytes counted by gpuform {counted / 2**20:.0f} MiB; "
                      f"files served host-to-host {served})", flush=True)
        finally:
            hosts.down()
    (t0, b0), (t1, b1) = results["operator-to-every-host"], results["host-to-host"]
    print(f"host-to-host: {t0 / t1:.1f}x faster, {b0 / b1:.1f}x fewer bytes from this machine")


if __name__ == "__main__":
    sys.exit(main())
