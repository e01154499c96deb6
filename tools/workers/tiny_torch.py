#!/usr/bin/env python3
"""Write a tiny PyTorch model (a two-layer MLP, 4 → 16 → 2, softmax out) for the ``pytorch`` template.

    python tiny_torch.py OUTDIR [--seed N] [--export]

Run it with a Python that has torch (the vLLM worker's venv has it). OUTDIR gets ``model.pt`` (TorchScript),
or ``model.pt2`` (``torch.export``) with ``--export``, and ``expected.json``: inputs with the outputs computed
here, for tests to compare a worker's answers with. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INPUTS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 0.0]]


def build(seed: int) -> object:
    import torch

    torch.manual_seed(seed)

    class TinyMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(4, 16)
            self.out = torch.nn.Linear(16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=-1)

    return TinyMLP().eval()


def write(outdir: Path, seed: int, export: bool) -> dict[str, object]:
    import torch

    model = build(seed)
    outdir.mkdir(parents=True, exist_ok=True)
    example = torch.tensor(INPUTS)
    if export:
        target = outdir / "model.pt2"
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), str(target))  # type: ignore[arg-type]
    else:
        target = outdir / "model.pt"
        torch.jit.save(torch.jit.script(model), str(target))  # type: ignore[arg-type]
    with torch.inference_mode():
        outputs = model(example).tolist()  # type: ignore[operator]
    (outdir / "expected.json").write_text(json.dumps({"inputs": INPUTS, "outputs": outputs}) + "\n")
    return {"model": str(target), "params": sum(p.numel() for p in model.parameters())}  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", action="store_true", help="torch.export (.pt2) instead of TorchScript (.pt)")
    args = parser.parse_args()
    print(json.dumps(write(args.outdir, args.seed, args.export)))


if __name__ == "__main__":
    main()
