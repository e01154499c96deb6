"""``gpuform simulate``: replay a request trace through the gateway's own autoscaler, on a simulated clock.

- :mod:`.trace` reads traces (the Azure LLM inference CSV as is, CSV or JSONL with a timestamp column);
- :mod:`.model` holds what the simulator assumes of the world: cold-start durations, service times, prices;
- :mod:`.engine` is the discrete-event loop; every scaling decision is made by
  :func:`gpuform.gateway.autoscaler.desired_workers`, called exactly where the gateway's reconciler calls it;
- :mod:`.report` turns runs into figures, sweeps policies and finds the cost/latency frontier;
- :mod:`.scenario` reads an endpoint of a configuration into a simulation's settings;
- :mod:`.plot` draws (matplotlib, from the ``gpuform[simulate]`` extra, imported only when asked).
"""
