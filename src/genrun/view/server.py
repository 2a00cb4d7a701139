"""genrun-view's routes on Starlette, served by uvicorn: each page is a GET with its choices in
the query string, run in Starlette's thread pool (the rows are read from files)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from genrun.view.app import Guard, Viewer, int_of

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def build_app(viewer: Viewer, hosts: list[str], token: str | None) -> Any:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def page(make: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                result = await run_in_threadpool(make, request)
            except LookupError as exc:
                return PlainTextResponse(f"not found: {exc.args[0] if exc.args else exc}", status_code=404)
            except TimeoutError as exc:
                return PlainTextResponse(str(exc), status_code=503)
            except (OSError, RuntimeError) as exc:
                log.warning("%s: %s", request.url.path, exc)
                return PlainTextResponse(f"cannot read this run: {exc}", status_code=500)
            if isinstance(result, Response):
                return result
            if isinstance(result, dict):
                return JSONResponse(result, headers={"cache-control": "no-store"})
            return HTMLResponse(result, headers={"cache-control": "no-store"})
        return endpoint

    def query(request: Request) -> dict[str, str]:
        return {k: v for k, v in request.query_params.items() if k != "token"}

    def plot(request: Request) -> Any:
        found = viewer.catalog.get(request.query_params.get("key", ""), "sweep")
        if found is None or not (found.path / "summary.png").is_file():
            raise LookupError("no plot for this sweep")
        return FileResponse(found.path / "summary.png", media_type="image/png")

    routes = [
        Route("/", page(lambda r: viewer.runs_page())),
        Route("/run", page(lambda r: viewer.run_page(r.query_params.get("key", ""), query(r)))),
        Route("/rows", page(lambda r: viewer.rows_fragment(r.query_params.get("key", ""), query(r)))),
        Route("/row", page(lambda r: viewer.row_page(r.query_params.get("key", ""),
                                                     int_of(r.query_params.get("pos"), -1)))),
        Route("/sweep", page(lambda r: viewer.sweep_page(r.query_params.get("key", "")))),
        Route("/compare", page(lambda r: viewer.compare_page(query(r)))),
        Route("/plot", page(plot)),
        Route("/api/live", page(lambda r: viewer.live(r.query_params.get("key", "")))),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    return Guard(Starlette(routes=routes), hosts, token)


def serve(app: Any, host: str, port: int, ready: Callable[[int], None]) -> None:
    """Serve until stopped; `ready` gets the port (the one the OS chose for --port 0)."""
    import asyncio
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections wait from now on, so "ready" is true when it is said
    ready(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    asyncio.run(server.serve(sockets=[sock]))
