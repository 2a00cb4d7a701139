"""`genrun-serve`: the seed's five functions as the tools of an MCP server.

The reference serves generation_init, generate, multimodal_generate, multiturn_generate and
vllm_shutdown as MCP tools, and its pipelines call them by name; this server has the same
tool names, argument names and `{"ans_ls": [...]}` results (with `errors` beside them),
answered by genrun.api (so by genrun's backends, retries and checks). A prompt that failed is
"<error>" (or the operator's --failed-answer), its reason in `errors`.

    genrun-serve [--http [HOST:]PORT] [--allow-model M] [--allow-base-url U] [--image-root DIR] [OVERRIDES ...]
    genrun-serve --ultrarag DIR [OPTIONS ...]

stdio by default (stdout is the protocol: every log goes to stderr, vLLM's included);
streamable HTTP with --http. Hydra overrides, as for `genrun`, configure the backend.
--ultrarag writes a server folder UltraRAG's client can start (serve.ultrarag), and stdio
serves UltraRAG's `build` tool. Runs on the MCP SDK 1.24+ (beside UltraRAG's fastmcp) and 2.x.

On stdio the client is the local user, who may do what that user may: its generation_init
builds any backend. Over HTTP the client is whoever reaches the port, so the operator's
configuration is the ceiling: a bearer token on every request; the backend, model and
base_url the server was started with, unless the operator allowed others; sampling, extra
and the system prompt for the client's own session only; images as data URLs, or from the
one folder the operator names.

May use: genrun.api (the sessions' backends), genrun.settings, genrun.backend, genrun.prompt
(the image policy), genrun.credentials, genrun.errors, and the MCP SDK.
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from genrun import credentials
from genrun.errors import UserError
from genrun.serve.overrides import conventions, start_settings
from genrun.serve.sessions import Http, Stdio
from genrun.serve.streamable import TOKEN_VARIABLE, prepare_http
from genrun.serve.tools import build_server

log = logging.getLogger(__name__)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="genrun-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", metavar="[HOST:]PORT",
                        help="serve streamable HTTP at http://HOST:PORT/mcp (HOST: 127.0.0.1) instead of stdio")
    parser.add_argument("--allow-model", action="append", default=[], metavar="PATH_OR_NAME",
                        help="HTTP: a model clients may choose in generation_init (repeatable)")
    parser.add_argument("--allow-base-url", action="append", default=[], metavar="URL",
                        help="HTTP: an OpenAI-compatible server clients may choose (repeatable); no key is sent to it")
    parser.add_argument("--image-root", metavar="DIR", type=Path,
                        help="HTTP: the folder local image paths may come from (default: none, data URLs only)")
    parser.add_argument("--allow-image-urls", action="store_true",
                        help="HTTP: let clients name http(s) image URLs, which the backend then fetches")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="HTTP: a host name clients reach this server by (the Host header), besides loopback")
    parser.add_argument("--no-token", action="store_true",
                        help=f"HTTP on loopback only: serve without a bearer token (default: {TOKEN_VARIABLE}, "
                             "or one made at start and printed once)")
    parser.add_argument("--failed-answer", default="<error>", metavar="TEXT",
                        help="the answer a failed prompt gets in ans_ls (default: %(default)s, as the reference); "
                             "its reason is in errors")
    parser.add_argument("--images-first", action="store_true",
                        help="without an image_tag, put the images before the text, as UltraRAG's own server does "
                             "(default: after it, as the page says)")
    parser.add_argument("--strict-images", action="store_true",
                        help="a multimodal_path of another length than prompt_ls is an error (default: padded "
                             "with no images, or cut, with a warning, as UltraRAG's own server does)")
    parser.add_argument("--ultrarag", metavar="DIR", type=Path,
                        help="write DIR/parameter.yaml and DIR/src/<name>.py, a server folder UltraRAG's client can "
                             "start (with this command's other options), and exit; see the README")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for genrun: backend=hf backend.KEY=VALUE ...")
    raw = sys.argv[1:] if argv is None else argv
    # stdout is the protocol on stdio: every log goes to stderr, vLLM's own logger included.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    credentials.guard_logs()
    try:
        shown = credentials.hide(raw)  # a key given here moves into the environment, never into a file
        args = parser.parse_args(shown)
        if args.ultrarag is not None:
            from genrun.serve.ultrarag import write_folder

            if args.http:
                raise UserError("--ultrarag with --http: UltraRAG starts its servers over stdio; leave out --http")

            for path in write_folder(args.ultrarag, ultrarag_args(shown)):
                print(f"genrun-serve: wrote {path}", file=sys.stderr)
            return
        import genrun.serve.sdk  # noqa: F401 - the `serve` extra
    except ImportError as exc:
        if exc.name == "mcp" or (exc.name or "").startswith("mcp."):
            print("genrun-serve: error: it needs the MCP SDK: pip install 'genrun[serve]'", file=sys.stderr)
        else:  # the real cause, whatever it is: a missing module is not always the SDK
            print(f"genrun-serve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except UserError as exc:
        print(f"genrun-serve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    gate: Http | Stdio | None = None
    try:
        if args.http:
            gate, serve = prepare_http(args)
            serve()
        else:
            start = start_settings(args.overrides)
            gate = stdio = Stdio(conventions(args))
            starting = None
            if start is not None:
                async def starting() -> None:
                    await stdio.init(None, start["backend_configs"], start["sampling_params"], start["extra_params"],
                                     start["backend"])
            build_server(stdio, starting).run("stdio")
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"genrun-serve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the port is taken, the address is not this machine's
        print(f"genrun-serve: error: --http {args.http}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        if gate is not None:
            gate.close()  # the engines and their memory go with the server


def ultrarag_args(raw: list[str]) -> list[str]:
    """The options a --ultrarag folder's server runs with: this command's, less --ultrarag DIR,
    and UltraRAG's image order (so its requests are the same bytes as UltraRAG's own server's)."""
    kept, skip = [], False
    for arg in raw:
        if skip:
            skip = False
        elif arg == "--ultrarag":
            skip = True
        elif not arg.startswith("--ultrarag="):
            kept.append(arg)
    return kept if "--images-first" in kept else ["--images-first", *kept]


if __name__ == "__main__":
    main()
