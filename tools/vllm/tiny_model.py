#!/usr/bin/env python3
"""Write a tiny random Llama model that the vLLM OpenAI server can load.

    python tiny_model.py OUTDIR [--seed N] [--force]

Run it with the vLLM worker's venv python (.ci/setup/vllm.sh): it needs
torch, transformers and tokenizers, which vLLM pulls in. Nothing is
downloaded: the weights are random (seeded) and the tokenizer is a byte-level
BPE trained here on a small built-in text.

OUTDIR gets:
    config.json, generation_config.json, model.safetensors   (LlamaForCausalLM)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                  (HF fast tokenizer, with a chat template)
    README.md
    .gpuform-tiny-model.json      (written last; marks the model complete)

The shapes are about as small as vLLM on CPU accepts: head_dim must be 64 or
more for the CPU attention kernels (16/32 are rejected), so 2 heads x 64 =
hidden 128, 2 layers, vocab 512. The whole directory is well under 1 MB.

Idempotent: if OUTDIR already holds a complete model, nothing is written
(pass --force to regenerate). The output is deterministic for a given seed
and library versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

MARKER = ".gpuform-tiny-model.json"
REQUIRED = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)

VOCAB_SIZE = 512
HIDDEN = 128
INTERMEDIATE = 256
LAYERS = 2
HEADS = 2            # head_dim = 128 / 2 = 64 (the CPU backend's minimum)
KV_HEADS = 2
MAX_POSITIONS = 2048

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SPECIAL_TOKENS = [BOS, EOS, UNK, PAD, *ROLE_TOKENS]

# Minimal chat template: <s><|role|>\ncontent<|end|>\n ... <|assistant|>\n
# `content` may be a plain string or OpenAI-style list of text parts.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Training text for the tokenizer (written for this script).
CORPUS = """\
The quick brown fox jumps over the lazy dog while the cat sleeps by the fire.
A small model can still answer a request, even if every answer is nonsense.
Hello, world! How are you today? I am fine, thank you, and how are you?
Once upon a time there was a tiny language model that lived on a volume.
It woke up when a request arrived, and it went back to sleep when the queue was empty.
The worker reads a job from the queue, runs the handler, and writes the result back.
Scale to zero when idle; scale up when the queue grows; never lose a job.
Paris is the capital of France. Berlin is the capital of Germany. Rome is in Italy.
One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve.
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 32 64 128 256 512 1024 2048 4096
def add(a, b):
    return a + b

for i in range(10):
    print(i, add(i, i))

{"model": "tiny", "prompt": "Hello", "max_tokens": 16, "temperature": 0.0}
curl -s http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json'
The system says: you are a helpful assistant. The user asks a question.
The assistant answers the question with a short and friendly reply.
Spring, summer, autumn and winter are the four seasons of the year.
Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.
Red, orange, yellow, green, blue, indigo and violet are colours of the rainbow.
Water boils at one hundred degrees and freezes at zero degrees Celsius.
The engineer started the server, waited for it to be ready, and sent a prompt.
Streaming responses arrive as server-sent events, one small chunk at a time.
What is the meaning of this? Where are we going? Why is the sky blue?
She sells sea shells by the sea shore; the shells she sells are surely sea shells.
"""


def is_complete(outdir: Path) -> bool:
    return (outdir / MARKER).is_file() and all((outdir / f).is_file() for f in REQUIRED)


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the text so that merge counts are well above ties.
    lines = CORPUS.splitlines() * 4
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, bos_id)],
    )
    return tok


def write_tokenizer(tok, outdir: Path) -> dict:
    tok.save(str(outdir / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "added_tokens_decoder": added,
        "additional_special_tokens": ROLE_TOKENS,
        "chat_template": CHAT_TEMPLATE,
    }
    (outdir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "additional_special_tokens": ROLE_TOKENS,
    }
    (outdir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return ids


def write_model(outdir: Path, vocab_size: int, ids: dict, seed: int) -> int:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HIDDEN // HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        initializer_range=0.02,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16).eval()
    model.save_pretrained(str(outdir), safe_serialization=True)

    gen = GenerationConfig(
        bos_token_id=ids[BOS],
        eos_token_id=[ids[EOS], ids["<|end|>"]],
        pad_token_id=ids[PAD],
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=64,
    )
    gen.save_pretrained(str(outdir))
    return sum(p.numel() for p in model.parameters())


README = """\
# tiny random Llama (gpuform test model)

Written by `tools/vllm/tiny_model.py` (seed {seed}). Random weights: the text it
generates is meaningless. It exists so that the vLLM worker can be started and
exercised (completions, chat, streaming) on a CPU machine without downloads.

- architecture: LlamaForCausalLM, {layers} layers, hidden {hidden}, {heads} heads x head_dim {head_dim},
  intermediate {inter}, vocab {vocab}, tied embeddings, bfloat16, {params} parameters
- tokenizer: byte-level BPE trained with `tokenizers` on a built-in paragraph;
  chat template `<s><|role|>\\ncontent<|end|>\\n ... <|assistant|>\\n`
- serve: `python -m vllm.entrypoints.openai.api_server --model THIS_DIR --enforce-eager --max-model-len 512`
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="regenerate even if complete")
    args = ap.parse_args(argv)
    outdir: Path = args.outdir

    if is_complete(outdir) and not args.force:
        print(f"tiny model already complete in {outdir}; nothing to do")
        return 0

    t0 = time.monotonic()
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / MARKER).unlink(missing_ok=True)

    tok = build_tokenizer()
    vocab = tok.get_vocab_size()
    ids = write_tokenizer(tok, outdir)
    # Model vocab == tokenizer vocab, so every sampled id decodes.
    params = write_model(outdir, vocab, ids, args.seed)
    (outdir / "README.md").write_text(
        README.format(
            seed=args.seed, layers=LAYERS, hidden=HIDDEN, heads=HEADS,
            head_dim=HIDDEN // HEADS, inter=INTERMEDIATE, vocab=vocab, params=params,
        )
    )

    digest = hashlib.sha256()
    for name in REQUIRED:
        digest.update((outdir / name).read_bytes())
    marker = {
        "generator": "gpuform tools/vllm/tiny_model.py",
        "seed": args.seed,
        "vocab_size": vocab,
        "parameters": params,
        "sha256": digest.hexdigest(),
    }
    tmp = outdir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(tmp, outdir / MARKER)

    for p in outdir.iterdir():  # safetensors writes 0600; the volume may be
        if p.is_file():          # read by a non-root container user
            p.chmod(0o644)
    size = sum(p.stat().st_size for p in outdir.iterdir() if p.is_file())
    print(
        f"wrote tiny model to {outdir}: vocab {vocab}, {params} params, "
        f"{size / 1024:.0f} KiB, {time.monotonic() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
