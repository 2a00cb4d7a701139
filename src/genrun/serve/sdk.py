"""The MCP SDK's server, whichever major version is installed.

genrun-serve runs on the SDK 2.x (`MCPServer`) and on 1.24 and later 1.x (`FastMCP`): UltraRAG's
client needs fastmcp 3.3-3.4, which needs `mcp<2`, and genrun-serve must install beside it. The
two differ in where the server class, its Context and ToolError live, and in where the HTTP
settings go (1.x: the constructor; 2.x: streamable_http_app). This module is the one place that
knows; nothing else in genrun imports the SDK's server by path.

May use: the MCP SDK only.
"""

from __future__ import annotations

from typing import Any

try:  # the SDK 2.x
    from mcp.server.mcpserver import Context  # noqa: F401 - re-exported
    from mcp.server.mcpserver import MCPServer as Server
    from mcp.server.mcpserver.exceptions import ToolError  # noqa: F401

    MAJOR = 2
except ImportError:  # the SDK 1.x: FastMCP, bundled in the SDK until 2.0
    # (the type checker runs beside the SDK 2.x, where these names are not)
    from mcp.server.fastmcp import Context  # type: ignore[attr-defined, no-redef]  # noqa: F401
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[attr-defined, no-redef]
    from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]  # noqa: F401

    MAJOR = 1


def sdk_version() -> str:
    from importlib.metadata import version

    return version("mcp")


def make_server(name: str, instructions: str, version: str, lifespan: Any, http: dict[str, Any] | None = None,
                **auth: Any) -> Any:
    """The server object. http: the streamable HTTP settings (host, transport_security), which
    the SDK 1.x takes here and 2.x takes in streamable_http_app (see http_app)."""
    if MAJOR == 2:
        return Server(name, instructions=instructions, version=version, lifespan=lifespan, log_level="WARNING", **auth)
    return Server(name, instructions=instructions, lifespan=lifespan, log_level="WARNING", **(http or {}), **auth)


def http_app(server: Any, http: dict[str, Any]) -> Any:
    """The streamable HTTP ASGI app of a server made by make_server with the same settings."""
    if MAJOR == 2:
        return server.streamable_http_app(**http)
    return server.streamable_http_app()


def handshake_versions() -> tuple[str, ...] | None:
    """The protocol versions that open a session (the initialize handshake), or None where the
    SDK knows no sessionless protocol (1.x: every request needs the handshake anyway)."""
    if MAJOR == 1:
        return None
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

    return tuple(HANDSHAKE_PROTOCOL_VERSIONS)
