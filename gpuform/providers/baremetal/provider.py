"""The baremetal provider: SSH hosts, virtualenvs built from uploaded wheels, workers as processes.

On each host, under ``data_dir``: ``bin/hostagent.py`` (a stdlib-only helper), ``wheelhouse/``, ``venvs/``,
``workers/ID.json`` (pid records; ``ID.env`` for systemd units), ``logs/ID.log`` (kept after a worker is
gone, so a crash can be read), ``gateways/NAME/`` (the gateway's queue, configuration and credentials), all
below ``lineage-XXXXXXXX/`` (one per deployment and workspace).
Where systemd runs, workers are transient units (``systemd-run``) and the gateway an enabled unit in
``/etc/systemd/system`` (restarted when it exits, started again when the host boots); elsewhere the agent
starts them detached with pid records, and the gateway runs under gpuform's supervisor (which nothing starts at
boot: `gpuform apply` brings the gateway back, see docs/ha.md).
"""

from __future__ import annotations

import json
import posixpath
import shlex
import threading
import time
from pathlib import Path
from typing import Any

from gpuform.config.schema import LogRotation
from gpuform.errors import NoCapacity, SSHError
from gpuform.gateway.replicas import key_index
from gpuform.provider import (
    Attrs,
    GpuUsage,
    HostInventory,
    Observation,
    ProviderContext,
    VolumeSpec,
    WorkerInfo,
    WorkerLaunch,
)
from gpuform.providers.baremetal import BaremetalPool, workerfiles
from gpuform.providers.common import existing_volume, remote_volume, sshconfig, staging, venvs
from gpuform.providers.common.gpus import occupancy, place
from gpuform.providers.common.hosts import Host, SSHHosts
from gpuform.providers.common.remote_gateway import remote_config
from gpuform.providers.common.shell import Shell
from gpuform.spec import EndpointSpec, RuntimeConfig
from gpuform.util import logpipe
from gpuform.util.manifests import Checksums
from gpuform.util.volume_checks import HostCheck
from gpuform.workerspec import resolve_argv

AGENT = Path(__file__).resolve().parent.parent / "common" / "hostagent.py"
LOGPIPE = Path(logpipe.__file__)


def systemd_run_argv(unit: str, argv: list[str], env_file: str, cwd: str, restart: str = "no",
                     stop_timeout: float = 30) -> list[str]:
    """The systemd-run command for a worker or gateway unit; the environment comes from a 0600 file."""
    return ["systemd-run", "--unit", unit, "--collect", "--quiet", "--property", f"Restart={restart}",
            "--property", "KillMode=control-group", "--property", f"TimeoutStopSec={int(stop_timeout)}",
            "--property", f"EnvironmentFile={env_file}", "--working-directory", cwd, "--", *argv]


UNIT_DIR = "/etc/systemd/system"


def unit_file_text(description: str, argv: list[str], env_file: str, cwd: str, stop_timeout: float = 30) -> str:
    """A persistent (enabled) service unit: restarted whenever it exits, started again when the host boots."""
    exec_start = " ".join(_unit_quote(a) for a in argv)
    return (f"[Unit]\nDescription={description}\nAfter=network-online.target\nWants=network-online.target\n\n"
            f"[Service]\nExecStart={exec_start}\nWorkingDirectory={cwd}\n"
            f"EnvironmentFile={env_file}\nRestart=always\nRestartSec=1\nKillMode=control-group\n"
            f"TimeoutStopSec={int(stop_timeout)}\n\n[Install]\nWantedBy=multi-user.target\n")


def _unit_quote(arg: str) -> str:
    """One ExecStart word as systemd reads it (quoted when it holds a space, a quote, a backslash or a $/%)."""
    if arg and not any(c in arg for c in " \t\"'\\$%"):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return f'"{escaped}"'


def env_file_text(env: dict[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


class BaremetalProvider:
    def __init__(self, pool_name: str, pool: BaremetalPool, ctx: ProviderContext) -> None:
        self.pool_name, self.pool, self.ctx = pool_name, pool, ctx
        self.hosts = SSHHosts(pool.hosts, pool.known_hosts, pool.trust_on_first_use, pool.connect_timeout,
                              pool.nvidia_smi, sshconfig.config_path(pool.ssh_config, ctx.config_dir),
                              f"pool.{pool_name}")
        self.data = posixpath.join(pool.data_dir, f"lineage-{ctx.lineage[:8]}")  # two deployments can share a host
        self.shared = pool.data_dir  # content-addressed wheelhouses are shared
        self._placing = threading.Lock()
        self._preparing = threading.Lock()
        self._systemd: dict[str, bool] = {}

    # ---- helpers ----------------------------------------------------------------------------------

    def _agent(self, host: str | Host, command: str, request: dict[str, Any]) -> dict[str, Any]:
        conn = self.hosts.conn(host)
        result = conn.run([self.pool.python, posixpath.join(self.data, "bin", "hostagent.py"), command],
                          stdin=json.dumps(request).encode())
        reply: dict[str, Any] = json.loads(result.stdout)
        return reply

    def _prepare_host(self, host: Host) -> dict[str, Any]:
        conn = self.hosts.conn(host)
        dirs = [posixpath.join(self.data, d) for d in ("bin", "workers", "logs", "venvs", "gateways")]
        conn.run(["mkdir", "-p", *dirs])
        conn.write_file(posixpath.join(self.data, "bin", "hostagent.py"), AGENT.read_bytes())
        conn.write_file(posixpath.join(self.data, "bin", "logpipe.py"), LOGPIPE.read_bytes())
        info = self._agent(host, "info", {"data_dir": self.data})
        self._systemd[host.name] = self._use_systemd(info)
        return info

    def _use_systemd(self, info: dict[str, Any]) -> bool:
        return self.pool.supervisor == "systemd" or (self.pool.supervisor == "auto" and bool(info.get("systemd")))

    def _systemd_on(self, host: str) -> bool:
        with self._preparing:
            if host not in self._systemd:
                self._prepare_host(self.hosts.by_name[host])
        return self._systemd[host]

    def _fail_if_all(self, errors: dict[str, str], what: str) -> None:
        if errors and len(errors) == len(self.hosts.hosts):
            detail = "; ".join(f"{h}: {e}" for h, e in errors.items())
            raise SSHError(f"{what} failed on every host: {detail}", "Check that the hosts are up and reachable.",
                           f"pool.{self.pool_name}")
        for host, error in errors.items():
            self.ctx.progress(f"{host} skipped: {error}")

    # ---- the pool ---------------------------------------------------------------------------------

    def read_pool(self) -> Attrs | None:
        return {}

    def create_pool(self) -> Attrs:
        found, errors = self.hosts.each(self._prepare_host)
        self._fail_if_all(errors, "preparing hosts")
        return {"hosts": {h: {"python": i["python"], "systemd": i["systemd"]} for h, i in found.items()},
                "unreachable": errors}

    def delete_pool(self) -> None:
        for worker in self.list_workers():  # whatever its endpoints left behind (a start in flight)
            self.stop_worker(worker, grace_s=5.0)
        alive = [w.worker_id for w in self.list_workers() if w.state == "running"]
        if alive:
            raise SSHError(f"workers still running after they were stopped: {', '.join(alive)}",
                           "Stop them on the hosts (see `gpuform status`), then destroy again.",
                           f"pool.{self.pool_name}")
        self.hosts.each(lambda h: self.hosts.conn(h).run(["rm", "-rf", "--", self.data]))

    # ---- volumes ----------------------------------------------------------------------------------

    def _existing(self, volume: VolumeSpec) -> tuple[Checksums | None, dict[str, HostCheck | None], dict[str, str]]:
        """A volume without source on every host: (its checksums, the check per host, unreachable hosts)."""
        sums, cache = existing_volume.checksums(self.ctx, volume), existing_volume.hash_cache(self.ctx)
        checks, errors = self.hosts.each(
            lambda h: remote_volume.check_existing(self.hosts.conn(h), h.name, volume.path, sums, cache))
        self._fail_if_all(errors, "reading the volume")
        return sums, checks, errors

    def read_volume(self, name: str, volume: VolumeSpec) -> Observation | None:
        if volume.source is None:
            sums, checks, errors = self._existing(volume)
            return existing_volume.observe(volume, sums, checks, errors)
        found, errors = self.hosts.each(lambda h: remote_volume.held(self.hosts.conn(h), volume.path))
        self._fail_if_all(errors, "reading the volume")
        return remote_volume.observe(self.ctx, volume, found, errors)

    def stage_volume(self, name: str, volume: VolumeSpec) -> Attrs:
        if volume.source is None:
            sums, checks, errors = self._existing(volume)
            return {**existing_volume.require(volume, sums, checks), "unreachable": errors}
        shells, errors = self.hosts.each(self.hosts.conn)
        self._fail_if_all(errors, "staging the volume")
        return {**staging.stage(self.ctx, volume, shells), "unreachable": errors}

    def remove_volume(self, name: str, volume: VolumeSpec) -> None:
        if volume.source is None:
            return  # files gpuform did not put there: never deleted
        _, errors = self.hosts.each(lambda h: remote_volume.remove(self.hosts.conn(h), volume.path))
        self._fail_if_all(errors, "removing the volume")

    # ---- endpoints --------------------------------------------------------------------------------

    def read_endpoint(self, name: str, spec: EndpointSpec) -> Observation:
        """Which hosts have the worker's environment, built with today's requirements (``worker.requirements``
        and the requirements.txt beside the handler on the hosts); a host without it is repaired by the next
        apply. A handler or ``worker.python`` missing on a host is a note (apply fails until it is there)."""
        self._refuse_gateway_env(name, spec.worker.python)
        found, _ = self.hosts.each(lambda h: self._look(h, name, spec), self._serving())
        return workerfiles.observe(name, list(spec.worker.requirements), self._files(spec), spec.worker.python,
                                   found)

    def _serving(self) -> list[Host]:
        return [h for h in self.hosts.hosts if not h.spec.cordon]

    def _files(self, spec: EndpointSpec) -> workerfiles.Paths:
        """The handler and its requirements.txt on the hosts, as the worker's process finds them (see _launch)."""
        return workerfiles.paths(spec.worker.command, spec.worker.workdir, self.data)

    def _env_root(self, name: str, python: str | None) -> str:
        """The root of the endpoint's environment on its hosts (``worker.python``'s, when it names one)."""
        venv = python or posixpath.join(self.data, "venvs", f"endpoint-{name}")
        is_interpreter = posixpath.basename(posixpath.dirname(venv)) == "bin"  # ENV/bin/python3, /usr/bin/python3
        return posixpath.dirname(posixpath.dirname(venv)) if is_interpreter else venv

    def _look(self, host: Host, name: str, spec: EndpointSpec) -> workerfiles.HostFiles:
        return workerfiles.look(self.hosts.conn(host), self.pool.python, self._env_root(name, spec.worker.python),
                                self._files(spec), spec.worker.python)

    def _refuse_gateway_env(self, name: str, python: str | None) -> None:
        """The gateway's own virtualenv is not a worker's: installing into it would replace gpuform there."""
        gateway_env = posixpath.join(self.data, "venvs", "gateway")
        if python and posixpath.normpath(python) in (gateway_env, posixpath.join(gateway_env, "bin", "python")):
            raise SSHError(f"endpoint {name}: worker.python {python} is the gateway's own environment",
                           "Leave `python` out (gpuform builds the worker an environment of its own, with "
                           "`requirements`) or name another virtualenv.", f"endpoint.{name}")

    def prepare_endpoint(self, name: str, spec: EndpointSpec) -> Attrs:
        """The endpoint's virtualenv on each host, with ``worker.requirements`` and the requirements.txt beside
        the handler there (the same on every host); raises ProviderError when the handler is missing on a host."""
        worker = spec.worker
        self._refuse_gateway_env(name, worker.python)
        found, unreachable = self.hosts.each(lambda h: self._look(h, name, spec), self._serving())
        where = self._files(spec)
        lost = sorted(h for h, f in found.items() if not f.handler)
        if where.handler and lost:
            raise workerfiles.missing_handler(name, where.handler, lost)
        extra = workerfiles.host_requirements(name, where.requirements, {h: f.requirements for h, f in found.items()})
        reqs = [*worker.requirements, *extra]

        def prepare(host: Host) -> str:
            self._prepare_host(host)
            conn = self.hosts.conn(host)
            if worker.python and not found[host.name].python:
                raise SSHError(f"endpoint {name}: worker.python {worker.python} does not exist on {host.name}",
                               "Create that environment on every host of the pool, or leave `python` out.",
                               f"endpoint.{name}")
            return venvs.ensure(conn, self.pool.python, worker.python, self.data, self.shared,
                                self.ctx.state_dir / "wheelhouse", f"endpoint-{name}", reqs, with_deps=False,
                                progress=lambda m: self.ctx.progress(f"endpoint {name} on {host.name}: {m}"))

        pythons, errors = self.hosts.each(prepare, [h for h in self._serving() if h.name in found])
        self._fail_if_all({**unreachable, **errors}, f"preparing the worker environment of endpoint {name}")
        attrs: Attrs = {"python": pythons, "unreachable": {**unreachable, **errors}}
        return {**attrs, "environment": workerfiles.environment(reqs)} if extra else attrs

    def remove_endpoint(self, name: str, spec: EndpointSpec) -> None:
        for worker in self.list_workers(name):
            self.stop_worker(worker, grace_s=5.0)
        venv = posixpath.join(self.data, "venvs", f"endpoint-{name}")
        self.hosts.each(lambda h: self.hosts.conn(h).run(["rm", "-rf", "--", venv]))

    # ---- gateway ----------------------------------------------------------------------------------

    def _gateway_host(self, name: str) -> Host:
        """The host of gateway replica ``name`` (replica i on the pool's i-th host, see gateway/replicas.py)."""
        index = key_index(name)
        if index >= len(self.hosts.hosts):
            raise SSHError(f"gateway replica {name} needs host {index + 1} of the pool, which has "
                           f"{len(self.hosts.hosts)}", "Add hosts to the pool, or lower the gateway's replicas.")
        return self.hosts.hosts[index]

    def _gdir(self, name: str) -> str:
        return posixpath.join(self.data, "gateways", name)

    def _unit(self, name: str) -> str:
        """The gateway's unit (or agent record) name, keyed by lineage: two deployments or workspaces on a
        host each have their own (systemd unit names are host-wide)."""
        return f"gpuform-gateway-{self.ctx.lineage[:8]}-{name}"

    def _legacy_unit(self, host: Host, name: str) -> str | None:
        """``gpuform-gateway-NAME``, as earlier gpuform versions named the gateway, when that unit is this deployment's
        (its working directory is this lineage's gateway directory); a unit of another deployment is None."""
        legacy = f"gpuform-gateway-{name}"
        if not self._systemd_on(host.name):
            return legacy  # agent records live under this lineage's directory: the record is ours
        shown = self.hosts.conn(host).run(["systemctl", "show", "--property", "WorkingDirectory", "--value", legacy],
                                          check=False).text.strip()
        return legacy if shown == self._gdir(name) else None

    def start_gateway(self, name: str, config: RuntimeConfig) -> Attrs:
        """(Re)start the gateway with ``config`` (a running one is stopped first: units take no new config)."""
        self.stop_gateway(name, remove_data=False)
        host = self._gateway_host(name)
        conn = self.hosts.conn(host)
        self._prepare_host(host)
        python = venvs.ensure(conn, self.pool.python, None, self.data, self.shared,
                              self.ctx.state_dir / "wheelhouse", "gateway", [], with_deps=True)
        gdir = self._gdir(name)
        conn.run(["mkdir", "-p", gdir])
        cfg_path = posixpath.join(gdir, "config.json")
        conn.write_file(cfg_path, remote_config(config, conn, gdir).to_file_text().encode(), mode=0o600)
        serve = [python, "-m", "gpuform.gateway", "--config", cfg_path]
        unit = self._unit(name)
        if self._systemd_on(host.name):
            env_file = posixpath.join(gdir, "gateway.env")
            conn.write_file(env_file, b"PYTHONUNBUFFERED=1\n", mode=0o600)
            text = unit_file_text(f"gpuform gateway.{name} ({self.ctx.lineage[:8]})", serve, env_file, gdir)
            conn.write_file(posixpath.join(UNIT_DIR, f"{unit}.service"), text.encode(), mode=0o644)
            conn.run(["systemctl", "daemon-reload"])
            conn.run(["systemctl", "enable", "--now", f"{unit}.service"])
        else:
            labels = ["--label", f"gpuform.lineage={self.ctx.lineage}", "--label", f"gpuform.address=gateway.{name}"]
            argv = [python, "-m", "gpuform.util.supervise", "--pidfile", posixpath.join(gdir, "supervisor.pid"),
                    *labels, "--log-format", config.gateway.log_format, "--", *serve]
            self._agent(host, "start", {"id": unit, "argv": argv, "cwd": gdir, "env": {"PYTHONUNBUFFERED": "1"},
                                        "records": posixpath.join(self.data, "workers"),
                                        "log": posixpath.join(gdir, "gateway.log"),
                                        "rotate": _rotation(config.gateway.logs),
                                        "meta": {"lineage": self.ctx.lineage, "kind": "gateway"}})
        return {"host": host.name, "unit": unit}

    def read_gateway(self, name: str) -> Attrs | None:
        """The running gateway: under its unit, or under the unit name an earlier gpuform gave it."""
        host = self._gateway_host(name)
        for unit in (self._unit(name), self._legacy_unit(host, name)):
            found = self._running_unit(host, unit) if unit else None
            if found is not None:
                return found
        return None

    def _running_unit(self, host: Host, unit: str) -> Attrs | None:
        if self._systemd_on(host.name):
            state = self.hosts.conn(host).run(["systemctl", "is-active", unit], check=False).text.strip()
            return {"host": host.name, "unit": unit} if state in ("active", "activating") else None
        records = self._agent(host, "list", {"records": posixpath.join(self.data, "workers"),
                                             "match": {"id": unit}})["records"]
        alive = [r for r in records if r["alive"]]
        return {"host": host.name, "unit": unit, "pid": alive[0]["pid"]} if alive else None

    def reload_gateway(self, name: str, config: RuntimeConfig) -> Attrs | None:
        found = self.read_gateway(name)
        if found is None or found["unit"] != self._unit(name):
            return None  # not running, or under an earlier gpuform's unit name: a restart migrates it
        conn = self.hosts.conn(self._gateway_host(name))
        gdir = self._gdir(name)
        conn.write_file(posixpath.join(gdir, "config.json"), remote_config(config, conn, gdir).to_file_text().encode(),
                        mode=0o600)
        return {"host": found["host"], "unit": found["unit"]}

    def stop_gateway(self, name: str, remove_data: bool) -> None:
        """Stop the gateway (under its unit, and under an earlier gpuform's unit name: that migrates it)."""
        host = self._gateway_host(name)
        conn = self.hosts.conn(host)
        for unit in (self._unit(name), self._legacy_unit(host, name)):
            if unit is None:
                continue
            if self._systemd_on(host.name):
                conn.run(["systemctl", "stop", unit], check=False)
                if remove_data:
                    self._remove_unit(conn, unit)
            else:
                self._agent(host, "stop", {"records": posixpath.join(self.data, "workers"), "id": unit, "grace": 30})
                self._agent(host, "forget", {"records": posixpath.join(self.data, "workers"), "id": unit})
        if remove_data:
            conn.run(["rm", "-rf", "--", self._gdir(name)])

    @staticmethod
    def _remove_unit(conn: Shell, unit: str) -> None:
        """Disable the gateway's unit and remove its file (it would start the gateway again at boot)."""
        conn.run(["systemctl", "disable", f"{unit}.service"], check=False)
        conn.run(["rm", "-f", "--", posixpath.join(UNIT_DIR, f"{unit}.service")])
        conn.run(["systemctl", "daemon-reload"], check=False)

    def gateway_logs(self, name: str, tail: int = 100) -> str:
        """The unit's journal where systemd runs it, else its log file (through the host agent)."""
        host = self._gateway_host(name)
        if self._systemd_on(host.name):
            return self.hosts.conn(host).run(["journalctl", "-u", self._unit(name), "-n", str(tail), "--no-pager",
                                              "--output", "cat"], check=False).text
        return str(self._agent(host, "tail", {"path": posixpath.join(self._gdir(name), "gateway.log"),
                                               "lines": tail})["text"])

    # ---- endpoints and workers --------------------------------------------------------------------

    def inventory(self) -> list[HostInventory]:
        return self.hosts.inventory()

    def gpu_usage(self) -> list[GpuUsage]:
        return self.hosts.gpu_usage()

    def start_worker(self, launch: WorkerLaunch) -> WorkerInfo:
        with self._placing:
            used, count = occupancy(self.list_workers())
            spot = place(self.hosts.inventory(), used, count, launch.gpu_types, launch.gpu_count)
            if spot is None:
                raise NoCapacity(f"no host in pool {self.pool_name} has a free GPU of type "
                                 f"{' or '.join(launch.gpu_types)}",
                                 "Free GPUs, add hosts or types, or lower max_workers.", f"pool.{self.pool_name}")
            return self._launch(launch, spot.host, spot.gpu_type, spot.indices)

    def _launch(self, launch: WorkerLaunch, host: str, gpu_type: str, indices: tuple[int, ...]) -> WorkerInfo:
        env = dict(launch.env)
        env["GPUFORM_GPU_TYPE"] = gpu_type
        if indices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in indices)
        if launch.volume_path:
            env.setdefault("GPUFORM_VOLUME_PATH", launch.volume_path)
            env["RUNPOD_VOLUME_PATH"] = launch.volume_path  # no /runpod-volume mount outside a container
        python = launch.python or posixpath.join(self.data, "venvs", f"endpoint-{launch.endpoint}", "bin", "python")
        if launch.python and not launch.python.endswith("python") and "/bin/" not in launch.python:
            python = posixpath.join(launch.python, "bin", "python")
        argv = resolve_argv(launch.command, python)
        cwd = launch.workdir or self.data
        meta = {"lineage": launch.lineage, "endpoint": launch.endpoint, "gpu_type": gpu_type,
                "gpu_indices": list(indices), "spec_revision": launch.spec_revision, "kind": "worker"}
        conn = self.hosts.conn(host)
        records = posixpath.join(self.data, "workers")
        env.update(self._write_files(conn, launch))
        if self._systemd_on(host):
            env_file = posixpath.join(records, f"{launch.worker_id}.env")
            conn.write_file(env_file, env_file_text(env).encode(), mode=0o600)
            conn.write_file(posixpath.join(records, f"{launch.worker_id}.json"),
                            json.dumps({"id": launch.worker_id, "unit": f"gpuform-w-{launch.worker_id}",
                                        "started_at": time.time(), **meta}).encode())
            conn.run(systemd_run_argv(f"gpuform-w-{launch.worker_id}", argv, env_file, cwd))
        else:
            self._agent(host, "start", {"id": launch.worker_id, "argv": argv, "env": env, "cwd": cwd,
                                        "records": records, "meta": meta, "rotate": _rotation(launch.logs),
                                        "log": posixpath.join(self.data, "logs", f"{launch.worker_id}.log")})
        return WorkerInfo(launch.worker_id, launch.endpoint, host, "running", gpu_type, indices,
                          ref=launch.worker_id, started_at=time.time(), spec_revision=launch.spec_revision)

    def _write_files(self, conn: Shell, launch: WorkerLaunch) -> dict[str, str]:
        """The worker's files (TLS) in ``workers/files`` on its host (0700; each file 0600); their variables."""
        directory = posixpath.join(self.data, "workers", "files")
        if launch.files:
            conn.run(["mkdir", "-p", "-m", "700", directory])
        for name, data in launch.named_files().items():
            conn.write_file(posixpath.join(directory, name), data, mode=0o600)
        return launch.file_env(directory)

    def stop_worker(self, worker: WorkerInfo, grace_s: float) -> None:
        records = posixpath.join(self.data, "workers")
        try:
            if self._systemd_on(worker.host):
                conn = self.hosts.conn(worker.host)
                conn.run(["systemctl", "stop", f"gpuform-w-{worker.worker_id}"], check=False, timeout=grace_s + 30)
                conn.run(["rm", "-f", "--", posixpath.join(records, f"{worker.worker_id}.env"),
                          posixpath.join(records, f"{worker.worker_id}.json")])
            else:
                self._agent(worker.host, "stop", {"records": records, "id": worker.worker_id, "grace": grace_s})
                self._agent(worker.host, "forget", {"records": records, "id": worker.worker_id})
        except SSHError as exc:
            raise SSHError(f"could not stop worker {worker.worker_id} on {worker.host}: {exc.message}", exc.hint,
                           worker.host) from exc

    def list_workers(self, endpoint: str | None = None) -> list[WorkerInfo]:
        match = {"lineage": self.ctx.lineage, "kind": "worker", **({"endpoint": endpoint} if endpoint else {})}
        reachable = [h for h in self.hosts.hosts if h.name in {i.host for i in self.hosts.inventory() if i.reachable}]

        def listing(host: Host) -> list[WorkerInfo]:
            if self._systemd_on(host.name):
                return self._list_units(host, match)
            records = self._agent(host, "list", {"records": posixpath.join(self.data, "workers"), "match": match})
            return [_info(host.name, r, "running" if r["alive"] else "exited") for r in records["records"]]

        found, _errors = self.hosts.each(listing, reachable)
        return [w for infos in found.values() for w in infos]

    def _list_units(self, host: Host, match: dict[str, str]) -> list[WorkerInfo]:
        conn = self.hosts.conn(host)
        records = conn.run(["sh", "-c", f"cat {shlex.quote(self.data)}/workers/*.json 2>/dev/null || true"]).text
        out = []
        for line in records.replace("}{", "}\n{").splitlines():
            record = json.loads(line)
            if any(record.get(k) != v for k, v in match.items()):
                continue
            state = conn.run(["systemctl", "is-active", record["unit"]], check=False).text.strip()
            out.append(_info(host.name, record, "running" if state in ("active", "activating") else "exited"))
        return out

    def worker_logs(self, worker: WorkerInfo, tail: int = 50) -> str:
        if self._systemd_on(worker.host):
            return self.hosts.conn(worker.host).run(["journalctl", "-u", f"gpuform-w-{worker.worker_id}", "-n",
                                                     str(tail), "--no-pager"], check=False).text
        return str(self._agent(worker.host, "tail", {"path": posixpath.join(self.data, "logs",
                                                                            f"{worker.worker_id}.log"),
                                                     "lines": tail})["text"])

    def close(self) -> None:
        self.hosts.close()


def _rotation(logs: LogRotation) -> dict[str, int]:
    """The host agent's ``rotate`` for a log rotated as ``logs`` says (by ``bin/logpipe.py``)."""
    return {"max_bytes": logs.max_size, "keep": logs.max_files}


def _info(host: str, record: dict[str, Any], state: str) -> WorkerInfo:
    return WorkerInfo(str(record["id"]), str(record.get("endpoint", "")), host, state,
                      str(record.get("gpu_type", "cpu")), tuple(record.get("gpu_indices") or ()),
                      ref=str(record.get("pid", record["id"])), started_at=float(record.get("started_at") or 0),
                      spec_revision=str(record.get("spec_revision", "")))
