"""Volumes without ``source``: files already on every host (NFS, a pre-pulled copy). gpuform reads them
(presence, sizes, the manifest's checksums) and reports what is wrong; it never writes or deletes there."""

from __future__ import annotations

from collections.abc import Mapping

from gpuform.errors import ProviderError
from gpuform.provider import Attrs, Observation, ProviderContext, VolumeSpec
from gpuform.util.manifests import Checksums, read_checksums
from gpuform.util.volume_checks import HashCache, HostCheck, expected_content, host_notes, verdict


def checksums(ctx: ProviderContext, volume: VolumeSpec) -> Checksums | None:
    """The volume's ``manifest:`` checksums (None without one); raises ProviderError."""
    return read_checksums(ctx.config_dir, volume.manifest) if volume.manifest else None


def hash_cache(ctx: ProviderContext) -> HashCache:
    return HashCache(ctx.state_dir / ".cache" / "volume-hosts.json")


def observe(volume: VolumeSpec, sums: Checksums | None, checks: Mapping[str, HostCheck | None],
            unreachable: Mapping[str, str]) -> Observation:
    """What refresh reports: ``content`` is the expected value only when every reachable host passes."""
    content = verdict(expected_content(sums), checks, sums is not None)
    notes = host_notes(checks, volume.path) + [f"{h} unreachable, not checked: {e}" for h, e in unreachable.items()]
    return Observation({"content": content, "hosts": _hosts(checks)}, notes)


def require(volume: VolumeSpec, sums: Checksums | None, checks: Mapping[str, HostCheck | None]) -> Attrs:
    """Apply's check (nothing is written): the hosts' files, or a ProviderError saying what is wrong where."""
    expected = expected_content(sums)
    found = verdict(expected, checks, sums is not None)
    if found != expected:
        raise ProviderError(f"volume path {volume.path}: {found}",
                            "This volume has no `source`, so gpuform does not write there: put the files on every "
                            "host (mount the share, pre-pull them), fix `manifest`, or set `source` to stage them "
                            "from this machine; then apply again.")
    return {"hosts": _hosts(checks), "copied": 0}


def _hosts(checks: Mapping[str, HostCheck | None]) -> dict[str, object]:
    return {h: {"files": c.files, "bytes": c.bytes} if c else {"missing": True} for h, c in checks.items()}
