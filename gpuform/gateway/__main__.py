"""``python -m gpuform.gateway --config FILE``: run the gateway in the foreground."""

from gpuform.gateway.server import main

raise SystemExit(main())
