"""The pytorch worker: ``python -m gpuform.workers.pytorch``.

Loads the model file from the endpoint's volume (``GPUFORM_MODEL_PATH``; ``MODEL_FILE`` names it, else
model.pt2 or model.pt), then takes jobs (:mod:`.handler`). Env: ``DEVICE`` (cuda, cpu…; the GPU when there is
one), ``MAX_CONCURRENCY`` (jobs at once, 1). Start-up phases: ``process_up`` → ``model_loaded``.
"""

from __future__ import annotations

import time

STARTED = time.time()

import os  # noqa: E402

from gpuform.util.phase import report_phase_now  # noqa: E402


def main() -> None:
    env = os.environ
    path = env.get("GPUFORM_MODEL_PATH")
    if not path:
        raise SystemExit("pytorch worker: no model path (declare `model: {name: ..., volume: ...}`)")
    report_phase_now("process_up", STARTED)
    from gpuform.worker import start
    from gpuform.workers.pytorch.handler import TorchHandler
    from gpuform.workers.pytorch.model import TorchModel, model_file

    model = TorchModel(model_file(path, env.get("MODEL_FILE", "")), env.get("DEVICE", ""))
    report_phase_now("model_loaded")
    start(TorchHandler(model), concurrency=int(env.get("MAX_CONCURRENCY", "1")))


if __name__ == "__main__":
    main()
