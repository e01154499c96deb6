"""The encoder: a transformers model and tokenizer loaded from a directory (never from a hub), pooled per
text. Needs torch and transformers in the worker's Python."""

from __future__ import annotations

from typing import Any

POOLINGS = ("mean", "cls", "last")


def pick_device(requested: str) -> str:
    """``requested`` (DEVICE), or the first CUDA device the worker was given, or the CPU."""
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """Texts (or token ids) → one vector each, pooled as ``pooling`` says and normalised when asked."""

    def __init__(self, path: str, pooling: str = "mean", normalize: bool = True, max_length: int = 512,
                 device: str = "") -> None:
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise SystemExit(f"embeddings worker: POOLING={pooling!r} is not one of {', '.join(POOLINGS)}")
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.pooling, self.normalize = pooling, normalize
        self.max_length = min(max_length, int(getattr(self.tokenizer, "model_max_length", max_length) or max_length))

    def __call__(self, inputs: list[str] | list[list[int]]) -> tuple[list[list[float]], int]:
        import torch

        batch = self._batch(inputs)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            vectors = self._pool(hidden, batch["attention_mask"])
            if self.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.float().cpu().tolist(), int(batch["attention_mask"].sum())

    def _batch(self, inputs: list[str] | list[list[int]]) -> Any:
        if inputs and isinstance(inputs[0], str):
            batch = self.tokenizer(inputs, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt")
        else:
            batch = self.tokenizer.pad({"input_ids": [ids[:self.max_length] for ids in inputs]},
                                       return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                          "token_type_ids")}

    def _pool(self, hidden: Any, mask: Any) -> Any:
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":
            last = mask.sum(dim=1) - 1
            return hidden[range(hidden.shape[0]), last]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
