"""The bench's gpuform worker: the shared handler under the gpuform worker SDK."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from handler import handler

from gpuform.worker import start

start(handler)
