"""``${env.NAME}``, ``${var.NAME}`` and ``${workspace}`` interpolation; values taken from the environment
are sensitive. ``validate`` runs without values for the environment: those references are left unknown,
and nothing is checked at their paths."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuform.config.yamlsrc import SourceMap
from gpuform.diagnostics import Diagnostic, Path, did_you_mean, error

_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"^\s*(env|var)\.([A-Za-z_][A-Za-z0-9_]*)\s*$")
_WORKSPACE = re.compile(r"^\s*workspace\s*$")
UNKNOWN = "(known after apply)"


@dataclass
class Interpolation:
    env: Mapping[str, str]
    variables: Mapping[str, Any]
    sources: SourceMap
    sensitive: set[Path] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    failed: set[Path] = field(default_factory=set)
    require_env: bool = True
    workspace: str = "default"

    def walk(self, value: Any, path: Path) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self._string(value, path)
        return value

    def _string(self, text: str, path: Path) -> Any:
        whole = _REF.fullmatch(text)
        if whole and whole.group(1) is not None:
            return self._resolve(whole.group(1), path)
        return _REF.sub(lambda m: "${" if m.group(1) is None else str(self._resolve(m.group(1), path)), text)

    def _resolve(self, ref: str, path: Path) -> Any:
        match = _NAME.match(ref)
        loc = self.sources.locate(path)
        if _WORKSPACE.match(ref):
            return self.workspace
        if not match:
            self.failed.add(path)
            self.diagnostics.append(error(
                f'invalid reference "${{{ref}}}"',
                "Use ${env.NAME} for an environment variable, ${var.NAME} for a variable or ${workspace}; "
                "write $${ for a literal ${.", loc))
            return ""
        scope, name = match.groups()
        if scope == "env":
            self.sensitive.add(path)
            if name not in self.env:
                self.failed.add(path)
                if not self.require_env:
                    return UNKNOWN
                self.diagnostics.append(error(
                    f"environment variable {name} is not set",
                    f"Export it before running gpuform (export {name}=...).", loc))
                return ""
            return self.env[name]
        if name not in self.variables:
            self.failed.add(path)
            hint = did_you_mean(name, self.variables)
            self.diagnostics.append(error(
                f'unknown variable "{name}"',
                f"Declare it under `variables:` or pass --var {name}=VALUE.{hint}", loc))
            return ""
        return self.variables[name]
