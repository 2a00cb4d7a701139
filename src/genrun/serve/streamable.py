"""genrun-serve over streamable HTTP: the address and its checks (loopback by default; the
Host and Origin headers on every address), the token (a header, or `?token=` for clients that
can pass only a URL), and the session-based protocol only.

(Not named http.py: run by path, a module of that name shadows the standard library's.)"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from genrun.errors import UserError
from genrun.listen import allowed_hosts, is_loopback, url_host
from genrun.prompt.images import ImagePolicy
from genrun.serve.overrides import conventions, start_settings
from genrun.serve.policy import Operator
from genrun.serve.sessions import Http
from genrun.serve.tools import build_server

TOKEN_VARIABLE = "GENRUN_SERVE_TOKEN"


def handshake_only(app: Any) -> Any:
    """Sessions live in the session-based protocol (the initialize handshake, Mcp-Session-Id).
    A sessionless 2026-07-28 request is answered "unsupported protocol version", naming the
    versions this server speaks: the SDK's clients then open a session instead. A token given
    as `?token=` (a client that can pass only a URL) becomes the Authorization header here and
    leaves the URL, so nothing after this sees it in a path or a log."""
    from genrun.serve.sdk import handshake_versions

    versions = handshake_versions()

    async def gate(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = token_from_query(scope)
            asked = dict(scope["headers"]).get(b"mcp-protocol-version", b"").decode("latin-1")
            if versions is not None and asked and asked not in versions:
                body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32022, "message": "genrun-serve keeps settings per session: use the initialize handshake",
                    "data": {"supported": list(versions), "requested": asked}}}).encode()
                await send({"type": "http.response.start", "status": 400, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return gate


def token_from_query(scope: dict[str, Any]) -> dict[str, Any]:
    """The scope with `token=` taken out of its query string and, where the request has no
    Authorization header, put in one (as Jupyter's servers accept a token)."""
    from urllib.parse import parse_qsl, urlencode

    query = scope.get("query_string", b"")
    if b"token=" not in query:
        return scope
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    tokens = [value for key, value in pairs if key == "token"]
    headers = list(scope["headers"])
    if tokens and not any(name == b"authorization" for name, _ in headers):
        headers.append((b"authorization", f"Bearer {tokens[-1]}".encode("latin-1")))
    rest = urlencode([(key, value) for key, value in pairs if key != "token"]).encode("latin-1")
    return {**scope, "headers": headers, "query_string": rest}


def http_address(text: str) -> tuple[str, int]:
    """PORT, HOST:PORT or [IPv6]:PORT; a bad one is a UserError naming the forms."""
    host, port = "127.0.0.1", text
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        host, port = inside, rest[1:] if rest.startswith(":") else ""
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535 or not host or (text.startswith("[") and ":" not in host):
        raise UserError(f"--http {text}: give a port from 1 to 65535, or HOST:PORT "
                        "(e.g. --http 8765, --http 127.0.0.1:8765, --http [::1]:8765)")
    return host, int(port)


def http_settings(host: str, hosts: list[str]) -> dict[str, Any]:
    """The SDK's streamable HTTP settings: the address, and the Host and Origin headers allowed."""
    from mcp.server.transport_security import TransportSecuritySettings

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[h for name in hosts for h in (name, f"{name}:*")],
        allowed_origins=[f"{scheme}://{name}{port_}" for name in hosts for scheme in ("http", "https")
                         for port_ in ("", ":*")])
    return {"host": host, "transport_security": security}


def serve_http(server: Any, http: dict[str, Any], port: int) -> None:
    import anyio
    import uvicorn

    from genrun.serve.sdk import http_app

    app = handshake_only(http_app(server, http))
    config = uvicorn.Config(app, host=http["host"], port=port, log_level="warning", access_log=False)
    anyio.run(uvicorn.Server(config).serve)


def prepare_http(args: argparse.Namespace) -> tuple[Http, Callable[[], None]]:
    """Check the HTTP settings, build the operator's backend, say what clients get; returns the
    gate and the call that serves until stopped."""
    import secrets

    host, port = http_address(args.http)
    loopback = is_loopback(host)
    token = os.environ.get(TOKEN_VARIABLE) or None
    if args.no_token:
        if not loopback:
            raise UserError(f"--no-token: serving on {host}, reachable from other machines, needs the token; "
                            f"set {TOKEN_VARIABLE} or leave the one genrun-serve makes")
        token, access = None, "no token (loopback only)"
    elif token is not None:
        access = f"every request needs it, in the URL's ?token= or the header Authorization: Bearer ${TOKEN_VARIABLE}"
    else:
        token = secrets.token_urlsafe(32)  # printed once, here, and nowhere else
        access = f"every request needs it, in the URL's ?token= or the header Authorization: Bearer {token}"
    start = start_settings(args.overrides, always=True)
    assert start is not None  # always=True
    image_root = args.image_root.expanduser().resolve() if args.image_root else None
    if image_root is not None and not image_root.is_dir():
        raise UserError(f"--image-root {args.image_root}: no such folder")
    operator = Operator(start["backend"], start["backend_configs"][start["backend"]], start["sampling_params"],
                        start["extra_params"], frozenset(args.allow_model),
                        frozenset(u.rstrip("/") for u in args.allow_base_url),
                        ImagePolicy(restricted=True, root=image_root, urls=args.allow_image_urls),
                        conventions(args))
    gate = Http(operator)
    if args.overrides:  # the operator chose a backend: built now, not on the first call
        gate.start()
    hosts = allowed_hosts(host, args.allowed_host)
    url = f"http://{url_host(host)}:{port}/mcp"
    print(f"genrun-serve: MCP over streamable HTTP at {url}; {access}", file=sys.stderr, flush=True)
    print(f"genrun-serve: clients get backend={operator.backend}"
          + (f" (or the models {', '.join(sorted(operator.models))})" if operator.models else "")
          + f"; the Host header must be one of {', '.join(hosts)} (--allowed-host NAME adds one)",
          file=sys.stderr, flush=True)
    if not loopback:
        print(f"genrun-serve: warning: serving on {host}: other machines can reach this port; only requests "
              "with the token are answered", file=sys.stderr, flush=True)
    http = http_settings(host, hosts)
    server = build_server(gate, token=token, url=url, http=http)
    return gate, lambda: serve_http(server, http, port)
