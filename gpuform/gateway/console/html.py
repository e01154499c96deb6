"""HTML for the console: one layout, escaped text everywhere (:func:`esc`), and the security headers every page
carries (no inline script or style is ever needed, so the content security policy forbids them)."""

from __future__ import annotations

import html

from starlette.responses import HTMLResponse

from gpuform import __version__

STATIC = "/console/static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def duration(value: float) -> str:
    value = max(0.0, value)
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def badge(status: str) -> str:
    return f'<span class="badge badge-{esc(status.lower())}">{esc(status)}</span>'


def page(title: str, body: str, *, who: str = "", csrf: str = "", status: int = 200,
         gateway: str = "") -> HTMLResponse:
    """A whole page: header (with who is logged in and a log-out button), main content, footer."""
    meta = f'<meta name="csrf-token" content="{esc(csrf)}">' if csrf else ""
    user = ""
    if who:
        user = (f'<span class="who">{esc(who)}</span><form method="post" action="/console/logout" class="inline">'
                f'<input type="hidden" name="csrf" value="{esc(csrf)}"><button type="submit">Log out</button></form>')
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f'<title>{esc(title)} · gpuform console</title>'
            f'<link rel="icon" href="{STATIC}/favicon.svg" type="image/svg+xml">'
            f'<link rel="stylesheet" href="{STATIC}/console.css">'
            f'<script src="{STATIC}/console.js" defer></script></head><body>'
            f'<header class="top"><a class="brand" href="/console">gpuform</a>'
            f'<span class="gw">{esc(gateway)}</span><span class="spacer"></span>{user}</header>'
            f'<main id="main">{body}</main>'
            f'<footer>gpuform {esc(__version__)} · times in UTC</footer></body></html>')
    return HTMLResponse(text, status, headers=HEADERS)


def table(head: list[str], rows: list[list[str]], *, caption: str, empty: str, id_: str = "") -> str:
    """A table of already-escaped cells, scrollable on a narrow screen."""
    ident = f' id="{esc(id_)}"' if id_ else ""
    heads = "".join(f'<th scope="col">{esc(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td colspan="{len(head)}" class="empty">{esc(empty)}</td></tr>'
    return (f'<div class="scroll" tabindex="0" role="region" aria-label="{esc(caption)}"><table{ident}>'
            f'<caption>{esc(caption)}</caption><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table></div>')
