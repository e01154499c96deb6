"""Load a TorchScript (``torch.jit.save``) or ``torch.export`` (``.pt2``) model and call it. Needs torch."""

from __future__ import annotations

import os
from typing import Any

from gpuform.workers.pytorch.handler import Call

CANDIDATES = ("model.pt2", "model.pt")


def model_file(path: str, name: str = "") -> str:
    """The model file: ``name`` (MODEL_FILE) inside ``path``, ``path`` itself when it is a file, or the first
    of model.pt2, model.pt in it; raises SystemExit naming what is missing."""
    if name:
        found = os.path.join(path, name)
    elif os.path.isfile(path):
        found = path
    else:
        found = next((os.path.join(path, c) for c in CANDIDATES if os.path.isfile(os.path.join(path, c))), "")
    if not found or not os.path.isfile(found):
        wanted = name or " or ".join(CANDIDATES)
        raise SystemExit(f"pytorch worker: no {wanted} in {path}; put the model on the volume or set MODEL_FILE")
    return found


class TorchModel:
    def __init__(self, path: str, device: str = "") -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if path.endswith(".pt2"):
            self.module = torch.export.load(path).module().to(self.device)
        else:
            self.module = torch.jit.load(path, map_location=self.device).eval()

    def __call__(self, call: Call) -> Any:
        import torch

        dtype = getattr(torch, call.dtype)
        args = [torch.tensor(a, dtype=dtype, device=self.device) for a in call.args]
        kwargs = {k: torch.tensor(v, dtype=dtype, device=self.device) for k, v in call.kwargs.items()}
        with torch.inference_mode():
            return _plain(self.module(*args, **kwargs))


def _plain(value: Any) -> Any:
    """Tensors (alone, in tuples, lists or dicts) as nested lists."""
    if hasattr(value, "tolist"):
        return value.detach().cpu().tolist() if hasattr(value, "detach") else value.tolist()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
