#!/usr/bin/env python3
"""Write a tiny random LoRA adapter (PEFT format) for the model of ``tiny_model.py``.

    python tiny_lora.py MODEL_DIR OUTDIR [--seed N] [--rank 8] [--scale S]

Run it with the vLLM worker's venv python: it needs torch and safetensors (PEFT is not needed, nor
installed there). Nothing is downloaded. OUTDIR gets ``adapter_config.json`` and
``adapter_model.safetensors``: rank ``--rank`` on every layer's ``q_proj`` and ``v_proj``, with A and B both
random (PEFT initialises B to zero, which would leave the model unchanged), scaled so that greedy output
differs visibly from the base model's. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TARGETS = ("q_proj", "v_proj")


def adapter_config(model_dir: Path, rank: int) -> dict[str, object]:
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_dir),
        "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": list(TARGETS), "modules_to_save": None, "inference_mode": True,
        "use_rslora": False, "use_dora": False,
    }


def write_adapter(model_dir: Path, outdir: Path, seed: int, rank: int, scale: float) -> int:
    import torch
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text())
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // int(config["num_attention_heads"]))
    outs = {"q_proj": int(config["num_attention_heads"]) * head_dim,
            "v_proj": int(config.get("num_key_value_heads") or config["num_attention_heads"]) * head_dim}
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(int(config["num_hidden_layers"])):
        for target in TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator) * scale
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(outs[target], rank, generator=generator) * scale
    outdir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(outdir / "adapter_model.safetensors"))
    (outdir / "adapter_config.json").write_text(json.dumps(adapter_config(model_dir, rank), indent=2) + "\n")
    (outdir / "adapter_model.safetensors").chmod(0o644)  # safetensors writes 0600; workers may run as others
    return sum(t.numel() for t in tensors.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="directory written by tiny_model.py")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args()
    count = write_adapter(args.model_dir, args.outdir, args.seed, args.rank, args.scale)
    print(json.dumps({"adapter": str(args.outdir), "rank": args.rank, "params": count}))


if __name__ == "__main__":
    main()
