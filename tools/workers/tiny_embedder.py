#!/usr/bin/env python3
"""Write a tiny random BERT encoder with a WordPiece tokenizer for the ``embeddings`` template.

    python tiny_embedder.py OUTDIR [--seed N]

Run it with a Python that has torch, transformers and tokenizers (the vLLM worker's venv has them). Nothing
is downloaded: the weights are random (seeded) and the tokenizer is trained here on a small built-in text.
OUTDIR gets the model and tokenizer (``save_pretrained``), and ``expected.json``: a few texts with their
mean-pooled, normalised embeddings computed here, for tests to compare a worker's answers with.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TEXTS = ["the quick brown fox", "a worker answers a request", "scale to zero when idle"]
CORPUS = """the quick brown fox jumps over the lazy dog
a worker takes a job from the queue and answers the request
scale to zero when idle and scale up when the queue grows
embeddings turn a text into a vector of numbers
the gateway routes a request to the endpoint that serves its model
""".splitlines()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS * 4, trainers.WordPieceTrainer(vocab_size=256, special_tokens=SPECIAL,
                                                                  show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)


def write(outdir: Path, seed: int) -> dict[str, object]:
    import torch
    from transformers import BertConfig, BertModel

    tok = tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,  # type: ignore[arg-type]
                        intermediate_size=64, max_position_embeddings=128)
    model = BertModel(config, add_pooling_layer=False).eval()
    outdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(outdir)
    tok.save_pretrained(outdir)  # type: ignore[attr-defined]
    batch = tok(TEXTS, padding=True, return_tensors="pt")  # type: ignore[operator]
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    vectors = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    expected = {"texts": TEXTS, "embeddings": vectors.tolist(), "tokens": int(batch["attention_mask"].sum())}
    (outdir / "expected.json").write_text(json.dumps(expected) + "\n")
    return {"model": str(outdir), "dimensions": config.hidden_size, "vocab": len(tok)}  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(write(args.outdir, args.seed)))


if __name__ == "__main__":
    main()
