"""The docker provider: workers and the gateway are containers on the pool's Docker hosts.

- Containers carry labels (``gpuform.lineage``, ``gpuform.address``, ``gpuform.endpoint``, ``gpuform.revision``)
  and run with host networking (workers dial the gateway), no restart policy (the gateway decides), the
  volume read-only at ``/runpod-volume`` and GPUs assigned by index with device requests.
- A worker's environment is a file in a per-container directory on the host (mounted at ``/gpuform``), read
  by a small entry script, so a stopped container can be restarted for a new worker (our FlashBoot).
  Stopped containers are kept (renamed ``gpuform-warm-…``) and evicted least recently used when the host's
  free disk drops below ``min_free_disk_percent``.
- The gateway is a container with ``restart=always`` running the gpuform runtime image, which apply builds
  from wheels made on this machine when no host has it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shlex
import threading
import time
from collections.abc import Sequence
from typing import Any

import docker.errors
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig

from gpuform.config.schema import LogRotation
from gpuform.errors import DockerError, GpuformError, NoCapacity
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
from gpuform.providers.common import existing_volume, remote_volume, sshconfig, staging
from gpuform.providers.common.gpus import (
    GPU_USAGE_ARGS,
    NVIDIA_SMI_ARGS,
    occupancy,
    parse_gpu_usage,
    parse_nvidia_smi,
    place,
)
from gpuform.providers.common.hosts import SSHHosts
from gpuform.providers.common.remote_gateway import remote_config
from gpuform.providers.common.shell import Shell
from gpuform.providers.docker import DockerPool, images
from gpuform.providers.docker.connect import Engine, connect_local, connect_ssh
from gpuform.spec import EndpointSpec, RuntimeConfig
from gpuform.util.manifests import Checksums
from gpuform.util.volume_checks import HostCheck
from gpuform.workerspec import VOLUME_MOUNT, resolve_argv

RUNTIME_PYTHON = "/opt/gpuform/bin/python"
ENTRY = 'set -a\n. /gpuform/env\nset +a\nexec "$@"\n'


def device_requests(indices: tuple[int, ...]) -> list[DeviceRequest]:
    """GPUs by index for a container (empty for CPU workers)."""
    if not indices:
        return []
    return [DeviceRequest(driver="nvidia", device_ids=[str(i) for i in indices], capabilities=[["gpu"]])]


def log_config(logs: LogRotation) -> LogConfig:
    """The json-file log driver rotating as ``logs`` says (its ``max-file`` counts the current file too);
    ``docker logs`` and ``gpuform logs`` read across the rotated files."""
    return LogConfig(type=LogConfig.types.JSON, config={"max-size": str(logs.max_size),
                                                        "max-file": str(logs.max_files + 1)})


def env_text(env: dict[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))


class DockerProvider:
    def __init__(self, pool_name: str, pool: DockerPool, ctx: ProviderContext) -> None:
        self.pool_name, self.pool, self.ctx = pool_name, pool, ctx
        ssh_specs = [h for h in pool.hosts if not h.docker_host]
        self.ssh = SSHHosts(ssh_specs, pool.known_hosts, pool.trust_on_first_use, pool.connect_timeout,
                            pool.nvidia_smi, sshconfig.config_path(pool.ssh_config, ctx.config_dir),
                            f"pool.{pool_name}")
        self.names = [h.label for h in pool.hosts]
        self.specs = {h.label: h for h in pool.hosts}
        self.data = posixpath.join(pool.data_dir, f"lineage-{ctx.lineage[:8]}")
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._placing = threading.Lock()
        self._inventory: tuple[float, list[HostInventory]] | None = None
        self._last_evict = 0.0

    # ---- connections ------------------------------------------------------------------------------

    def engine(self, name: str) -> Engine:
        with self._lock:
            if name not in self._engines:
                spec = self.specs[name]
                if spec.docker_host:
                    self._engines[name] = connect_local(name, spec.docker_host, self.pool.connect_timeout)
                else:
                    self._engines[name] = connect_ssh(name, self.ssh.conn(name), self.pool.connect_timeout)
            return self._engines[name]

    def engines(self, names: list[str] | None = None) -> tuple[dict[str, Engine], dict[str, str]]:
        found: dict[str, Engine] = {}
        errors: dict[str, str] = {}
        for name in names or self.names:
            try:
                found[name] = self.engine(name)
            except GpuformError as exc:
                errors[name] = exc.message
        return found, errors

    def _sources(self) -> list[Engine]:
        """This machine's engine, when it has one: images built here are copied from it."""
        url = os.environ.get("DOCKER_HOST") or ("unix:///var/run/docker.sock"
                                                if os.path.exists("/var/run/docker.sock") else "")
        if not url or any(s.docker_host == url for s in self.specs.values()):
            return []
        try:
            return [self.engine_for_url("here", url)]
        except GpuformError:
            return []

    def engine_for_url(self, name: str, url: str) -> Engine:
        with self._lock:
            if name not in self._engines:
                self._engines[name] = connect_local(name, url, self.pool.connect_timeout)
            return self._engines[name]

    def _usable(self) -> list[str]:
        return [n for n in self.names if not self.specs[n].cordon]

    def _fail_if_all(self, errors: dict[str, str], total: int, what: str) -> None:
        if errors and len(errors) >= total:
            raise DockerError(f"{what} failed on every host: " + "; ".join(f"{h}: {e}" for h, e in errors.items()),
                              "Check that the hosts are up and dockerd runs.", f"pool.{self.pool_name}")
        for host, error in errors.items():
            self.ctx.progress(f"{host} skipped: {error}")

    # ---- the pool -------------------------------------------------------------------------------------

    def read_pool(self) -> Attrs | None:
        return {}

    def create_pool(self) -> Attrs:
        found, errors = self.engines()
        self._fail_if_all(errors, len(self.names), "connecting to dockerd")
        for engine in found.values():
            engine.shell.run(["mkdir", "-p", posixpath.join(self.data, "containers"),
                              posixpath.join(self.data, "gateways")])
            self._evict(engine)
        return {"hosts": {n: e.client.version().get("Version") for n, e in found.items()}, "unreachable": errors}

    def delete_pool(self) -> None:
        self._remove_worker_containers(None)  # whatever its endpoints left behind (a start in flight)
        alive = [w.worker_id for w in self.list_workers() if w.state == "running"]
        if alive:
            raise DockerError(f"worker containers still running after removal: {', '.join(alive)}",
                              "Remove them on the hosts (label gpuform.lineage), then destroy again.",
                              f"pool.{self.pool_name}")
        found, _ = self.engines()
        for engine in found.values():
            engine.shell.run(["rm", "-rf", "--", self.data])

    # ---- volumes ----------------------------------------------------------------------------------

    def read_volume(self, name: str, volume: VolumeSpec) -> Observation | None:
        found, errors = self.engines()
        self._fail_if_all(errors, len(self.names), "reading the volume")
        shells = {n: e.shell for n, e in found.items()}
        if volume.source is None:
            return existing_volume.observe(volume, *self._check_existing(volume, shells), errors)
        held = {n: remote_volume.held(s, volume.path) for n, s in shells.items()}
        return remote_volume.observe(self.ctx, volume, held, errors)

    def _check_existing(self, volume: VolumeSpec,
                        shells: dict[str, Shell]) -> tuple[Checksums | None, dict[str, HostCheck | None]]:
        sums, cache = existing_volume.checksums(self.ctx, volume), existing_volume.hash_cache(self.ctx)
        return sums, {n: remote_volume.check_existing(s, n, volume.path, sums, cache) for n, s in shells.items()}

    def stage_volume(self, name: str, volume: VolumeSpec) -> Attrs:
        found, errors = self.engines()
        self._fail_if_all(errors, len(self.names), "staging the volume")
        shells = {n: e.shell for n, e in found.items()}
        if volume.source is None:
            return {**existing_volume.require(volume, *self._check_existing(volume, shells)), "unreachable": errors}
        return {**staging.stage(self.ctx, volume, shells), "unreachable": errors}

    def remove_volume(self, name: str, volume: VolumeSpec) -> None:
        if volume.source is None:
            return  # files gpuform did not put there: never deleted
        found, errors = self.engines()
        for engine in found.values():
            remote_volume.remove(engine.shell, volume.path)
        self._fail_if_all(errors, len(self.names), "removing the volume")

    # ---- images -----------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str] | None:
        registry = self.pool.registry
        if registry is None:
            return None
        auth = {"serveraddress": registry.url}
        if registry.username:
            auth.update(username=registry.username, password=registry.password or "")
        return auth

    def runtime_image(self, targets: list[Engine]) -> str:
        """The gpuform runtime image, built once where the base image is, then copied to ``targets``."""
        candidates = [*self._sources(), *targets]
        builder = next((e for e in candidates if images.image_id(e, self.pool.base_image) is not None), None)
        if builder is None and self._auth() is not None and targets:
            images.ensure(targets[:1], self.pool.base_image, [], self._auth(), self.ctx.progress)
            builder = targets[0]
        if builder is None:
            raise DockerError(f"the base image {self.pool.base_image} is on no host and not on this machine",
                              "Pull or load it on this machine or on a pool host, set base_image to one they "
                              "have, or configure a registry on the pool.", f"pool.{self.pool_name}")
        tag = images.build_runtime(builder, self.pool.base_image, self.ctx.state_dir / "wheelhouse",
                                   self.ctx.progress)
        images.ensure(targets, tag, [builder, *self._sources()], None, self.ctx.progress)
        return tag

    def _runtime_on(self, engine: Engine) -> str:
        """The newest gpuform runtime image on the host (apply put the current one there)."""
        found = engine.client.images.list(filters={"label": "gpuform.runtime=1"})
        tagged = sorted((i for i in found if i.tags), key=lambda i: i.attrs.get("Created", ""), reverse=True)
        if not tagged:
            raise DockerError(f"no gpuform runtime image on {engine.name}", "Run `gpuform apply` to send it.",
                              engine.name)
        return str(tagged[0].tags[0])

    def _worker_image(self, image: str | None, targets: list[Engine]) -> str:
        if image:
            images.ensure(targets, image, self._sources(), self._auth(), self.ctx.progress)
            return image
        return self.runtime_image(targets)

    # ---- gateway ----------------------------------------------------------------------------------

    def _gateway_engine_name(self, name: str) -> str:
        """The host of gateway replica ``name`` (replica i on the pool's i-th host, see gateway/replicas.py)."""
        index = key_index(name)
        if index >= len(self.names):
            raise DockerError(f"gateway replica {name} needs host {index + 1} of the pool, which has {len(self.names)}",
                              "Add hosts to the pool, or lower the gateway's replicas.")
        return self.names[index]

    def _gateway_container(self, name: str) -> Container | None:
        try:
            engine = self.engine(self._gateway_engine_name(name))
        except GpuformError:
            return None
        found = engine.client.containers.list(all=True, filters={"label": [f"gpuform.lineage={self.ctx.lineage}",
                                                                          f"gpuform.address=gateway.{name}"]})
        return found[0] if found else None

    def gateway_logs(self, name: str, tail: int = 100) -> str:
        container = self._gateway_container(name)
        try:
            return "" if container is None else str(container.logs(tail=tail).decode(errors="replace"))
        except docker.errors.DockerException:
            return ""

    def read_gateway(self, name: str) -> Attrs | None:
        container = self._gateway_container(name)
        return {"container": container.short_id} if container and container.status == "running" else None

    def start_gateway(self, name: str, config: RuntimeConfig) -> Attrs:
        engine = self.engine(self._gateway_engine_name(name))
        tag = self.runtime_image([engine])
        gdir = posixpath.join(self.data, "gateways", name)
        engine.shell.run(["mkdir", "-p", gdir])
        body = remote_config(config, engine.shell, gdir).to_file_text().encode()
        digest = hashlib.sha256(body + tag.encode()).hexdigest()[:16]
        existing = self._gateway_container(name)
        if existing is not None and existing.labels.get("gpuform.config") == digest and existing.status == "running":
            return {"container": existing.short_id, "image": tag}
        if existing is not None:
            _quiet(lambda: existing.stop(timeout=30))
            _quiet(lambda: existing.remove(force=True))
        engine.shell.write_file(posixpath.join(gdir, "config.json"), body, mode=0o600)
        binds = {gdir: {"bind": gdir, "mode": "rw"}}
        if any(s.docker_host for s in self.specs.values()):
            # it drives this machine's engine: the socket, and the directory of worker files dockerd mounts
            binds[self.data] = {"bind": self.data, "mode": "rw"}
            if os.path.exists("/var/run/docker.sock"):
                binds["/var/run/docker.sock"] = {"bind": "/var/run/docker.sock", "mode": "rw"}
        try:
            container = engine.client.containers.run(
                tag, [RUNTIME_PYTHON, "-m", "gpuform.gateway", "--config", posixpath.join(gdir, "config.json")],
                name=f"gpuform-gateway-{self.ctx.lineage[:8]}-{name}", detach=True, network_mode="host",
                restart_policy={"Name": "always"}, volumes=binds, log_config=log_config(config.gateway.logs),
                labels={"gpuform.lineage": self.ctx.lineage, "gpuform.address": f"gateway.{name}",
                        "gpuform.config": digest})
        except docker.errors.DockerException as exc:
            raise DockerError(f"starting the gateway container on {engine.name} failed: {exc}",
                              "See `docker logs` on that host.", engine.name) from exc
        return {"container": container.short_id, "image": tag}

    def reload_gateway(self, name: str, config: RuntimeConfig) -> Attrs | None:
        """The configuration file is bind-mounted at the same path in the container: rewrite it there."""
        container = self._gateway_container(name)
        if container is None or container.status != "running":
            return None
        engine = self.engine(self._gateway_engine_name(name))
        gdir = posixpath.join(self.data, "gateways", name)
        body = remote_config(config, engine.shell, gdir).to_file_text().encode()
        engine.shell.write_file(posixpath.join(gdir, "config.json"), body, mode=0o600)
        return {"container": container.short_id, "image": str(container.attrs.get("Config", {}).get("Image", ""))}

    def stop_gateway(self, name: str, remove_data: bool) -> None:
        container = self._gateway_container(name)
        if container is not None:
            _quiet(lambda: container.stop(timeout=30))
            _quiet(lambda: container.remove(force=True))
        if remove_data:
            self.engine(self._gateway_engine_name(name)).shell.run(["rm", "-rf", "--",
                                                                    posixpath.join(self.data, "gateways", name)])

    # ---- endpoints --------------------------------------------------------------------------------

    def prepare_endpoint(self, name: str, spec: EndpointSpec) -> Attrs:
        found, errors = self.engines(self._usable())
        self._fail_if_all(errors, len(self._usable()), "preparing hosts")
        image = self._worker_image(spec.worker.image, list(found.values()))
        return {"image": image, "hosts_with_image": sorted(found), "unreachable": errors}

    def read_endpoint(self, name: str, spec: EndpointSpec) -> Observation:
        image = spec.worker.image
        found, _ = self.engines(self._usable())
        if image:
            holding = sorted(n for n, e in found.items() if images.image_id(e, image) is not None)
        else:
            holding = sorted(n for n, e in found.items()
                             if e.client.images.list(filters={"label": "gpuform.runtime=1"}))
        warm = {n: len(self._warm(e, name)) for n, e in found.items()}
        missing = sorted(set(found) - set(holding))
        repair = [f"image missing on {', '.join(missing)}"] if missing else []
        return Observation({"hosts_with_image": holding, "warm_containers": warm}, repair=repair)

    def remove_endpoint(self, name: str, spec: EndpointSpec) -> None:
        self._remove_worker_containers(name)

    def _remove_worker_containers(self, endpoint: str | None) -> None:
        """Every worker container of ``endpoint`` (of every endpoint: None), running or kept."""
        found, _ = self.engines()
        labels = [f"gpuform.lineage={self.ctx.lineage}"]
        labels.append(f"gpuform.endpoint={endpoint}" if endpoint else "gpuform.endpoint")
        for engine in found.values():
            for container in engine.client.containers.list(all=True, filters={"label": labels}):
                _quiet(lambda c=container: c.stop(timeout=5))
                _quiet(lambda c=container: c.remove(force=True))
                slot = container.labels.get("gpuform.slot")
                if slot:
                    engine.shell.run(["rm", "-rf", "--", posixpath.join(self.data, "containers", slot)])

    # ---- inventory and workers --------------------------------------------------------------------

    def inventory(self) -> list[HostInventory]:
        now = time.monotonic()
        if self._inventory is not None and now - self._inventory[0] < 5:
            return self._inventory[1]
        by_ssh = {h.host: h for h in self.ssh.inventory()} if self.ssh.hosts else {}
        out = []
        for name in self.names:
            spec = self.specs[name]
            if spec.docker_host:
                out.append(self._local_inventory(name, spec.cordon))
            else:
                inv = by_ssh[name]
                out.append(HostInventory(inv.host, inv.reachable, inv.reason, inv.gpus, spec.cordon))
        self._inventory = (now, out)
        self._evict_all(now)
        return out

    def gpu_usage(self) -> list[GpuUsage]:
        out = self.ssh.gpu_usage() if self.ssh.hosts else []
        for name in self.names:
            if self.specs[name].docker_host:
                try:
                    result = self.engine(name).shell.run([self.pool.nvidia_smi, *GPU_USAGE_ARGS], check=False)
                except GpuformError:
                    continue
                out.extend(parse_gpu_usage(result.text, name) if result.code == 0 else [])
        return out

    def _evict_all(self, now: float) -> None:
        """Called as the gateway observes its hosts: keep free disk above the threshold (once a minute)."""
        if now - self._last_evict < 60:
            return
        self._last_evict = now
        found, _ = self.engines([h.host for h in (self._inventory or (0, []))[1] if h.reachable])
        for engine in found.values():
            try:
                self._evict(engine)
            except (GpuformError, docker.errors.DockerException) as exc:
                self.ctx.progress(f"eviction on {engine.name} failed: {exc}")

    def _local_inventory(self, name: str, cordon: bool) -> HostInventory:
        try:
            result = self.engine(name).shell.run([self.pool.nvidia_smi, *NVIDIA_SMI_ARGS], check=False)
        except GpuformError as exc:
            return HostInventory(name, False, exc.message, cordoned=cordon)
        try:
            gpus = tuple(parse_nvidia_smi(result.text)) if result.code == 0 else ()
        except ValueError as exc:
            return HostInventory(name, True, reason=f"cannot parse nvidia-smi output: {exc}", cordoned=cordon)
        return HostInventory(name, True, gpus=gpus, cordoned=cordon)

    def _containers(self, engine: Engine, endpoint: str | None, prefix: str) -> list[Container]:
        labels = [f"gpuform.lineage={self.ctx.lineage}"] + ([f"gpuform.endpoint={endpoint}"] if endpoint else [])
        found = engine.client.containers.list(all=True, filters={"label": labels})
        return [c for c in found if (c.name or "").startswith(prefix)]

    def _warm(self, engine: Engine, endpoint: str | None, revision: str | None = None) -> list[Container]:
        warm = self._containers(engine, endpoint, "gpuform-warm-")
        return [c for c in warm if revision is None or c.labels.get("gpuform.revision") == revision]

    def start_worker(self, launch: WorkerLaunch) -> WorkerInfo:
        with self._placing:
            used, count = occupancy(self.list_workers())
            kept = self._kept_for(launch)
            spot = place(self.inventory(), used, count, launch.gpu_types, launch.gpu_count, prefer=set(kept))
            if spot is None:
                raise NoCapacity(f"no host in pool {self.pool_name} has a free GPU of type "
                                 f"{' or '.join(launch.gpu_types)}", "Free GPUs, add hosts or types, or lower "
                                 "max_workers.", f"pool.{self.pool_name}")
            restart = reusable(kept.get(spot.host, []), spot.gpu_type, len(spot.indices), used.get(spot.host, set()))
            indices = _indices(restart) if restart is not None else spot.indices
            return self._run_worker(launch, spot.host, spot.gpu_type, indices, restart)

    def _kept_for(self, launch: WorkerLaunch) -> dict[str, list[Container]]:
        """Per usable host, the kept containers this launch could restart (hosts without any left out)."""
        found, _ = self.engines(self._usable())
        kept = {name: self._warm(engine, launch.endpoint, launch.spec_revision) for name, engine in found.items()}
        return {name: containers for name, containers in kept.items() if containers}

    def _run_worker(self, launch: WorkerLaunch, host: str, gpu_type: str, indices: tuple[int, ...],
                    restart: Container | None) -> WorkerInfo:
        engine = self.engine(host)
        env = {**launch.env, "GPUFORM_GPU_TYPE": gpu_type}
        if launch.volume_path:
            env["GPUFORM_MODEL_PATH"] = env.get("GPUFORM_MODEL_PATH_IN_CONTAINER", VOLUME_MOUNT)
            env["RUNPOD_VOLUME_PATH"] = env["GPUFORM_VOLUME_ROOT"] = VOLUME_MOUNT
        env.update(launch.file_env("/gpuform"))
        try:
            container = self._restart_warm(engine, restart, launch, env) if restart is not None else \
                self._create(engine, launch, env, gpu_type, indices)
        except docker.errors.DockerException as exc:
            raise DockerError(f"starting worker {launch.worker_id} on {host} failed: {exc}",
                              "Check the image and the host's dockerd.", host) from exc
        return WorkerInfo(launch.worker_id, launch.endpoint, host, "running", gpu_type, indices,
                          ref=container.short_id, started_at=time.time(), spec_revision=launch.spec_revision)

    def _write_slot(self, engine: Engine, slot: str, env: dict[str, str], files: dict[str, bytes]) -> str:
        """The container's directory (mounted at /gpuform): entry script, environment, files (TLS)."""
        directory = posixpath.join(self.data, "containers", slot)
        engine.shell.run(["install", "-d", "-m", "700", directory])  # 0700 like its files (keys, token), kept ones too
        engine.shell.write_file(posixpath.join(directory, "entry.sh"), ENTRY.encode(), mode=0o755)
        engine.shell.write_file(posixpath.join(directory, "env"), env_text(env).encode(), mode=0o600)
        for name, data in files.items():
            engine.shell.write_file(posixpath.join(directory, name), data, mode=0o600)
        return directory

    def _create(self, engine: Engine, launch: WorkerLaunch, env: dict[str, str], gpu_type: str,
                indices: tuple[int, ...]) -> Container:
        image = launch.image or self._runtime_on(engine)
        python = RUNTIME_PYTHON if not launch.image else (launch.python or "python3")  # a user image: its python
        argv = resolve_argv(launch.command, python) if launch.command else _default_argv(engine, image)
        slot = launch.worker_id
        directory = self._write_slot(engine, slot, env, launch.named_files())
        volumes = {directory: {"bind": "/gpuform", "mode": "ro"}}
        if launch.volume_path:
            volumes[volume_root(launch)] = {"bind": VOLUME_MOUNT, "mode": "ro"}
        labels = {"gpuform.lineage": launch.lineage, "gpuform.address": f"endpoint.{launch.endpoint}",
                  "gpuform.endpoint": launch.endpoint, "gpuform.revision": launch.spec_revision,
                  "gpuform.slot": slot, "gpuform.gpu_type": gpu_type, "gpuform.gpu_indices": json.dumps(list(indices)),
                  "gpuform.keep": "1" if launch.keep_stopped else "0"}
        container = engine.client.containers.create(
            image, ["/bin/sh", "/gpuform/entry.sh", *argv], name=f"gpuform-w-{launch.worker_id}", labels=labels,
            network_mode="host", restart_policy={"Name": "no"}, volumes=volumes,  # type: ignore[arg-type]
            device_requests=device_requests(indices), working_dir=launch.workdir or None, detach=True,
            log_config=log_config(launch.logs))
        try:
            container.start()
        except docker.errors.DockerException:
            _quiet(lambda: container.remove(force=True))  # don't leave a "Created" container behind
            raise
        return container

    def _restart_warm(self, engine: Engine, container: Container, launch: WorkerLaunch,
                      env: dict[str, str]) -> Container:
        self._write_slot(engine, container.labels["gpuform.slot"], env, launch.named_files())
        container.rename(f"gpuform-w-{launch.worker_id}")
        container.start()
        return container

    def stop_worker(self, worker: WorkerInfo, grace_s: float) -> None:
        try:
            engine = self.engine(worker.host)
            container = engine.client.containers.get(f"gpuform-w-{worker.worker_id}")
        except docker.errors.NotFound:
            return
        except GpuformError as exc:
            raise DockerError(f"could not stop worker {worker.worker_id} on {worker.host}: {exc.message}",
                              exc.hint, worker.host) from exc
        try:
            container.stop(timeout=int(grace_s))
            if container.labels.get("gpuform.keep") == "1":
                container.rename(f"gpuform-warm-{container.labels['gpuform.slot']}")
                self._evict(engine)
            else:
                container.remove(force=True)
        except docker.errors.DockerException as exc:
            raise DockerError(f"stopping worker {worker.worker_id} on {worker.host} failed: {exc}",
                              "Check dockerd on that host.", worker.host) from exc

    def _evict(self, engine: Engine) -> None:
        """Remove kept containers, least recently stopped first, while free disk is below the threshold."""
        warm = self._warm(engine, None)
        for container in warm:
            container.reload()  # list() gives a summary; the stop time is in the full inspection
        warm.sort(key=lambda c: str(c.attrs["State"].get("FinishedAt", "")))
        while warm and (free := self._free_percent(engine)) < self.pool.min_free_disk_percent:
            victim = warm.pop(0)
            self.ctx.progress(f"{engine.name}: removing kept container {victim.name}: {free:.1f}% disk free, under "
                              f"min_free_disk_percent ({self.pool.min_free_disk_percent:g}%)")
            _quiet(lambda c=victim: c.remove(force=True))
            slot = posixpath.join(self.data, "containers", victim.labels["gpuform.slot"])
            engine.shell.run(["rm", "-rf", "--", slot])

    def _free_percent(self, engine: Engine) -> float:
        root = engine.client.info().get("DockerRootDir", "/var/lib/docker")
        out = engine.shell.run(["df", "-P", root]).text.splitlines()[-1].split()
        total, avail = int(out[1]), int(out[3])
        return 100.0 * avail / total if total else 100.0

    def list_workers(self, endpoint: str | None = None) -> list[WorkerInfo]:
        found, _ = self.engines([h.host for h in self.inventory() if h.reachable])
        out = []
        for name, engine in found.items():
            try:
                containers = self._containers(engine, endpoint, "gpuform-w-")
            except docker.errors.DockerException:
                continue
            for c in containers:
                # "created": a start that never got to run (its starter died): not running, and not a crash
                state = {"running": "running", "restarting": "running", "created": "stopped"}.get(c.status, "exited")
                code = c.attrs.get("State", {}).get("ExitCode") if state == "exited" else None
                worker_id = (c.name or "").removeprefix("gpuform-w-")
                indices = _indices(c)
                out.append(WorkerInfo(worker_id, c.labels.get("gpuform.endpoint", ""), name, state,
                                      c.labels.get("gpuform.gpu_type", "cpu"), indices, exit_code=code,
                                      ref=c.short_id, spec_revision=c.labels.get("gpuform.revision", "")))
        return out

    def worker_logs(self, worker: WorkerInfo, tail: int = 50) -> str:
        try:
            container = self.engine(worker.host).client.containers.get(f"gpuform-w-{worker.worker_id}")
            return str(container.logs(tail=tail).decode(errors="replace"))
        except (docker.errors.DockerException, GpuformError):
            return ""

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self.ssh.close()


def _default_argv(engine: Engine, image: str) -> list[str]:
    config = engine.client.images.get(image).attrs.get("Config", {})
    argv = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    if not argv:
        raise DockerError(f"image {image} has no command", "Set worker.command on the endpoint.", engine.name)
    return argv


def _indices(container: Container) -> tuple[int, ...]:
    return tuple(json.loads(container.labels.get("gpuform.gpu_indices", "[]")))


def reusable(kept: Sequence[Container], gpu_type: str, count: int, used: set[int]) -> Container | None:
    """A kept container of this GPU type and count whose GPUs are all free: restarting it beats a new one."""
    for container in kept:
        indices = _indices(container)
        if container.labels.get("gpuform.gpu_type") == gpu_type and len(indices) == count and not used & set(indices):
            return container
    return None


def _quiet(action: Any) -> None:
    with contextlib.suppress(docker.errors.DockerException):
        action()


def volume_root(launch: WorkerLaunch) -> str:
    """The host directory mounted at /runpod-volume: the whole volume (as on RunPod), so a model at
    ``model.path`` inside it is at ``/runpod-volume/PATH`` (``GPUFORM_MODEL_PATH`` in the container)."""
    return launch.env.get("GPUFORM_VOLUME_ROOT") or launch.volume_path or ""
