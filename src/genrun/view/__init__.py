"""`genrun-view`: runs, their rows, sweeps and comparisons in a browser, and a run exported as
one self-contained HTML file.

    genrun-view [PATH ...] [--port N] [--host H] [--allowed-host NAME]
    genrun-view RUN --export report.html [--export-rows N] [--export-show wrong]

A local, read-only web server over run directories, sweep directories or folders holding
them (default: ./outputs). It binds loopback; any other address needs the token
(GENRUN_VIEW_TOKEN, or one made at start and printed once). Every page checks the Host header.
A million-row run opens from its index; pages of rows are read from the journal by offset.

May use: genrun.rundir (the index, the journal's records), genrun.reports (sweep summaries,
genrun-compare), genrun.scoring (intervals), genrun.listen, genrun.errors; Starlette and
uvicorn (the `view` extra), Jinja2, matplotlib for the export's plot.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from genrun.errors import UserError

TOKEN_VARIABLE = "GENRUN_VIEW_TOKEN"
DEFAULT_PORT = 8766


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrun-view", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                        help="run directories, sweep directories, or folders holding them (default: ./outputs)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1); any other needs the token")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a host name the browser reaches this server by (the Host header), besides loopback")
    parser.add_argument("--export", type=Path, metavar="FILE",
                        help="write one run as a self-contained HTML file instead of serving")
    parser.add_argument("--export-rows", type=int, default=1000, metavar="N",
                        help="rows the export holds (default 1000, the first in the journal)")
    parser.add_argument("--export-show", default="all", metavar="FILTER",
                        help="which rows the export holds: all, failed, wrong, right, truncated, cached")
    return parser


def roots_of(paths: list[Path]) -> list[Path]:
    roots = paths or [Path("outputs")]
    for root in roots:
        if not root.exists():
            hint = "run genrun first, or give the folder its runs are in" if not paths else "check the path"
            raise UserError(f"{root}: no such folder ({hint})")
    return roots


def run(args: argparse.Namespace) -> None:
    from genrun.listen import allowed_hosts, is_loopback, url_host

    roots = roots_of(args.paths)
    if args.export is not None:
        from genrun.view.export import export

        if len(roots) != 1:
            raise UserError("--export writes one run: give its directory alone")
        count = export(roots[0], args.export, args.export_rows, args.export_show)
        print(f"genrun-view: wrote {args.export} ({count} rows)", file=sys.stderr)
        return
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: give a port from 1 to 65535 (0: any free one)")
    token = None
    if not is_loopback(args.host):
        import secrets

        token = os.environ.get(TOKEN_VARIABLE) or secrets.token_urlsafe(32)
    from genrun.view.app import Viewer
    from genrun.view.server import build_app, serve
    from genrun.view.workers import warm

    viewer = Viewer(roots)
    warm()
    found = viewer.catalog.scan(force=True)
    hosts = allowed_hosts(args.host, args.allowed_host)
    app = build_app(viewer, hosts, token)

    def ready(port: int) -> None:
        runs = sum(f.kind == "run" for f in found.values())
        address = f"http://{url_host('127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host)}:{port}/"
        shown = address if token is None or os.environ.get(TOKEN_VARIABLE) else f"{address}?token={token}"
        print(f"genrun-view: {shown} ({runs} runs, {len(found) - runs} sweeps under "
              f"{', '.join(str(r) for r in roots)}); Ctrl-C stops it", file=sys.stderr, flush=True)
        if token is not None:
            print(f"genrun-view: warning: listening on {args.host}, reachable from other machines: only requests "
                  f"with the token are answered (${TOKEN_VARIABLE}, or the address above)", file=sys.stderr, flush=True)

    serve(app, args.host, args.port, ready)


def main(argv: Optional[list[str]] = None) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="genrun-view: %(levelname)s %(message)s")
    args = parser().parse_args(argv)
    try:
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as exc:
            if args.export is None:
                raise UserError("genrun-view serves pages with Starlette and uvicorn: "
                                "pip install 'genrun[view]'") from exc
        run(args)
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"genrun-view: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"genrun-view: error: {exc.strerror or exc} ({getattr(exc, 'filename', None) or args.host})",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
