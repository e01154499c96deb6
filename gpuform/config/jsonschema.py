"""JSON Schema of the whole configuration, pools included as a union over installed providers."""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any

from pydantic import Field, create_model

from gpuform.config import schema
from gpuform.config.plugins import pool_kinds
from gpuform.config.types import Model


def config_schema() -> dict[str, Any]:
    pool_models = tuple(spec.pool_model for spec in pool_kinds().values())
    union = functools.reduce(operator.or_, pool_models)
    pool_type: Any = Annotated[union, Field(discriminator="provider")] if len(pool_models) > 1 else pool_models[0]
    fields: dict[str, Any] = dict(
        gpuform=(schema.Settings, Field(default_factory=schema.Settings, description=schema.SECTIONS["gpuform"])),
        backend=(schema.Backend, Field(default_factory=schema.Backend, description=schema.SECTIONS["backend"])),
        variables=(dict[str, Any], Field(default_factory=dict, description=schema.SECTIONS["variables"])),
        pools=(dict[str, pool_type], Field(default_factory=dict, description=schema.SECTIONS["pools"])),
        volumes=(dict[str, schema.Volume], Field(default_factory=dict, description=schema.SECTIONS["volumes"])),
        policies=(dict[str, schema.Policy], Field(default_factory=dict, description=schema.SECTIONS["policies"])),
        gateway=(dict[str, schema.Gateway], Field(default_factory=dict, description=schema.SECTIONS["gateway"])),
        endpoints=(dict[str, schema.Endpoint], Field(default_factory=dict, description=schema.SECTIONS["endpoints"])),
    )
    fields["import"] = (dict[str, str], Field(default_factory=dict, description=schema.SECTIONS["import"]))
    top = create_model("GpuformConfig", __base__=Model, **fields)
    result: dict[str, Any] = top.model_json_schema()
    result["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    result["title"] = "gpuform configuration (gpuform.yaml)"
    return result
