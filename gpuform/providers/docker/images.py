"""Images on pool hosts: pulled from a registry when one is configured, otherwise copied with save/load
(streamed through this machine) and checked by image id, which is the digest of the image's content."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import docker.errors

from gpuform.errors import DockerError
from gpuform.providers.common import wheels
from gpuform.providers.docker.connect import Engine

CHUNK = 4 << 20


def image_id(engine: Engine, ref: str) -> str | None:
    try:
        found: str | None = engine.client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot inspect image {ref} on {engine.name}: {exc}", "Check dockerd on that host.",
                          engine.name) from exc
    return found


def ensure(targets: Sequence[Engine], ref: str, sources: Sequence[Engine], auth: dict[str, str] | None,
           progress: Callable[[str], None]) -> dict[str, str]:
    """Make ``ref`` present on every target with the same id; returns host -> image id."""
    wanted = _source_id(ref, sources, targets) if auth is None else None
    out: dict[str, str] = {}
    for target in targets:
        have = image_id(target, ref)
        if have is not None and (wanted is None or have == wanted):
            out[target.name] = have
            continue
        if auth is not None:
            progress(f"pulling {ref} on {target.name}")
            out[target.name] = _pull(target, ref, auth)
            continue
        source = next(s for s in [*sources, *targets] if image_id(s, ref) == wanted)
        progress(f"sending {ref} from {source.name} to {target.name}")
        _copy(source, target, ref)
        got = image_id(target, ref)
        if got is None or got != wanted:
            raise DockerError(f"image {ref} on {target.name} has id {got} after loading, expected {wanted}",
                              "The transfer was corrupted; run apply again.", target.name)
        out[target.name] = got
    return out


def _source_id(ref: str, sources: Sequence[Engine], targets: Sequence[Engine]) -> str:
    for engine in [*sources, *targets]:
        found = image_id(engine, ref)
        if found is not None:
            return found
    raise DockerError(f"image {ref} is on no host and no registry is configured",
                      "Build or pull it on this machine (or on one pool host), or set `registry:` on the pool.")


def _pull(target: Engine, ref: str, auth: dict[str, str]) -> str:
    try:
        image = target.client.images.pull(ref, auth_config=auth or None)
    except docker.errors.DockerException as exc:
        raise DockerError(f"pulling {ref} on {target.name} failed: {exc}",
                          "Check the registry URL and credentials on the pool.", target.name) from exc
    return str(image.id)


def _copy(source: Engine, target: Engine, ref: str) -> None:
    try:
        stream = source.client.api.get_image(ref, chunk_size=CHUNK)
        target.client.api.load_image(stream)  # type: ignore[no-untyped-call]
    except docker.errors.DockerException as exc:
        raise DockerError(f"copying {ref} from {source.name} to {target.name} failed: {exc}",
                          "Check free disk space on the target host.", target.name) from exc


def runtime_tag(base_image: str, house: Path) -> str:
    digest = hashlib.sha256(f"{base_image}|{house.name}".encode()).hexdigest()[:12]
    return f"gpuform/runtime:{digest}"


DOCKERFILE = """FROM {base}
COPY wheels /tmp/gpuform-wheels
RUN python3 -m venv /opt/gpuform \\
 && /opt/gpuform/bin/pip install --disable-pip-version-check --no-index --find-links /tmp/gpuform-wheels \\
      --no-deps /tmp/gpuform-wheels/gpuform-*.whl \\
 && /opt/gpuform/bin/pip install --disable-pip-version-check --no-index --find-links /tmp/gpuform-wheels {reqs} \\
 && rm -rf /tmp/gpuform-wheels
ENV PATH=/opt/gpuform/bin:$PATH PYTHONUNBUFFERED=1
LABEL gpuform.runtime=1
"""


def build_runtime(engine: Engine, base_image: str, cache: Path, progress: Callable[[str], None]) -> str:
    """The gpuform runtime image (gateway and built-in workers), built on ``engine`` from wheels made here."""
    probe = _run(engine, base_image, ["python3", "-c", wheels.Platform.PROBE])
    platform = wheels.Platform.parse(probe)
    requirements = wheels.gpuform_requirements()
    house = wheels.build(cache, platform, requirements)
    tag = runtime_tag(base_image, house)
    if image_id(engine, tag) is not None:
        return tag
    progress(f"building {tag} on {engine.name} from {base_image}")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = DOCKERFILE.format(base=base_image, reqs=" ".join(f"'{r}'" for r in requirements)).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for wheel in sorted(house.glob("*.whl")):
            tar.add(wheel, arcname=f"wheels/{wheel.name}")
    context.seek(0)
    try:
        engine.client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, network_mode="host",
                                   labels={"gpuform.runtime": "1"})
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise DockerError(f"building the gpuform runtime image on {engine.name} failed: {exc}",
                          f"Check that {base_image} has python3 with venv support.", engine.name) from exc
    return tag


def _run(engine: Engine, image: str, argv: list[str]) -> str:
    try:
        out = engine.client.containers.run(image, argv, remove=True, network_mode="host")
    except docker.errors.ImageNotFound as exc:
        raise DockerError(f"image {image} is not on {engine.name}", "Set base_image to an image the hosts have, "
                          "or configure a registry.", engine.name) from exc
    except docker.errors.DockerException as exc:
        raise DockerError(f"running {image} on {engine.name} failed: {exc}", "Check the image.", engine.name) from exc
    return out.decode() if isinstance(out, bytes) else str(out)
