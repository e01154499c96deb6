"""The ``fake`` provider: an in-memory pool for tests and for trying a configuration without machines.

Hosts and their GPUs are declared; workers are records, not processes (nothing runs them: a test plays the
worker over the worker protocol with the token in its environment). It implements the same operations as
the real providers and passes the same provider contract suite; it cannot run a gateway.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gpuform.config.schema import PoolBase
from gpuform.config.types import Model, Name
from gpuform.provider import Capability, ProviderSpec


class FakeHost(Model):
    """A host of a fake pool."""

    name: Name = Field(description="Host name.")
    gpus: list[str] = Field(default_factory=list, description="GPU types by index, e.g. [H100-80GB, H100-80GB].")
    reachable: bool = Field(True, description="False: the host is down (refresh reports it, placement skips it).")
    cordon: bool = Field(False, description="No new workers start here.")


class FakePool(PoolBase):
    """Hosts that exist only in memory."""

    provider: Literal["fake"] = Field(description="An in-memory pool (tests).")
    hosts: list[FakeHost] = Field(default_factory=lambda: [FakeHost(name="fake1")], min_length=1,
                                  description="The pool's hosts.")

    def host_labels(self) -> list[str]:
        return [h.name for h in self.hosts]


SPEC = ProviderSpec(
    name="fake",
    pool_model=FakePool,
    implementation="gpuform.providers.fake.provider:FakeProvider",
    description="in memory: declared hosts and GPUs, workers as records (tests)",
    capabilities=frozenset({Capability.WORKERS, Capability.VOLUMES, Capability.GPU_PLACEMENT,
                            Capability.NAMED_HOSTS}),
)
