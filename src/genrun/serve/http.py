"""genrun-serve over streamable HTTP: the address and its checks (loopback by default; the
Host and Origin headers on every address), the token, and the session-based protocol only."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from genrun.errors import UserError
from genrun.listen import allowed_hosts, is_loopback, url_host
from genrun.prompt.images import ImagePolicy
from genrun.serve.policy import Operator
from genrun.serve.sessions import Http
from genrun.serve.tools import build_server

TOKEN_VARIABLE = "GENRUN_SERVE_TOKEN"


def handshake_only(app: Any) -> Any:
    """Sessions live in the session-based protocol (the initialize handshake, Mcp-Session-Id).
    A sessionless 2026-07-28 request is answered "unsupported protocol version", naming the
    versions this server speaks: the SDK's clients then open a session instead."""
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

    async def gate(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            asked = dict(scope["headers"]).get(b"mcp-protocol-version", b"").decode("latin-1")
            if asked and asked not in HANDSHAKE_PROTOCOL_VERSIONS:
                body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32022, "message": "genrun-serve keeps settings per session: use the initialize handshake",
                    "data": {"supported": list(HANDSHAKE_PROTOCOL_VERSIONS), "requested": asked}}}).encode()
                await send({"type": "http.response.start", "status": 400, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return gate


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


def serve_http(server: Any, host: str, port: int, hosts: list[str]) -> None:
    import anyio
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[h for name in hosts for h in (name, f"{name}:*")],
        allowed_origins=[f"{scheme}://{name}{port_}" for name in hosts for scheme in ("http", "https")
                         for port_ in ("", ":*")])
    app = handshake_only(server.streamable_http_app(transport_security=security, host=host))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
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
        access = f"every request needs the header Authorization: Bearer ${TOKEN_VARIABLE}"
    else:
        token = secrets.token_urlsafe(32)  # printed once, here, and nowhere else
        access = f"every request needs the header Authorization: Bearer {token}"
    from genrun.serve import start_settings

    start = start_settings(args.overrides, always=True)
    image_root = args.image_root.expanduser().resolve() if args.image_root else None
    if image_root is not None and not image_root.is_dir():
        raise UserError(f"--image-root {args.image_root}: no such folder")
    operator = Operator(start["backend"], start["backend_configs"][start["backend"]], start["sampling_params"],
                        start["extra_params"], frozenset(args.allow_model),
                        frozenset(u.rstrip("/") for u in args.allow_base_url),
                        ImagePolicy(restricted=True, root=image_root, urls=args.allow_image_urls))
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
    server = build_server(gate, token=token, url=url)
    return gate, lambda: serve_http(server, host, port, hosts)
