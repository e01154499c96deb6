"""The embeddings worker: ``python -m gpuform.workers.embeddings``.

Loads the encoder from the endpoint's volume (``GPUFORM_MODEL_PATH``), then takes jobs (:mod:`.handler`).
Env: ``POOLING`` (mean, cls or last; mean by default), ``NORMALIZE`` (true), ``MAX_LENGTH`` (tokens per text,
512), ``MAX_BATCH_SIZE`` (inputs per request, 256), ``DEVICE`` (cuda, cpu…; the GPU when there is one),
``MAX_CONCURRENCY`` (jobs at once, 1). Start-up phases: ``process_up`` → ``model_loaded``.
"""

from __future__ import annotations

import time

STARTED = time.time()

import os  # noqa: E402

from gpuform.util.phase import report_phase_now  # noqa: E402


def _on(value: str) -> bool:
    return value.strip().lower() not in ("false", "0", "no", "off")


def main() -> None:
    env = os.environ
    path = env.get("GPUFORM_MODEL_PATH")
    if not path:
        raise SystemExit("embeddings worker: no model path (declare `model: {name: ..., volume: ...}`)")
    report_phase_now("process_up", STARTED)
    from gpuform.worker import start
    from gpuform.workers.embeddings.handler import EmbeddingsHandler
    from gpuform.workers.embeddings.model import Encoder

    normalize = _on(env.get("NORMALIZE", "true"))
    encoder = Encoder(path, env.get("POOLING", "mean"), normalize, int(env.get("MAX_LENGTH", "512")),
                      env.get("DEVICE", ""))
    report_phase_now("model_loaded")
    handler = EmbeddingsHandler(encoder, env.get("GPUFORM_MODEL_NAME") or "embeddings", normalize,
                                int(env.get("MAX_BATCH_SIZE", "256")))
    start(handler, concurrency=int(env.get("MAX_CONCURRENCY", "1")))


if __name__ == "__main__":
    main()
