"""Render a plan for people (Terraform-like text, optionally coloured), for tools (JSON) and for pull
requests (Markdown). Sensitive values are always shown as ``(sensitive value)``."""

from __future__ import annotations

import json
from typing import Any

from gpuform.plan.cost import format_cost
from gpuform.plan.model import Action, Cost, Drift, Expected, Plan, ResourceChange
from gpuform.util.hashing import is_hashed

SYMBOL = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "no-op": " "}
VERB = {"create": "will be created", "update": "will be updated in-place", "replace": "must be replaced",
        "delete": "will be destroyed", "no-op": "is up to date"}
COLOUR = {"+": "32", "~": "33", "-": "31", "-/+": "35"}
MAX_COMMENT = 60_000


def _paint(text: str, symbol: str, colour: bool) -> str:
    code = COLOUR.get(symbol)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def _value(value: Any) -> str:
    if is_hashed(value):
        return "(sensitive value)"
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    return json.dumps(value, sort_keys=True, default=str)


def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def _lines_all(attrs: dict[str, Any], symbol: str, indent: int, colour: bool) -> list[str]:
    """Every attribute, each line marked ``symbol`` (create and delete)."""
    out: list[str] = []
    shown = {k: v for k, v in attrs.items() if v is not None and v not in ([], {})}
    width = max((len(k) for k in shown), default=0)
    pad = " " * indent
    for key in sorted(shown):
        value = shown[key]
        if _is_block(value):
            out.append(_paint(f"{pad}{symbol} {key} {{", symbol, colour))
            out += _lines_all(value, symbol, indent + 4, colour)
            out.append(f"{pad}  }}")
        else:
            out.append(_paint(f"{pad}{symbol} {key.ljust(width)} = {_value(value)}", symbol, colour))
    return out


def _lines_diff(before: dict[str, Any], after: dict[str, Any], forced: set[str], indent: int,
                colour: bool) -> list[str]:
    """Only what changed; ``# forces replacement`` after fields in ``forced``."""
    out: list[str] = []
    pad = " " * indent
    keys = sorted(set(before) | set(after))
    changed = [k for k in keys if before.get(k, _MISSING) != after.get(k, _MISSING)]
    width = max((len(k) for k in changed), default=0)
    for key in changed:
        old, new = before.get(key, _MISSING), after.get(key, _MISSING)
        tag = "  # forces replacement" if key in forced else ""
        if isinstance(old, dict) and isinstance(new, dict):
            out.append(_paint(f"{pad}~ {key} {{", "~", colour) + tag)
            out += _lines_diff(old, new, set(), indent + 4, colour)
            out.append(f"{pad}  }}")
        elif old is _MISSING:
            out.append(_paint(f"{pad}+ {key.ljust(width)} = {_value(new)}", "+", colour) + tag)
        elif new is _MISSING:
            out.append(_paint(f"{pad}- {key.ljust(width)} = {_value(old)}", "-", colour) + tag)
        else:
            out.append(_paint(f"{pad}~ {key.ljust(width)} = {_value(old)} -> {_value(new)}", "~", colour) + tag)
    hidden = len(keys) - len(changed)
    if hidden:
        out.append(f"{pad}  # ({hidden} unchanged attribute{'s' if hidden != 1 else ''} hidden)")
    return out


_MISSING: Any = object()


def _cost_line(change: ResourceChange) -> str:
    cost = change.cost or change.prior_cost
    if cost is None:
        return ""
    text = f"cost: {_cost_range(change.prior_cost)} -> {_cost_range(change.cost)}" if (
        change.action == Action.UPDATE and change.prior_cost and change.cost
        and _cost_range(change.prior_cost) != _cost_range(change.cost)) else f"cost: {_cost_range(cost)}"
    note = f"; {cost.note}" if cost.note else ""
    return f"{text} (priced as {cost.price_key}{note})"


ROUGH_BELOW = 86_400.0  # seconds of history under which a monthly figure is said to be rough


def expected_text(expected: Expected) -> str:
    """``$123.45/month expected (from 40 requests over 6.9 days, cold start 30s default)``."""
    amount = (f"{format_cost(expected.per_month)}/month" if expected.per_month is not None
              else f"{expected.worker_hours_per_month:.1f} worker-hours/month (no price)")
    rough = "; under a day of history: a rough extrapolation" if expected.window_seconds < ROUGH_BELOW else ""
    return f"{amount} expected ({expected.basis}{rough})"


def _expected_line(change: ResourceChange) -> str:
    expected = change.cost.expected if change.cost else None
    return f"expected: {expected_text(expected)}, with the planned policy" if expected else ""


def _unchanged_expected(plan: Plan) -> list[str]:
    """Endpoints the plan does not list that have an estimate (information only)."""
    return [f"  {c.address}: {expected_text(c.cost.expected)}" for c in plan.changes
            if not c.shown and c.cost is not None and c.cost.expected is not None]


def _cost_range(cost: Cost | None) -> str:
    if cost is None:
        return "none"
    return (f"{format_cost(cost.currency_per_hour_min)}/h at min_workers, "
            f"{format_cost(cost.currency_per_hour_max)}/h at max_workers")


def render_change(change: ResourceChange, colour: bool = False) -> list[str]:
    action = change.action
    symbol = SYMBOL[action]
    reason = {"replace_by_request": " (as requested with --replace)",
              "replace_because_tainted": " (tainted: a previous apply failed part-way)",
              "update_because_tainted": " (a previous apply failed part-way; it goes on from what is there)",
              "delete_because_no_resource_config": " (no longer in the configuration)"}.get(change.action_reason, "")
    head = (f"  # {change.address} will be imported" if change.importing is not None and action == Action.NO_OP
            else f"  # {change.address} {VERB[action]}{reason}")
    lines = [head, *([f'    # (imported from "{change.importing}")'] if change.importing is not None else []),
             _paint(f"{symbol.rjust(3)} {change.kind} \"{change.name}\" {{", symbol, colour)]
    forced = {str(p[0]) for p in change.replace_paths}
    if action == Action.CREATE:
        lines += _lines_all(change.after or {}, "+", 6, colour)
    elif action == Action.DELETE:
        lines += _lines_all(change.before or {}, "-", 6, colour)
    else:
        lines += _lines_diff(change.before or {}, change.after or {}, forced, 6, colour)
    lines.append("    }")
    costs = [line for line in (_cost_line(change), _expected_line(change)) if line]
    lines += [f"    {n}" for n in costs + change.notes]
    return lines


def render_drift(drift: Drift, colour: bool = False) -> list[str]:
    if drift.after is None:
        return [f"  # {drift.address} has been deleted",
                _paint(f"  - {drift.kind} \"{drift.name}\" {{", "-", colour), "      # (gone)", "    }"]
    lines = [f"  # {drift.address} has changed", _paint(f"  ~ {drift.kind} \"{drift.name}\" {{", "~", colour)]
    lines += _lines_diff(drift.before or {}, drift.after, set(), 6, colour)
    lines.append("    }")
    return lines


def summary(plan: Plan) -> str:
    if plan.mode == "refresh-only":
        return (f"Refresh: {len(plan.drift)} object(s) changed outside gpuform; applying this plan updates "
                "the state only." if plan.drift else "No changes. Your infrastructure still matches the state.")
    if not plan.has_changes:
        return "No changes. Your infrastructure matches the configuration."
    c = plan.counts()
    imports = f"{c['import']} to import, " if c["import"] else ""
    return f"Plan: {imports}{c['add']} to add, {c['change']} to change, {c['destroy']} to destroy."


def render_text(plan: Plan, colour: bool = False) -> str:
    out: list[str] = []
    if plan.drift:
        out += ["Note: Objects have changed outside of gpuform", "",
                "gpuform detected the following changes made outside of gpuform since the last apply:", ""]
        for d in plan.drift:
            out += [*render_drift(d, colour), ""]
    changes = [c for c in plan.changes if c.shown]
    if changes:
        out += ["gpuform will perform the following actions:", ""]
        for c in changes:
            out += [*render_change(c, colour), ""]
    unchanged = _unchanged_expected(plan)
    if unchanged:
        out += ["Expected cost of unchanged endpoints, from their recorded traffic (information only):",
                *unchanged, ""]
    for w in plan.warnings:
        out.append(_paint(f"Warning: {w}", "~", colour))
    if plan.warnings:
        out.append("")
    out.append(summary(plan))
    return "\n".join(out)


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_json(), indent=2, default=str)


def render_markdown(plan: Plan, title: str = "") -> str:
    head = f"### gpuform plan{(' — ' + title) if title else ''}"
    meta = f"state serial {plan.serial}, lineage `{plan.lineage[:8]}`, config `{plan.config_digest[:12]}`"
    out = [head, "", meta, ""]
    changes = [ch for ch in plan.changes if ch.shown]
    if changes:
        out += ["| resource | action | why | $/h at min → max workers | expected $/month |", "|---|---|---|---|---|"]
        for ch in changes:
            why = _why(ch)
            cost = f"{_md_cost(ch.cost)}" if ch.cost else ("—" if ch.kind != "endpoint" else "unknown")
            action = "import" if ch.action == Action.NO_OP else f"{SYMBOL[ch.action]} {ch.action}"
            out.append(f"| `{ch.address}` | {action} | {why} | {cost} | {_md_expected(ch)} |")
        out.append("")
    unchanged = [c for c in plan.changes if not c.shown and c.cost is not None and c.cost.expected is not None]
    if unchanged:
        out += ["**Expected cost of unchanged endpoints** (from recorded traffic): "
                + "; ".join(f"`{c.address}` {_md_expected(c)}" for c in unchanged), ""]
    if plan.drift:
        out += ["**Changed outside gpuform since the last apply:** "
                + ", ".join(f"`{d.address}` ({'deleted' if d.after is None else 'changed'})" for d in plan.drift), ""]
    out += [f"> ⚠️ {w}" for w in plan.warnings]
    out += ["", f"**{summary(plan)}**", ""]
    body = render_text(plan, colour=False)
    details = ["<details><summary>Show plan</summary>", "", "```diff", body, "```", "</details>"]
    text = "\n".join(out + details)
    if len(text) > MAX_COMMENT:
        cut = MAX_COMMENT - len("\n".join(out)) - 200
        details = ["<details><summary>Show plan (truncated)</summary>", "", "```diff", body[:max(cut, 0)],
                   "... (truncated; run `gpuform plan` for the whole plan)", "```", "</details>"]
        text = "\n".join(out + details)
    return text


def _why(ch: ResourceChange) -> str:
    if ch.importing is not None:
        return f"import `{ch.importing}`" + (f"; {_why_action(ch)}" if ch.action != Action.NO_OP else "")
    return _why_action(ch)


def _why_action(ch: ResourceChange) -> str:
    if ch.action == Action.CREATE:
        return "new"
    if ch.action == Action.DELETE:
        return "removed from configuration" if ch.action_reason else "destroy"
    if ch.replace_paths:
        return "forced by " + ", ".join(".".join(str(x) for x in p) for p in ch.replace_paths)
    if ch.action_reason == "replace_by_request":
        return "--replace"
    if ch.action_reason in ("replace_because_tainted", "update_because_tainted"):
        return "tainted"
    keys = sorted({k for k in set(ch.before or {}) | set(ch.after or {})
                   if (ch.before or {}).get(k) != (ch.after or {}).get(k)})
    return ", ".join(keys[:4]) + (" …" if len(keys) > 4 else "")


def _md_cost(cost: Cost | None) -> str:
    if cost is None:
        return "unknown"
    return f"{format_cost(cost.currency_per_hour_min)} → {format_cost(cost.currency_per_hour_max)}"


def _md_expected(ch: ResourceChange) -> str:
    """The month's expected cost with its basis, or — when there is no recorded traffic."""
    expected = ch.cost.expected if ch.cost else None
    return expected_text(expected).replace(" expected (", " (") if expected else "—"
