"""GPU inventory (``nvidia-smi`` CSV) and worker placement by GPU type priority."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from gpuform.provider import GpuInfo, GpuUsage, HostInventory, WorkerInfo

NVIDIA_SMI_ARGS = ["--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader"]
GPU_USAGE_ARGS = ["--query-gpu=index,utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits"]
_SIZES_GB = (8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 141, 180, 192, 288)
_STRIP = ("NVIDIA", "GeForce", "Tesla", "Quadro")


def gpu_type(name: str, memory_mib: int) -> str:
    """``NVIDIA H100 80GB HBM3``, 81559 MiB → ``H100-80GB``; ``NVIDIA A100-SXM4-40GB`` → ``A100-40GB``."""
    words = [w for w in re.split(r"[\s]+", name.strip()) if w and w not in _STRIP]
    explicit = re.search(r"(\d+)\s*GB", name, re.IGNORECASE)
    gib = int(explicit.group(1)) if explicit else _nearest_size(memory_mib / 1024)
    model = ""
    for i, word in enumerate(words):
        head = word.split("-")[0]
        if re.search(r"\d", head) and not re.fullmatch(r"\d+GB", head, re.IGNORECASE):
            prefix = words[i - 1] if i > 0 and words[i - 1].isalpha() and words[i - 1].isupper() else ""
            model = (prefix + head).upper() if prefix in ("RTX", "GTX", "TITAN") else head.upper()
            break
    if not model:
        model = "".join(words[:1]).upper() or "GPU"
    return f"{model}-{gib}GB"


def _nearest_size(gib: float) -> int:
    best = min(_SIZES_GB, key=lambda s: abs(s - gib))
    return best if abs(best - gib) <= 0.1 * best else round(gib)


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``index, name, memory.total, uuid`` lines; raises ValueError on a malformed line."""
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        index, name, memory, uuid = parts[0], ",".join(parts[1:-2]), parts[-2], parts[-1]
        mib = int(re.sub(r"[^\d]", "", memory) or 0)
        gpus.append(GpuInfo(int(index), gpu_type(name, mib), name, mib, uuid))
    return gpus


def parse_gpu_usage(text: str, host: str) -> list[GpuUsage]:
    """Parse ``index, utilization.gpu, memory.used, memory.total`` lines (no units); a value the driver
    does not report (``[N/A]``) is None, a line that cannot be read is skipped."""
    out: list[GpuUsage] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        util, used, total = (_number(p) for p in parts[1:])
        out.append(GpuUsage(host, int(parts[0]), None if util is None else util / 100,
                            None if used is None else int(used), None if total is None else int(total)))
    return out


def _number(text: str) -> float | None:
    try:
        return float(text.split(maxsplit=1)[0])
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Placement:
    host: str
    gpu_type: str
    indices: tuple[int, ...]


def occupancy(workers: Iterable[WorkerInfo]) -> tuple[dict[str, set[int]], dict[str, int]]:
    """GPU indices in use and the number of running workers, by host."""
    used: dict[str, set[int]] = {}
    count: dict[str, int] = {}
    for w in workers:
        if w.state == "running":
            used.setdefault(w.host, set()).update(w.gpu_indices)
            count[w.host] = count.get(w.host, 0) + 1
    return used, count


def place(hosts: Sequence[HostInventory], used: dict[str, set[int]], workers_on: dict[str, int],
          types: Iterable[str], count: int, prefer: Collection[str] = ()) -> Placement | None:
    """First host that fits, trying GPU types in priority order; CPU workers go to the least busy host.

    Hosts in ``prefer`` (those holding a kept container that can restart) come first among those that fit.
    """
    usable = [h for h in hosts if h.reachable and not h.cordoned]
    for wanted in types:
        if wanted == "cpu":
            if usable:
                host = min(usable, key=lambda h: (workers_on.get(h.host, 0), h.host not in prefer, h.host))
                return Placement(host.host, "cpu", ())
            continue
        for host in sorted(usable, key=lambda h: (h.host not in prefer, h.host)):
            free = [g.index for g in host.gpus if g.type == wanted and g.index not in used.get(host.host, set())]
            if len(free) >= count:
                return Placement(host.host, wanted, tuple(sorted(free)[:count]))
    return None
