"""YAML → plain data with a source location for every node.

The C parser (libyaml) builds the node tree; a small walk turns it into dicts, lists and scalars while
recording where each value and each mapping key came from. Duplicate keys are errors, not silent
overwrites. Nothing here knows about gpuform's schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from gpuform.diagnostics import Diagnostic, Location, Path, error

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.SafeLoader.yaml_constructors


@dataclass
class SourceMap:
    """Where each value (``values``) and each mapping key (``keys``) of a document came from."""

    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Location | None:
        """The location of ``path``, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        for end in range(len(path), -1, -1):
            loc = table.get(path[:end]) or self.values.get(path[:end])
            if loc is not None:
                return loc
        return None

    def update(self, other: SourceMap) -> None:
        self.values.update(other.values)
        self.keys.update(other.keys)


@dataclass
class Document:
    data: Any
    sources: SourceMap


class _Walker:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.sources = SourceMap()
        self.diagnostics: list[Diagnostic] = []
        self._constructor = _Loader("")

    def loc(self, node: yaml.Node) -> Location:
        mark = node.start_mark
        return Location(self.filename, mark.line + 1, mark.column + 1)

    def walk(self, node: yaml.Node, path: Path) -> Any:
        self.sources.values[path] = self.loc(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        build = _SCALARS.get(node.tag)
        if build is None:
            return node.value
        try:
            return build(self._constructor, node)
        except (ValueError, yaml.YAMLError):
            return node.value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.diagnostics.append(error(
                    "YAML merge keys (<<) are not supported",
                    "Write the keys out, or use variables (${var.NAME}) for shared values.",
                    self.loc(key_node)))
                continue
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str | int):
                self.diagnostics.append(error(
                    "mapping keys must be plain strings", "Quote the key or use a list.", self.loc(key_node)))
                continue
            key = str(key)
            child: Path = (*path, key)
            if key in out:
                first = self.sources.keys[child]
                self.diagnostics.append(error(
                    f'duplicate key "{key}"',
                    f"It is already defined at {first}. Remove one of them; YAML would silently keep the last.",
                    self.loc(key_node)))
                continue
            self.sources.keys[child] = self.loc(key_node)
            out[key] = self.walk(value_node, child)
        return out


def parse(text: str, filename: str) -> tuple[Document | None, list[Diagnostic]]:
    """Parse one YAML document; on a syntax error return ``None`` and a located diagnostic."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(filename, mark.line + 1, mark.column + 1) if mark else Location(filename, 1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        return None, [error(f"YAML syntax error: {problem}{context}",
                            "Check indentation, quoting and that every ':' is followed by a space.", loc)]
    except yaml.YAMLError as exc:
        return None, [error(f"YAML error: {exc}", "Fix the file's syntax.", Location(filename, 1, 1))]
    if node is None:
        return Document({}, SourceMap()), []
    walker = _Walker(filename)
    data = walker.walk(node, ())
    return Document(data, walker.sources), walker.diagnostics


def read_file(path: FsPath, display: str) -> tuple[Document | None, list[Diagnostic]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [error(f"file is not UTF-8 text: {exc.reason}", "Save it as UTF-8.",
                            Location(display, 1, 1))]
    except OSError as exc:
        return None, [error(f"cannot read file: {exc.strerror}", "Check the path and permissions.",
                            Location(display, 1, 1))]
    return parse(text, display)
