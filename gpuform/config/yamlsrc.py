"""YAML → plain data with a source location for every node.

The C parser (libyaml) builds the node tree; a small walk turns it into dicts, lists and scalars while
recording where each value and each mapping key came from. Duplicate keys are errors, not silent
overwrites. Nothing here knows about gpuform's schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from gpuform.diagnostics import Diagnostic, Location, Path, error, warning

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.SafeLoader.yaml_constructors
_STR = "tag:yaml.org,2002:str"
MAX_ALIAS_VALUES = 10_000  # values reached through aliases, all together ("billion laughs" stop here)
MAX_DEPTH = 64  # nesting of mappings and lists


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
    """Turns the node graph into data. Aliases are expanded, within a budget; an alias that contains itself,
    and nesting deeper than :data:`MAX_DEPTH`, are located errors (never a hang or a crash)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.sources = SourceMap()
        self.diagnostics: list[Diagnostic] = []
        self._constructor = _Loader("")
        self._seen: set[int] = set()
        self._open: set[int] = set()  # nodes on the current path
        self._in_alias = 0
        self._alias_values = 0
        self._stopped = False

    def loc(self, node: yaml.Node) -> Location:
        mark = node.start_mark
        return Location(self.filename, mark.line + 1, mark.column + 1)

    def _stop(self, node: yaml.Node, summary: str, hint: str) -> None:
        self.diagnostics.append(error(summary, hint, self.loc(node)))
        self._stopped = True

    def _stop_aliases(self, node: yaml.Node) -> None:
        self._stop(node, f"YAML aliases expand to more than {MAX_ALIAS_VALUES} values",
                   "Aliases that refer to aliases multiply (a 'billion laughs' document); write the values "
                   "out or use ${var.NAME}.")

    def walk(self, node: yaml.Node, path: Path) -> Any:
        if self._stopped:
            return None
        key = id(node)
        if type(node) is yaml.ScalarNode:  # most nodes: nothing inside, so only the alias budget applies
            reused = key in self._seen
            self._seen.add(key)
            if reused or self._in_alias:
                self._alias_values += 1
                if self._alias_values > MAX_ALIAS_VALUES:
                    self._stop_aliases(node)
                    return None
            self.sources.values[path] = self.loc(node)
            return self._scalar(node)
        if key in self._open:
            self._stop(node, "recursive YAML alias: this anchor contains itself",
                       "Remove the alias (*name) inside the anchored (&name) value it refers to.")
            return None
        if len(path) > MAX_DEPTH:
            self._stop(node, f"values nested more than {MAX_DEPTH} levels deep", "Flatten the structure.")
            return None
        reused = key in self._seen
        self._seen.add(key)
        self._in_alias += reused
        self._alias_values += self._in_alias > 0
        if self._alias_values > MAX_ALIAS_VALUES:
            self._stop_aliases(node)
            return None
        self._open.add(key)
        try:
            return self._value(node, path)
        finally:
            self._open.discard(key)
            self._in_alias -= reused

    def _value(self, node: yaml.Node, path: Path) -> Any:
        self.sources.values[path] = self.loc(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        """The scalar's value, read as written: a plain scalar that YAML 1.1 would turn into another number
        or a boolean (``1.10``, ``0755``, ``12:30``, ``NO``) keeps its text, with a warning where the two differ."""
        if node.tag == _STR:
            return node.value
        build = _SCALARS.get(node.tag)
        if build is None:
            return node.value
        try:
            value = build(self._constructor, node)
        except (ValueError, yaml.YAMLError):
            return node.value
        if getattr(node, "style", None) or not isinstance(value, bool | int | float) or as_written(value, node.value):
            return value
        if _surprising(value, node.value):
            self.diagnostics.append(warning(
                f'"{node.value}" is kept as written; YAML 1.1 would read it as {json.dumps(value)}',
                f'Quote it ("{node.value}") to silence this warning.', self.loc(node)))
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


def as_written(value: bool | int | float, text: str) -> bool:
    """Whether ``value`` is what the text says (so the typed value loses nothing)."""
    if isinstance(value, bool):
        return text in ("true", "false")
    return str(value) == text


def _surprising(value: bool | int | float, text: str) -> bool:
    """Whether YAML 1.1's reading differs from the text's plain meaning (not just its spelling: 1.10 is 1.1)."""
    if isinstance(value, bool):
        return True
    try:
        return float(text.replace("_", "")) != float(value)
    except ValueError:
        return True


def parse(text: str, filename: str) -> tuple[Document | None, list[Diagnostic]]:
    """Parse one YAML document; on a syntax error return ``None`` and a located diagnostic."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except RecursionError:
        return None, [error("the YAML is nested too deeply to read", "Flatten the structure.",
                            Location(filename, 1, 1))]
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
