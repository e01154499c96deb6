#!/usr/bin/python3
"""Stand-in for `nvidia-smi` on the simulated test hosts (installed by testhosts.sh gpu).

It replays a recorded `--query-gpu=index,name,memory.total,uuid --format=csv,noheader`
output. The recording is read from $GPUFORM_FAKE_NVIDIA_SMI_CSV when set, else from
.nvidia-smi.csv next to this script (testhosts.sh copies the chosen fixture there).

  nvidia-smi --query-gpu=F1,F2,... --format=csv[,noheader][,nounits]
      F in index, name, memory.total, uuid (also gpu_name, gpu_uuid, count), and
      utilization.gpu (37 %) and memory.used (1024 MiB), which the recording does not hold
  nvidia-smi -L          one "GPU i: NAME (UUID: ...)" line per GPU
  nvidia-smi             a short table
  anything else          exit 0, no output
"""

import os
import sys
import time

FIELDS = {"index": 0, "name": 1, "gpu_name": 1, "memory.total": 2, "uuid": 3, "gpu_uuid": 3}
LIVE = {"utilization.gpu": ("37 %", "37"), "memory.used": ("1024 MiB", "1024")}  # (with units, nounits)
DRIVER = "550.127.05"
CUDA = "12.4"


def recorded() -> list[list[str]]:
    path = os.environ.get("GPUFORM_FAKE_NVIDIA_SMI_CSV") or os.path.join(
        os.path.dirname(os.path.realpath(__file__)), ".nvidia-smi.csv"
    )
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    except OSError:
        print(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running."
        )
        sys.exit(9)
    return [[c.strip() for c in ln.split(",")] for ln in lines]


def opt(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None


def query(args: list[str], query_arg: str) -> int:
    fmt = opt(args, "--format")
    if fmt is None:
        print('"--format" must be specified when querying GPUs.')
        return 2
    fmt_opts = {f.strip() for f in fmt.split(",")}
    if "csv" not in fmt_opts:
        print(f'"{fmt}" is not a valid format.')
        return 2
    names = [f.strip() for f in query_arg.split(",") if f.strip()]
    for n in names:
        if n not in FIELDS and n not in LIVE and n != "count":
            print(f'Field "{n}" is not a valid field to query.')
            return 2
    rows = recorded()
    if "noheader" not in fmt_opts:
        heads = []
        for n in names:
            heads.append(f"{n} [MiB]" if n in ("memory.total", "memory.used") and "nounits" not in fmt_opts else n)
        print(", ".join(heads))
    for r in rows:
        out = []
        for n in names:
            if n == "count":
                out.append(str(len(rows)))
                continue
            if n in LIVE:
                out.append(LIVE[n]["nounits" in fmt_opts])
                continue
            v = r[FIELDS[n]]
            if n == "memory.total" and "nounits" in fmt_opts:
                v = v.split()[0]
            out.append(v)
        print(", ".join(out))
    return 0


def table() -> int:
    rows = recorded()
    bar = "+" + "-" * 89 + "+"
    print(time.strftime("%a %b %d %H:%M:%S %Y"))
    print(bar)
    print(f"| NVIDIA-SMI {DRIVER:<22} Driver Version: {DRIVER:<14} CUDA Version: {CUDA:<9}|")
    print("|-----------------------------------------+------------------------+----------------------+")
    print("| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |")
    print("|=========================================+========================+======================|")
    for r in rows:
        idx, name, mem = r[0], r[1], r[2].split()[0]
        print(f"| {idx:>3}  {name:<29}  On  |   00000000:{0x18 + 16 * int(idx):02X}:00.0 Off |"
              f"                    0 |")
        print(f"| N/A   30C    P0             70W / 700W  | {'1MiB / ' + mem + 'MiB':>21}  |"
              f"      0%      Default |")
        print("+-----------------------------------------+------------------------+----------------------+")
    print()
    print(bar)
    print("| Processes:" + " " * 78 + "|")
    print("|  No running processes found" + " " * 61 + "|")
    print(bar)
    return 0


def main(args: list[str]) -> int:
    q = opt(args, "--query-gpu")
    if q is not None:
        return query(args, q)
    if args in (["-L"], ["--list-gpus"]):
        for r in recorded():
            print(f"GPU {r[0]}: {r[1]} (UUID: {r[3]})")
        return 0
    if not args:
        return table()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
