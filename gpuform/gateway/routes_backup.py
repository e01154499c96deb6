"""``GET /admin/backup`` and ``POST /admin/restore``: the SQLite store's online backup and its restore (see
:mod:`gpuform.gateway.backup`). A PostgreSQL store answers 409: back it up with pg_dump."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from gpuform.errors import StoreError
from gpuform.gateway import backup
from gpuform.gateway.http import HTTPError, require_admin
from gpuform.gateway.runtime import Runtime
from gpuform.gateway.sqlite import SQLiteStore

PG_HINT = ("this gateway keeps its data in PostgreSQL: back it up with pg_dump and restore it with pg_restore "
           "(its schema, see docs/ha.md)")


def _database(rt: Runtime) -> Path:
    if not isinstance(rt.store, SQLiteStore) or rt.store.conn.where == ":memory:":
        raise HTTPError(409, PG_HINT if not isinstance(rt.store, SQLiteStore) else "this gateway has no database file")
    return Path(rt.store.conn.where)


async def take_backup(request: Request) -> Response:
    """A consistent copy of the gateway's database, taken while it serves."""
    db = _database(require_admin(request))
    dest = db.with_name(f"backup-{secrets.token_hex(8)}.db")
    try:
        await asyncio.to_thread(backup.snapshot, db, dest)
    except StoreError as exc:
        dest.unlink(missing_ok=True)
        raise HTTPError(503, f"{exc.message}. {exc.hint}") from None
    return FileResponse(dest, media_type="application/vnd.sqlite3", filename="gateway.db",
                        background=BackgroundTask(dest.unlink, missing_ok=True))


async def restore(request: Request) -> Response:
    """Take an uploaded backup: checked, staged, then the gateway restarts onto it (202)."""
    rt = require_admin(request)
    db = _database(rt)
    upload = db.with_name(f"upload-{secrets.token_hex(8)}.db")
    try:
        await _receive(request, upload)
        await asyncio.to_thread(backup.check, upload, rt.config.lineage)
        backup.stage(upload, db)
    except StoreError as exc:
        raise HTTPError(400, f"{exc.message}. {exc.hint}") from None
    finally:
        upload.unlink(missing_ok=True)
    restarting = rt.on_restart is not None
    if rt.on_restart is not None:
        asyncio.get_running_loop().call_later(0.2, rt.on_restart)
    return JSONResponse({"staged": True, "restarting": restarting}, status_code=202)


async def _receive(request: Request, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        async for chunk in request.stream():
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())


ROUTES = [
    Route("/admin/backup", take_backup, methods=["GET"]),
    Route("/admin/restore", restore, methods=["POST"]),
]
