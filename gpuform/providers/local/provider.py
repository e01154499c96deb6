"""The local provider: this machine is the pool's only host.

Files live under the pool's data directory (default ``DEPLOYMENT_DIR/local/POOL``, where DEPLOYMENT_DIR is
``~/.local/share/gpuform/deployments/LINEAGE`` or ``$GPUFORM_DATA_DIR/deployments/LINEAGE``):
``gateways/NAME/{config.json,supervisor.pid,gateway.log,queue.db}`` (``lineage-XXXXXXXX/gateways/NAME/`` in a
configured ``data_dir``, which workspaces may share) and ``workers/ID.json`` (pid file, naming its lineage) +
``workers/ID.log``. Workers are processes in their own session, so a
gateway restart does not take them down; the gateway adopts them again from their pid files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuform.errors import NoCapacity, ProviderError
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
from gpuform.providers.common.gpus import (
    GPU_USAGE_ARGS,
    NVIDIA_SMI_ARGS,
    occupancy,
    parse_gpu_usage,
    parse_nvidia_smi,
    place,
)
from gpuform.providers.local import LocalPool, python_problem, requirements_file
from gpuform.providers.local.volume import LocalVolumes
from gpuform.spec import EndpointSpec, RuntimeConfig
from gpuform.util import logpipe, procs
from gpuform.util.environ import GATEWAY_EXTRA, built_environment
from gpuform.workerspec import interpreter, requirement_lines, resolve_argv

HOST = "localhost"


class LocalProvider:
    def __init__(self, pool_name: str, pool: LocalPool, ctx: ProviderContext) -> None:
        self.pool_name = pool_name
        self.pool = pool
        self.ctx = ctx
        self.data_dir = Path(pool.data_dir) if pool.data_dir else ctx.state_dir / "local" / pool_name
        self.workers_dir = self.data_dir / "workers"
        self.volumes = LocalVolumes(ctx)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._placing = threading.Lock()  # placement and launch are one step, or two starts pick the same GPU

    # ---- the pool ------------------------------------------------------------------------------------

    def read_pool(self) -> Attrs | None:
        return {"data_dir": str(self.data_dir)} if self.data_dir.exists() else {}

    def create_pool(self) -> Attrs:
        self.workers_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.workers_dir.chmod(0o700)
        return {"data_dir": str(self.data_dir)}

    def delete_pool(self) -> None:
        workers = self.list_workers()
        for worker in workers:  # whatever its endpoints left behind (a start in flight)
            self.stop_worker(worker, grace_s=5.0)
        alive = [w.worker_id for w in self.list_workers() if w.state == "running"]
        if alive:
            raise ProviderError(f"workers still running after they were stopped: {', '.join(alive)}",
                                "Kill them (their pid files are under the pool's data directory) and destroy "
                                "again.", f"pool.{self.pool_name}")
        for worker in workers:
            self._forget(worker.worker_id)
        if self.data_dir.is_relative_to(self.ctx.state_dir):
            shutil.rmtree(self.data_dir, ignore_errors=True)
        elif self.pool.data_dir:
            shutil.rmtree(self._lineage_dir(), ignore_errors=True)

    # ---- volumes ------------------------------------------------------------------------------------

    def read_volume(self, name: str, volume: VolumeSpec) -> Observation | None:
        return self.volumes.read(volume)

    def stage_volume(self, name: str, volume: VolumeSpec) -> Attrs:
        return self.volumes.stage(volume)

    def remove_volume(self, name: str, volume: VolumeSpec) -> None:
        self.volumes.delete(volume)

    # ---- endpoints ----------------------------------------------------------------------------------

    def prepare_endpoint(self, name: str, spec: EndpointSpec) -> Attrs:
        """The worker's Python: with requirements (``worker.requirements``, a requirements.txt beside the
        handler), a virtualenv of its own, content-addressed and reused (``venvs/endpoint-NAME`` points at
        it); with ``worker.python`` alone, that environment, with gpuform installed there; else gpuform's."""
        from gpuform.providers.common import venvs
        from gpuform.providers.common.shell import LocalShell

        python, reqs = spec.worker.python, self.requirements(spec)
        self._check_python(name, python)
        link = self._env_link(name)
        if not reqs:
            link.unlink(missing_ok=True)
            if not python:
                return {}
            prepared = venvs.ensure(LocalShell(), interpreter(python), python, str(self.data_dir), str(self.data_dir),
                                    self.ctx.state_dir / "wheelhouse", f"endpoint-{name}", [], with_deps=False,
                                    progress=self._progress(name))
            return {"python": prepared}
        base = interpreter(python) if python else getattr(sys, "_base_executable", sys.executable)
        prepared = venvs.worker_env(LocalShell(), base, str(self.data_dir), str(self.data_dir),
                                    self.ctx.state_dir / "wheelhouse", reqs, self._progress(name))
        _point(link, Path(prepared).parent.parent)
        return {"python": prepared, "environment": Path(prepared).parent.parent.name}

    def requirements(self, spec: EndpointSpec) -> list[str]:
        """``worker.requirements`` and the lines of the requirements.txt beside the handler."""
        found = requirements_file(spec, self.ctx.config_dir)
        lines = [line for _, line in requirement_lines(found.read_text())] if found else []
        return [*spec.worker.requirements, *lines]

    def _check_python(self, name: str, python: str | None) -> None:
        problem = python_problem(python)
        if problem is not None:
            raise ProviderError(f"endpoint {name}: worker.python: {problem}", "Fix worker.python in the "
                                "configuration.", f"endpoint.{name}")

    def _progress(self, name: str) -> Callable[[str], None]:
        return lambda message: self.ctx.progress(f"endpoint {name}: {message}")

    def _env_link(self, name: str) -> Path:
        """Points at the endpoint's environment; per lineage in a configured data directory (workspaces may
        share one), while the content-addressed environments themselves are shared."""
        return (self._lineage_dir() if self.pool.data_dir else self.data_dir) / "venvs" / f"endpoint-{name}"

    def read_endpoint(self, name: str, spec: EndpointSpec) -> Observation:
        """A worker with requirements whose environment is missing or stale (requirements.txt changed) is
        repaired by the next apply; a ``worker.python`` that is gone is an error here (plan and refresh)."""
        from gpuform.providers.common import venvs

        self._check_python(name, spec.worker.python)
        reqs = self.requirements(spec)
        if not reqs:
            return Observation()
        link = self._env_link(name)
        if venvs.built_with(str(link)) == venvs.worker_requirements(reqs):
            return Observation({"environment": link.resolve().name})
        return Observation(repair=[f"the worker environment of endpoint {name} is missing or out of date"])

    def remove_endpoint(self, name: str, spec: EndpointSpec) -> None:
        for worker in self.list_workers(name):
            self.stop_worker(worker, grace_s=5.0)
            self._forget(worker.worker_id)
        # a worker whose starter died between spawning it and writing its record (a gateway killed mid-start)
        # has no record: found by the variables every worker of this deployment and endpoint carries
        for pid in procs.find_by_environ({"GPUFORM_LINEAGE": self.ctx.lineage, "RUNPOD_ENDPOINT_ID": name}):
            procs.terminate(pid, 5.0, group=True)
        self._env_link(name).unlink(missing_ok=True)

    # ---- gateway daemon -----------------------------------------------------------------------------

    def _gateway_dir(self, name: str) -> Path:
        """The gateway's files. The default data directory is this lineage's already; a configured one may be
        shared by workspaces, so the gateway gets ``lineage-XXXXXXXX/gateways/NAME`` in it (a gateway an earlier
        gpuform kept in ``gateways/NAME`` there goes on using that directory while its configuration is ours)."""
        if not self.pool.data_dir:
            return self.data_dir / "gateways" / name
        keyed = self._lineage_dir() / "gateways" / name
        legacy = self.data_dir / "gateways" / name
        return legacy if not keyed.exists() and _config_lineage(legacy) == self.ctx.lineage else keyed

    def _lineage_dir(self) -> Path:
        return self.data_dir / f"lineage-{self.ctx.lineage[:8]}"

    def _labels(self, name: str) -> dict[str, str]:
        return {"gpuform.lineage": self.ctx.lineage, "gpuform.address": f"gateway.{name}"}

    def _gateway_pid(self, name: str) -> int | None:
        pidfile = self._gateway_dir(name) / "supervisor.pid"
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(pidfile.read_text())
            if procs.alive(int(data["pid"]), data.get("started")):
                return int(data["pid"])
        return next(procs.find_by_labels(self._labels(name)), None)

    def read_gateway(self, name: str) -> Attrs | None:
        pid = self._gateway_pid(name)
        return {"pid": pid} if pid else None

    def start_gateway(self, name: str, config: RuntimeConfig) -> Attrs:
        gdir = self._gateway_dir(name)
        gdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        gdir.chmod(0o700)
        from gpuform.providers.common.remote_gateway import ship_tls
        from gpuform.providers.common.shell import LocalShell

        text = config.on_host(data_dir=str(gdir), host_tls=ship_tls(LocalShell(), config, str(gdir))).to_file_text()
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        running = self._gateway_pid(name)
        cfg_path = gdir / "config.json"
        if running and (gdir / "config.sha").exists() and (gdir / "config.sha").read_text() == digest:
            return {"pid": running, "config_sha": digest}  # adopt: already running this configuration
        if running:
            self.stop_gateway(name, remove_data=False)
        _write_private(cfg_path, text)
        (gdir / "config.sha").write_text(digest)
        label_args = [a for k, v in self._labels(name).items() for a in ("--label", f"{k}={v}")]
        argv = [sys.executable, "-m", "gpuform.util.supervise", "--pidfile", str(gdir / "supervisor.pid"),
                *label_args, "--log-format", config.gateway.log_format, "--", sys.executable, "-m",
                "gpuform.gateway", "--config", str(cfg_path)]
        logs = config.gateway.logs
        proc = logpipe.spawn(argv, gdir / "gateway.log", logs.max_size, logs.max_files, env=_gateway_env())
        return {"pid": proc.pid, "config_sha": digest}

    def reload_gateway(self, name: str, config: RuntimeConfig) -> Attrs | None:
        running = self._gateway_pid(name)
        if not running:
            return None
        gdir = self._gateway_dir(name)  # config.sha stays the started one: a later start restarts, never adopts
        _write_private(gdir / "config.json", config.on_host(data_dir=str(gdir)).to_file_text())
        return {"pid": running}

    def stop_gateway(self, name: str, remove_data: bool) -> None:
        pid = self._gateway_pid(name)
        while pid:
            procs.terminate(pid, grace=30.0)
            pid = self._gateway_pid(name)
        gdir = self._gateway_dir(name)
        with contextlib.suppress(FileNotFoundError):
            (gdir / "supervisor.pid").unlink()
        if remove_data:
            shutil.rmtree(gdir, ignore_errors=True)

    def gateway_logs(self, name: str, tail: int = 100) -> str:
        return procs.tail(self._gateway_dir(name) / "gateway.log", tail)

    # ---- inventory and workers ----------------------------------------------------------------------

    def inventory(self) -> list[HostInventory]:
        try:
            out = subprocess.run([self.pool.nvidia_smi, *NVIDIA_SMI_ARGS], capture_output=True, text=True,
                                 timeout=30, check=False)
        except FileNotFoundError:
            return [HostInventory(HOST, True)]
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [HostInventory(HOST, True, reason=f"nvidia-smi failed: {exc}")]
        if out.returncode != 0:
            return [HostInventory(HOST, True, reason=f"nvidia-smi exited {out.returncode}: {out.stderr[-200:]}")]
        try:
            return [HostInventory(HOST, True, gpus=tuple(parse_nvidia_smi(out.stdout)))]
        except ValueError as exc:
            return [HostInventory(HOST, True, reason=str(exc))]

    def gpu_usage(self) -> list[GpuUsage]:
        try:
            out = subprocess.run([self.pool.nvidia_smi, *GPU_USAGE_ARGS], capture_output=True, text=True, timeout=30,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return parse_gpu_usage(out.stdout, HOST) if out.returncode == 0 else []

    def start_worker(self, launch: WorkerLaunch) -> WorkerInfo:
        with self._placing:
            return self._start_worker(launch)

    def _start_worker(self, launch: WorkerLaunch) -> WorkerInfo:
        used, count = occupancy(self.list_workers())
        spot = place(self.inventory(), used, count, launch.gpu_types, launch.gpu_count)
        if spot is None:
            raise NoCapacity(f"no free GPU of type {' or '.join(launch.gpu_types)} on this machine",
                             "Free GPUs, add a type to gpu.types, or lower max_workers.", f"pool.{self.pool_name}")
        self.workers_dir.mkdir(parents=True, exist_ok=True)
        env = built_environment({**launch.env, "GPUFORM_GPU_TYPE": spot.gpu_type, "GPUFORM_LINEAGE": launch.lineage})
        if spot.indices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in spot.indices)
        if launch.volume_path:
            env.setdefault("GPUFORM_VOLUME_PATH", launch.volume_path)
            env["RUNPOD_VOLUME_PATH"] = launch.volume_path  # no /runpod-volume mount outside a container
        env.update(self._write_files(launch))
        link = self._env_link(launch.endpoint)
        python = str(link / "bin" / "python") if link.exists() else interpreter(launch.python)
        argv = resolve_argv(launch.command, python)
        cwd = launch.workdir or str(self.ctx.config_dir)
        log_path = self.workers_dir / f"{launch.worker_id}.log"
        try:
            proc = logpipe.spawn(argv, log_path, launch.logs.max_size, launch.logs.max_files, cwd=cwd, env=env)
        except OSError as exc:
            raise ProviderError(f"cannot start worker {launch.worker_id}: {exc.strerror} ({argv[0]})",
                                "Check worker.command and worker.python.", f"endpoint.{launch.endpoint}") from exc
        self._children[launch.worker_id] = proc
        info = WorkerInfo(launch.worker_id, launch.endpoint, HOST, "running", spot.gpu_type, spot.indices,
                          ref=str(proc.pid), started_at=time.time(), spec_revision=launch.spec_revision)
        record = {"pid": proc.pid, "started": procs.start_time(proc.pid), "lineage": launch.lineage,
                  "endpoint": launch.endpoint, "gpu_type": spot.gpu_type, "gpu_indices": list(spot.indices),
                  "started_at": info.started_at, "spec_revision": launch.spec_revision, "argv": argv}
        _write_json(self.workers_dir / f"{launch.worker_id}.json", record)
        return info

    def _write_files(self, launch: WorkerLaunch) -> dict[str, str]:
        """The worker's files (TLS) in ``workers/files`` (0700; each file 0600); their variables."""
        directory = self.workers_dir / "files"
        if launch.files:
            directory.mkdir(mode=0o700, exist_ok=True)
        for name, data in launch.named_files().items():
            _write_private(directory / name, data)
        return launch.file_env(str(directory))

    def stop_worker(self, worker: WorkerInfo, grace_s: float) -> None:
        record = self._record(worker.worker_id)
        if record and procs.alive(int(record["pid"]), record.get("started")):
            procs.terminate(int(record["pid"]), grace_s, group=True)
        child = self._children.pop(worker.worker_id, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        if record is not None:
            record["stopped"] = True
            _write_json(self.workers_dir / f"{worker.worker_id}.json", record)

    def list_workers(self, endpoint: str | None = None) -> list[WorkerInfo]:
        out: list[WorkerInfo] = []
        if not self.workers_dir.exists():
            return out
        for path in sorted(self.workers_dir.glob("*.json")):
            record = self._record(path.stem)
            if not record or record.get("lineage") != self.ctx.lineage:
                continue
            if endpoint is not None and record.get("endpoint") != endpoint:
                continue
            out.append(self._info(path.stem, record))
        return out

    def _info(self, worker_id: str, record: dict[str, Any]) -> WorkerInfo:
        child = self._children.get(worker_id)
        alive = procs.alive(int(record["pid"]), record.get("started"))
        # Poll after the liveness check: a child that exits between the two still shows its exit code.
        code = child.poll() if child is not None else None
        running = code is None and alive
        state = "running" if running else ("stopped" if record.get("stopped") else "exited")
        return WorkerInfo(worker_id, str(record["endpoint"]), HOST, state, str(record.get("gpu_type", "cpu")),
                          tuple(record.get("gpu_indices") or ()), exit_code=code, ref=str(record["pid"]),
                          started_at=float(record.get("started_at") or 0),
                          spec_revision=str(record.get("spec_revision", "")))

    def _record(self, worker_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.workers_dir / f"{worker_id}.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def _forget(self, worker_id: str) -> None:
        """Remove a worker's pid file; its log is kept (renamed) so a crash can still be read."""
        with contextlib.suppress(FileNotFoundError):
            (self.workers_dir / f"{worker_id}.json").unlink()

    def remove_worker(self, worker: WorkerInfo) -> None:
        self._forget(worker.worker_id)

    def worker_logs(self, worker: WorkerInfo, tail: int = 50) -> str:
        return procs.tail(self.workers_dir / f"{worker.worker_id}.log", tail)

    def close(self) -> None:
        return None


def _gateway_env() -> dict[str, str]:
    """The gateway's environment: the allowlist, the SSH agent and Docker settings it needs to drive pools."""
    return built_environment({"PYTHONUNBUFFERED": "1"}, extra_allowed=GATEWAY_EXTRA)


def _config_lineage(gdir: Path) -> str | None:
    """The lineage in a gateway directory's configuration (None when there is none)."""
    try:
        return str(json.loads((gdir / "config.json").read_text())["lineage"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _point(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target`` (replaced atomically)."""
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _write_private(path: Path, content: str | bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode() if isinstance(content, str) else content)
    tmp.replace(path)
