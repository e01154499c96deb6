"""Volumes: files already on the hosts (manifest checks, verdicts), located errors for a missing source or a bad
manifest, a tainted volume resumes rather than being replaced, the staging key's authorized_keys line."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from gpuform.config.load import load
from gpuform.errors import ConfigError
from gpuform.plan.planner import plan
from gpuform.plan.render import render_text
from gpuform.providers.common.peers import authorized_line
from gpuform.providers.common.staging import _batches
from gpuform.resources.desired import build
from gpuform.state.model import ResourceState, State
from gpuform.util.manifests import PRESENT, checksums_digest, parse_checksums, scan_source
from gpuform.util.volume_checks import HashCache, HostCheck, check_host, verdict
from tests.conftest import write_config

pytestmark = pytest.mark.unit

A = "a" * 64
B = "b" * 64


def test_a_manifest_is_what_sha256sum_prints_and_bad_lines_are_named() -> None:
    text = f"# made on gpu1\n{A}  model.safetensors\n{B} *./tok/vocab.json\n\n"
    assert parse_checksums(text) == {"model.safetensors": A, "tok/vocab.json": B}
    with pytest.raises(ValueError, match="line 2 is not"):
        parse_checksums(f"{A}  ok\nnot-a-sum  x\n")
    with pytest.raises(ValueError, match=r"without `\.\.`"):
        parse_checksums(f"{A}  ../etc/passwd\n")
    with pytest.raises(ValueError, match="lists no file"):
        parse_checksums("# empty\n")


def test_host_files_are_hashed_once_then_judged_from_the_cache(tmp_path: Path) -> None:
    cache = HashCache(tmp_path / "hashes.json")
    asked: list[list[str]] = []

    def hasher(rels: list[str]) -> dict[str, str]:
        asked.append(sorted(rels))
        return {"w.bin": A, "t.json": "f" * 64}

    stats = {"w.bin": (10, "1.0"), "t.json": (3, "2.0"), "extra.txt": (1, "3.0")}
    sums = {"w.bin": A, "t.json": B, "gone.bin": A}
    first = check_host("h1", "/srv/m", stats, sums, cache, hasher)
    assert first.problems == ["1 file(s) of the manifest missing (gone.bin)", "1 file(s) with another checksum (t.json)"]
    again = check_host("h1", "/srv/m", stats, sums, HashCache(tmp_path / "hashes.json"), hasher)
    assert again.problems == first.problems and asked == [["t.json", "w.bin"]], "the second check hashed nothing"
    touched = {**stats, "w.bin": (10, "9.0")}
    check_host("h1", "/srv/m", touched, sums, cache, hasher)
    assert asked[-1] == ["w.bin"], "only the file whose mtime changed is hashed again"


def test_the_verdict_names_hosts_that_lack_the_files_or_disagree() -> None:
    ok = HostCheck(2, 30, "x")
    assert verdict(PRESENT, {"h1": ok, "h2": ok}, manifest=False) == PRESENT
    assert verdict(PRESENT, {"h1": ok, "h2": None}, manifest=False) == "missing on h2"
    other = HostCheck(1, 10, "y")
    assert verdict(PRESENT, {"h1": ok, "h2": other}, manifest=False).startswith("differs between hosts (h1: 2 files")
    assert verdict("sha256:m", {"h1": ok, "h2": other}, manifest=True) == "sha256:m", "a manifest decides, not listings"
    bad = HostCheck(1, 10, "y", ["1 file(s) with another checksum (w.bin)"])
    assert verdict("sha256:m", {"h1": ok, "h2": bad}, manifest=True) == \
        "differs on h2: 1 file(s) with another checksum (w.bin)"
    assert verdict(PRESENT, {"h1": HostCheck(0, 0, "z", ["the directory is empty"])}, manifest=False) == \
        "differs on h1: the directory is empty"


CONFIG = """
pools: {p: {provider: local}}
volumes:
  w: {pool: p, path: /srv/models/w, VOLUME}
"""


def _errors(tmp_path: Path, volume: str) -> list[str]:
    write_config(tmp_path, CONFIG.replace("VOLUME", volume))
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env={})
    return [d.render() for d in info.value.diagnostics]


def test_a_source_missing_on_this_machine_is_located_at_validate_never_a_plan_to_empty_it(tmp_path: Path) -> None:
    (rendered,) = _errors(tmp_path, "source: ./models/w")
    assert 'gpuform.yaml:3:45: error: volume source "./models/w" does not exist on this machine' in rendered
    assert "remove `source` if the files are already on every host" in rendered


def test_manifest_problems_are_located(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (both,) = _errors(tmp_path, "source: ./models, manifest: sums.txt")
    assert "gpuform.yaml:3:65: error: `manifest` is for volumes without `source`" in both
    (missing,) = _errors(tmp_path, "manifest: sums.txt")
    assert 'volume manifest "sums.txt" does not exist' in missing and "sha256sum" in missing
    (tmp_path / "sums.txt").write_text("nonsense\n")
    (bad,) = _errors(tmp_path, "manifest: sums.txt")
    assert "cannot be used: line 1 is not `SHA256  RELPATH`" in bad


def test_a_volume_already_there_plans_its_manifest_digest_or_presence(tmp_path: Path) -> None:
    (tmp_path / "sums.txt").write_text(f"{A}  w.bin\n")
    write_config(tmp_path, CONFIG.replace("VOLUME", "manifest: sums.txt"))
    from gpuform.engine.operations import volume_sources

    config = load(tmp_path, env={})

    class _Ws:
        config_dir = tmp_path
        state_dir = tmp_path / "state"

    desired = build(config, "L", volume_sources(_Ws(), config))  # type: ignore[arg-type]
    assert desired["volume.w"].attributes["content"] == checksums_digest({"w.bin": A})
    assert desired["volume.w"].attributes["files"] == 1 and "bytes" not in desired["volume.w"].attributes
    write_config(tmp_path, CONFIG.replace("VOLUME", "prevent_destroy: false"))
    assert build(load(tmp_path, env={}), "L")["volume.w"].attributes["content"] == PRESENT


def _state_of(desired: dict) -> State:  # type: ignore[type-arg]
    state = State(lineage="L", serial=1)
    for addr, d in desired.items():
        attrs = json.loads(json.dumps(d.attributes))
        state.resources[addr] = ResourceState(addr, d.kind, d.name, d.provider, attrs,
                                              dependencies=sorted(d.dependencies))
    return state


def test_a_tainted_volume_is_updated_from_what_is_there_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    write_config(tmp_path, CONFIG.replace("VOLUME", "source: ./m"))
    desired = build(load(tmp_path, env={}), "L")
    state = _state_of(desired)
    state.resources["volume.w"].status = "tainted"
    p = plan(desired, state, None)
    (change,) = [c for c in p.changes if c.address == "volume.w"]
    assert change.action == "update" and change.action_reason == "update_because_tainted"
    assert "it goes on from what is there" in render_text(p)


def test_a_volume_recorded_before_the_new_fields_plans_no_change(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    write_config(tmp_path, CONFIG.replace("VOLUME", "source: ./m"))
    desired = build(load(tmp_path, env={}), "L")
    state = _state_of(desired)
    for key in ("manifest", "parallel_hosts", "host_to_host"):
        del state.resources["volume.w"].attributes[key]
    assert not plan(desired, state, None).has_changes


def test_the_staging_key_may_only_receive_files_from_the_pool_and_expires() -> None:
    line = authorized_line("ssh-ed25519 AAAAC3Nza", "gpuform-volume-1", "/tmp/gpuform-peer.x/receive",
                           '/srv/my "models"', ["10.0.0.1", "10.0.0.2"])
    options, key, marker = line.rsplit(" ", 2)[0], line.split(" ")[-2], line.split(" ")[-1]
    assert options.startswith('restrict,from="10.0.0.1,10.0.0.2",expiry-time="')
    assert options.endswith('command="sh /tmp/gpuform-peer.x/receive \'/srv/my \\"models\\"\'" ssh-ed25519')
    assert key == "AAAAC3Nza" and marker == "gpuform-volume-1"
    assert 'from="' not in authorized_line("ssh-ed25519 K", "m", "/r", "/srv", ["gpu1.lab", "10.0.0.2"]), \
        "host names are not addresses sshd can match: no from= rather than a wrong one"


def test_batches_bound_files_and_bytes() -> None:
    source = {f"f{i}": (40 << 20, A) for i in range(3)} | {f"s{i}": (1, A) for i in range(20)}
    batches = _batches(sorted(source), source)
    assert [len(b) for b in batches] == [1, 1, 16, 5]


def test_scanning_sources_on_many_threads_shares_the_hash_cache_without_failing(tmp_path: Path) -> None:
    """Refresh scans volumes on several threads (and apply and destroy in separate processes): writers of
    the hash cache once collided on one temporary file name and the loser crashed destroy."""
    for v in range(4):
        (tmp_path / f"src{v}").mkdir()
        (tmp_path / f"src{v}" / "w.bin").write_bytes(bytes([v]) * 1000)
    cache = tmp_path / "state" / ".cache" / "volume-sources.json"
    errors: list[BaseException] = []

    def scan(v: int) -> None:
        try:
            for _ in range(30):
                assert scan_source(tmp_path / f"src{v}", cache).files == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=scan, args=(v,)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(cache.read_text())  # a whole JSON document, never a torn one
    assert [p.name for p in cache.parent.iterdir()] == ["volume-sources.json"]  # no temporary file left
