"""Error responses: JSON bodies of the shape RunPod clients expect (``{"error": "..."}``)."""

from __future__ import annotations

from starlette.responses import JSONResponse


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
