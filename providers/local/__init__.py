"""The ``local`` provider: pools on this machine; workers and the gateway are local processes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gpuform.config.schema import PoolBase
from gpuform.provider import Capability, ProviderSpec


class LocalPool(PoolBase):
    """A pool made of this machine."""

    provider: Literal["local"] = Field(description="Runs workers as processes on this machine.")
    nvidia_smi: str = Field("nvidia-smi", description="Command that inventories GPUs (tests use a stand-in).")
    data_dir: str | None = Field(None, description="Where pid files and logs live; defaults to "
                                                   "~/.local/share/gpuform/deployments/LINEAGE/local/POOL "
                                                   "(GPUFORM_DATA_DIR moves it).")

    def host_labels(self) -> list[str]:
        return ["localhost"]


SPEC = ProviderSpec(
    name="local",
    pool_model=LocalPool,
    implementation="gpuform.providers.local.provider:LocalProvider",
    description="this machine: workers are local processes with pid files and logs under the state directory",
    capabilities=frozenset({Capability.WORKERS, Capability.GATEWAY, Capability.VOLUMES, Capability.GPU_PLACEMENT,
                            Capability.GPU_METRICS}),
)
