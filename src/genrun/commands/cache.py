"""genrun-cache stats | clear | explain RUN_DIR INDEX: the response cache (cache=on) from the
command line (genrun.backend.response_cache)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from genrun.backend.response_cache import ResponseCache, default_path, digest, remove_cache_files
from genrun.commands import run_command
from genrun.dataset import open_rows
from genrun.errors import UserError
from genrun.prompt.builder import request_maker
from genrun.settings import load_saved


def row_messages(run_dir: Path, index: int) -> Any:
    """The messages a run sent for row `index`, rebuilt from its saved settings (no model loaded)."""
    settings = load_saved(run_dir)
    build, _ = request_maker(settings.dataset, settings.prompt, settings.sampling.get("seed"))
    for i, row in open_rows(settings.dataset).rows:
        if i == index:
            request = build(i, row)
            if request.messages is None:
                raise UserError(f"row {index} could not be sent: {request.error}")
            return request.messages, request.seed
    raise UserError(f"{run_dir}: the dataset has no row {index}")


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(prog="genrun-cache", description="The response cache (cache=on): "
                                     "stats, clear, or why a row of a run was not answered from it.")
    parser.add_argument("--path", help="the cache file (default: responses.sqlite in genrun's cache folder)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stats", help="entries and size")
    commands.add_parser("clear", help="delete every entry")
    explain = commands.add_parser("explain", help="which part of a row's key differs from the nearest entry")
    explain.add_argument("run_dir", type=Path)
    explain.add_argument("index", type=int, help="the row's index (the records' `index`)")
    args = parser.parse_args(argv)

    def body() -> None:
        if args.command == "explain":
            run_json = args.run_dir / "run.json"
            saved = json.loads(run_json.read_text()) if run_json.is_file() else {}
            if "cache" not in saved:
                raise UserError(f"{args.run_dir}: this run did not use the cache (cache=on), so it has no key")
            cache = ResponseCache(args.path or saved["cache"]["path"])
            messages, seed = row_messages(args.run_dir, args.index)
            started = datetime.fromisoformat(saved["started_at"]).timestamp()  # what the run found there
            print(cache.explain({**saved["cache"]["parts"], "messages": digest(messages), "seed": seed}, started))
            return
        if args.command == "clear":
            try:
                cache = ResponseCache(args.path)
            except UserError as exc:
                if "is damaged" not in str(exc):
                    raise
                path = Path(args.path).expanduser() if args.path else default_path()
                remove_cache_files(path)
                print(f"genrun-cache: {path} was damaged: removed it")
                return
            print(f"genrun-cache: cleared {cache.clear()} entries from {cache.path}")
            return
        print(json.dumps(ResponseCache(args.path).stats()))

    run_command("genrun-cache", body)


if __name__ == "__main__":
    main()
