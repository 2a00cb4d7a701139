"""`genrun-serve`: the seed's five functions as the tools of an MCP server.

The reference serves generation_init, generate, multimodal_generate, multiturn_generate and
vllm_shutdown as MCP tools, and its pipelines call them by name; this server has the same
tool names, argument names and `{"ans_ls": [...]}` results, answered by genrun.api (so by
genrun's backends, retries and checks). A prompt that failed is null, never "<error>".

    genrun-serve [--http [HOST:]PORT] [--allow-model M] [--allow-base-url U] [--image-root DIR] [OVERRIDES ...]

stdio by default (stdout is the protocol: every log goes to stderr, vLLM's included);
streamable HTTP with --http. Hydra overrides, as for `genrun`, configure the backend.

On stdio the client is the local user, who may do what that user may: its generation_init
builds any backend. Over HTTP the client is whoever reaches the port, so the operator's
configuration is the ceiling: a bearer token on every request; the backend, model and
base_url the server was started with, unless the operator allowed others; sampling, extra
and the system prompt for the client's own session only; images as data URLs, or from the
one folder the operator names.
"""


import argparse
import collections
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, TypedDict, TypeVar, Union

from genrun import api, credentials
from genrun.backend.base import Backend
from genrun.errors import UserError, one_line
from genrun.images import ImagePolicy

log = logging.getLogger(__name__)
T = TypeVar("T")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
MAX_SESSIONS = 1024  # HTTP sessions remembered; the least recently used is forgotten first
MODEL_KEYS = ("model_name_or_path", "model_name")
TOKEN_VARIABLE = "GENRUN_SERVE_TOKEN"


class Answers(TypedDict):
    """The reference's result, as the tool's structured content too."""

    ans_ls: List[Optional[str]]


PROMPTS = ("a list of prompts: each a string, or an OpenAI-style dict "
           '({"role": "user", "content": ...}, or {"content": {"text": ...}}, {"text": ...})')
DESCRIPTIONS = {
    "generation_init": (
        "Build the backend the generate tools use, freeing the one before. backend: 'vllm', 'openai' or 'hf'. "
        "backend_configs: settings by backend, as parameter.yaml holds them ({'hf': {'model_name_or_path': ..., "
        "'batch_size': 8}, 'openai': {'model_name': ..., 'base_url': ..., 'concurrency': 8}, 'vllm': {...}}); "
        "only the chosen backend's are used, and an unknown key is an error. sampling_params: temperature, top_p, "
        "max_tokens (and top_k, stop, seed, n, ...). extra_params: e.g. {'chat_template_kwargs': "
        "{'enable_thinking': false}}. Over HTTP the settings hold for this session only, and the backend and "
        "model are the server operator's unless it allowed others."),
    "generate": (
        f"Answer each prompt. prompt_ls: {PROMPTS}. system_prompt: a system message put first when not empty. "
        'Returns {"ans_ls": [...]}: one answer per prompt, in order; null for a prompt that failed.'),
    "multimodal_generate": (
        "Answer each prompt with its images. multimodal_path: one list of images per prompt (local paths, "
        f"http(s) or data URLs). prompt_ls: {PROMPTS}. system_prompt: as for generate. image_tag: e.g. '<img>': "
        "each tag in a prompt is replaced by the next image; null puts the images after the text. "
        'Returns {"ans_ls": [...]}, one per prompt; null for a prompt that failed.'),
    "multiturn_generate": (
        "Answer one conversation. messages: its turns, [{'role': 'user'|'assistant'|'system', 'content': ...}], "
        'ending with a user turn. system_prompt: as for generate. Returns {"ans_ls": [answer]} (null if it failed).'),
    "vllm_shutdown": "Shut the vLLM engine down and free its memory; does nothing with the other backends.",
}


# ---------------------------------------------------------------------------------------------
# What a client may ask for: everything on stdio; over HTTP, what the operator configured.


@dataclasses.dataclass
class Operator:
    """The operator's configuration, the ceiling for HTTP clients: the backend the server was
    started with (its overrides), the models and base URLs allowed besides, and the images."""

    backend: str
    settings: dict[str, Any]  # the backend's settings, its key (from the environment) included
    sampling: dict[str, Any]
    extra: dict[str, Any]
    models: frozenset[str] = frozenset()  # --allow-model
    base_urls: frozenset[str] = frozenset()  # --allow-base-url
    images: ImagePolicy = ImagePolicy(restricted=True, urls=False)

    def __post_init__(self) -> None:
        from genrun.backend import backend_class, checked_settings

        # every setting spelled out, as a client's are once checked: equal settings, one engine
        self.settings = checked_settings(backend_class(self.backend), self.settings, "backend")

    def admit(self, backend_configs: Dict[str, Any], backend: str) -> tuple[type, dict[str, Any]]:
        """The backend and settings a client's generation_init gets, or a UserError of one line
        naming the first setting it may not choose. Settings it leaves out are the operator's."""
        from genrun.backend import backend_class, checked_settings

        cls = backend_class(backend)
        asked = dict(backend_configs.get(backend) or {}) if backend in backend_configs else dict(backend_configs)
        ours = backend == self.backend
        base = dict(self.settings) if ours else {}
        where = f"backend_configs.{backend}"
        for key in sorted(asked):
            value = asked[key]
            if ours and key in base and same(base[key], value) and not credentials.is_secret_key(key):
                continue
            if key in MODEL_KEYS:
                if allowed(value, self.models):
                    continue
                raise UserError(f"{where}.{key}={value!r} is not a model this server's operator allows "
                                "(genrun-serve --allow-model NAME)")
            if key == "base_url" and str(value).rstrip("/") in self.base_urls:
                continue
            raise UserError(f"{where}.{key} cannot be set by a client of this server: its operator configures it "
                            "(allowed: sampling_params, extra_params and the system prompt, and the models and "
                            "base URLs the operator allows with --allow-model and --allow-base-url)")
        settings = checked_settings(cls, {**base, **asked}, where)
        model = next((settings[k] for k in MODEL_KEYS if k in settings), None)
        operators_model = next((base[k] for k in MODEL_KEYS if k in base), None)
        if not (ours and same(model, operators_model)):  # a model the client named
            if not allowed(model, self.models):
                raise UserError(f"{where}: backend={backend} with model {model!r} is not a model this server's "
                                "operator allows (genrun-serve --allow-model NAME)")
            if "trust_remote_code" in settings:
                settings["trust_remote_code"] = False  # no code a client names runs in the server
        if "base_url" in settings:
            url = str(settings["base_url"]).rstrip("/")
            mine = ours and url == str(self.settings.get("base_url", "")).rstrip("/")
            if not mine and url not in self.base_urls:
                raise UserError(f"{where}.base_url is not one this server's operator allows "
                                "(genrun-serve --allow-base-url URL)")
            if not mine:  # the operator's key goes only to the server it was configured for
                settings["api_key"] = "EMPTY"
        return cls, settings


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def allowed(model: Any, models: frozenset[str]) -> bool:
    """Whether a model (a path or a name) is one the operator allows; paths compare resolved."""
    if model is None:
        return False
    text = str(model)
    if text in models:
        return True
    path = Path(text).expanduser()
    return path.exists() and any(Path(m).expanduser().exists() and Path(m).expanduser().resolve() == path.resolve()
                                 for m in models)


# ---------------------------------------------------------------------------------------------
# Engines, shared by the sessions that ask for the same one.


@dataclasses.dataclass
class Engine:
    backend: Any
    users: int = 0
    _turn: Any = None

    @property
    def turn(self) -> Any:
        """One call at a time on the engine (an anyio lock, made in the serving event loop)."""
        if self._turn is None:
            import anyio

            self._turn = anyio.Lock()
        return self._turn


@dataclasses.dataclass
class Lease:
    """A session's use of a backend: its own settings, and the lock of the engine behind it."""

    backend: Any
    turn: Any
    engine: Engine | None = None  # None: a backend of its own (a client, cheap to build)


class Engines:
    """One engine per backend and settings, however many sessions use it; each session answers
    through its own view (Backend.reconfigured) with its own sampling."""

    def __init__(self) -> None:
        self.built: dict[str, Engine] = {}

    @staticmethod
    def key(cls: type, settings: dict[str, Any]) -> str:
        return json.dumps([cls.name, settings], sort_keys=True, default=str)

    def build(self, cls: type, settings: dict[str, Any], sampling: dict[str, Any], extra: dict[str, Any]) -> Any:
        """Build a backend (blocking: a model loads); an engine is kept for the sessions to share."""
        backend = cls(**settings, sampling=sampling, extra=extra)
        if type(backend).reconfigured is not Backend.reconfigured:
            self.built[self.key(cls, settings)] = Engine(backend)
        return backend

    async def lease(self, cls: type, settings: dict[str, Any], sampling: dict[str, Any],
                    extra: dict[str, Any]) -> Lease:
        import anyio

        engine = self.built.get(self.key(cls, settings))
        if engine is None:
            backend = await anyio.to_thread.run_sync(lambda: self.build(cls, settings, sampling, extra))
            engine = self.built.get(self.key(cls, settings))
            if engine is None:  # cheap to build (a client of a server): the session's own
                return Lease(backend, anyio.Lock())
        engine.users += 1
        return Lease(engine.backend.reconfigured(sampling, extra), engine.turn, engine)

    def release(self, lease: Lease, free: bool = False) -> None:
        """The session no longer uses it. free (vllm_shutdown): close the engine once no session uses it."""
        lease.backend.close()  # a view: leaves the engine running
        engine = lease.engine
        if engine is None:
            return
        engine.users -= 1
        if free and engine.users <= 0:
            for key, built in list(self.built.items()):
                if built is engine:
                    del self.built[key]
            engine.backend.close()

    def close(self) -> None:
        for engine in self.built.values():
            engine.backend.close()
        self.built.clear()


# ---------------------------------------------------------------------------------------------
# Where each call goes: the one session of stdio, or the caller's own HTTP session.


class Stdio:
    """The local user's one session: genrun.api as the Python API has it."""

    def __init__(self) -> None:
        import anyio

        self.turn = anyio.Lock()  # one backend, one call on it at a time

    async def init(self, ctx: Any, configs: Dict[str, Any], sampling: Dict[str, Any], extra: Dict[str, Any] | None,
                   backend: str) -> None:
        import anyio

        async with self.turn:
            await anyio.to_thread.run_sync(lambda: api.generation_init(configs, sampling, extra, backend))

    @contextlib.asynccontextmanager
    async def session(self, ctx: Any) -> AsyncIterator[api.Session]:
        async with self.turn:
            yield api.current()

    async def shutdown(self, ctx: Any) -> None:
        import anyio

        async with self.turn:
            await anyio.to_thread.run_sync(api.vllm_shutdown)

    def close(self) -> None:
        api.release()


@dataclasses.dataclass
class HttpSession:
    api: api.Session
    lease: Lease | None = None


class Http:
    """Each HTTP session (its Mcp-Session-Id) has its own settings; engines are shared."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.engines = Engines()
        self.sessions: collections.OrderedDict[str, HttpSession] = collections.OrderedDict()

    def start(self) -> None:
        """Build the operator's backend before the first client comes (blocking)."""
        from genrun.backend import backend_class

        op = self.operator
        backend = self.engines.build(backend_class(op.backend), op.settings, op.sampling, op.extra)
        if self.engines.key(backend_class(op.backend), op.settings) not in self.engines.built:
            backend.close()  # a client: each session makes its own; this one only checked the settings

    def _session(self, ctx: Any) -> HttpSession:
        sid = (ctx.headers or {}).get("mcp-session-id")
        if not sid:  # the handshake-only gate (handshake_only) lets no sessionless request through
            raise UserError("no MCP session: connect with a client that opens one (the initialize handshake)")
        session = self.sessions.get(sid)
        if session is None:
            session = self.sessions[sid] = HttpSession(api.Session(self.operator.images))
            while len(self.sessions) > MAX_SESSIONS:
                _, old = self.sessions.popitem(last=False)
                if old.lease is not None:
                    self.engines.release(old.lease)
        self.sessions.move_to_end(sid)
        return session

    async def _use(self, session: HttpSession, cls: type, settings: dict[str, Any], sampling: dict[str, Any],
                   extra: dict[str, Any]) -> None:
        lease = await self.engines.lease(cls, settings, sampling, extra)
        if session.lease is not None:
            self.engines.release(session.lease)
        session.lease, session.api.backend = lease, lease.backend

    async def init(self, ctx: Any, configs: Dict[str, Any], sampling: Dict[str, Any], extra: Dict[str, Any] | None,
                   backend: str) -> None:
        session = self._session(ctx)
        cls, settings = self.operator.admit(configs, backend)
        await self._use(session, cls, settings, dict(sampling or {}), dict(extra or {}))

    @contextlib.asynccontextmanager
    async def session(self, ctx: Any) -> AsyncIterator[api.Session]:
        from genrun.backend import backend_class

        session = self._session(ctx)
        if session.lease is None:  # no generation_init yet: the operator's settings
            op = self.operator
            await self._use(session, backend_class(op.backend), op.settings, op.sampling, op.extra)
        async with session.lease.turn:
            yield session.api

    async def shutdown(self, ctx: Any) -> None:
        session = self._session(ctx)
        if session.lease is not None and session.lease.backend.name == "vllm":
            async with session.lease.turn:
                self.engines.release(session.lease, free=True)
            session.lease = session.api.backend = None

    def close(self) -> None:
        for session in self.sessions.values():
            if session.lease is not None:
                session.lease.backend.close()
        self.engines.close()


# ---------------------------------------------------------------------------------------------
# The MCP server itself.


def build_server(gate: Any, start: Optional[Callable[[], Awaitable[None]]] = None, token: str | None = None,
                 url: str | None = None) -> Any:
    """The MCP server. start: builds the backend as the server starts (on stdio by then the
    SDK has pointed fd 1 at stderr, so an engine's processes, which inherit it, cannot write
    into the protocol). token: the bearer token every HTTP request must carry."""
    from mcp.server.mcpserver import Context, MCPServer

    @contextlib.asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[dict]:
        if start is not None:
            await as_tool(start())
        yield {}

    auth: dict[str, Any] = {}
    if token is not None:
        from mcp.server.auth.settings import AuthSettings

        auth = {"token_verifier": TokenCheck(token), "auth": AuthSettings(issuer_url=url, resource_server_url=None)}
    server = MCPServer("genrun", instructions=__doc__.split("\n\n")[1], version=version(), lifespan=lifespan,
                       log_level="WARNING", **auth)

    @server.tool(description=DESCRIPTIONS["generation_init"])
    async def generation_init(backend_configs: Dict[str, Any], sampling_params: Dict[str, Any], ctx: Context,
                              extra_params: Optional[Dict[str, Any]] = None, backend: str = "vllm") -> None:
        await as_tool(gate.init(ctx, backend_configs, sampling_params, extra_params, backend))

    @server.tool(description=DESCRIPTIONS["generate"])
    async def generate(prompt_ls: List[Union[str, Dict[str, Any]]], ctx: Context,
                       system_prompt: str = "") -> Answers:
        return await answered(gate, ctx, lambda s: s.generate(prompt_ls, system_prompt))

    @server.tool(description=DESCRIPTIONS["multimodal_generate"])
    async def multimodal_generate(multimodal_path: List[List[str]], prompt_ls: List[Union[str, Dict[str, Any]]],
                                  ctx: Context, system_prompt: str = "", image_tag: Optional[str] = None) -> Answers:
        return await answered(gate, ctx, lambda s: s.multimodal_generate(multimodal_path, prompt_ls, system_prompt,
                                                                         image_tag))

    @server.tool(description=DESCRIPTIONS["multiturn_generate"])
    async def multiturn_generate(messages: List[Dict[str, Any]], ctx: Context, system_prompt: str = "") -> Answers:
        return await answered(gate, ctx, lambda s: s.multiturn_generate(messages, system_prompt))

    @server.tool(description=DESCRIPTIONS["vllm_shutdown"])
    async def vllm_shutdown(ctx: Context) -> None:
        await as_tool(gate.shutdown(ctx))

    return server


class TokenCheck:
    """The SDK's TokenVerifier for one bearer token (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        if hmac.compare_digest(token.encode(), self.token.encode()):
            return AccessToken(token=token, client_id="genrun-serve", scopes=[])
        return None


async def answered(gate: Any, ctx: Any, call: Callable[[api.Session], Awaitable[list[str | None]]]) -> Answers:
    async def work() -> Answers:
        async with gate.session(ctx) as session:
            return {"ans_ls": await with_progress(ctx, lambda: call(session))}

    return await as_tool(work())


async def as_tool(work: Awaitable[T]) -> T:
    """A user's mistake (a bad argument, no generation_init yet) is a tool error of one line;
    the server goes on serving."""
    try:
        return await work
    except UserError as exc:
        raise tool_error(exc) from None


def tool_error(exc: UserError) -> Exception:
    from mcp.server.mcpserver.exceptions import ToolError

    return ToolError(one_line(str(exc)))


async def with_progress(ctx: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Run a generate call, sending the client a progress notification as each prompt is
    answered (when it asked for them). A client's cancellation cancels the call: no new
    batch starts, and vLLM and the openai backend abort what is in flight."""
    import anyio

    send, receive = anyio.create_memory_object_stream(math.inf)

    async def report() -> None:
        async with receive:
            async for done, total in receive:
                await ctx.report_progress(done, total, f"{done} of {total} answered")

    mistake: UserError | None = None
    hook = api.progress.set(lambda done, total: send.send_nowait((done, total)))
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(report)
            async with send:  # closed when the call ends, which ends report()
                try:
                    result = await call()
                except UserError as exc:  # raised outside the task group, or it comes as an exception group
                    mistake = exc
    finally:
        api.progress.reset(hook)
    if mistake is not None:
        raise tool_error(mistake) from None
    return result


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


# ---------------------------------------------------------------------------------------------
# The command.


def compose(overrides: list[str]) -> Any:
    """The config `genrun` would compose from these overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from genrun.config import conf_dir

    try:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise UserError(f"{' '.join(overrides)}: {str(exc).splitlines()[0]}") from None


def start_settings(overrides: list[str], always: bool = False) -> Optional[dict[str, Any]]:
    """generation_init's arguments from `genrun`-style overrides (backend=..., sampling...),
    composed as the CLI composes them, with the keys given on the command line; None without
    overrides (unless always)."""
    if not overrides and not always:
        return None
    from hydra.utils import get_class
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from genrun import credentials

    cfg = compose(overrides)
    try:
        settings = OmegaConf.to_container(cfg.backend, resolve=True, throw_on_missing=True)
        sampling = OmegaConf.to_container(cfg.sampling, resolve=True)
        extra = OmegaConf.to_container(cfg.extra, resolve=True)
    except OmegaConfBaseException as exc:
        raise UserError(f"{' '.join(overrides)}: {str(exc).splitlines()[0]}") from None
    name = get_class(settings.pop("_target_")).name
    settings.update(credentials.for_component("backend"))
    return {"backend_configs": {name: settings}, "backend": name, "sampling_params": sampling, "extra_params": extra}


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("genrun")


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def allowed_hosts(host: str, names: list[str]) -> list[str]:
    """The Host header values accepted: loopback, the address served on, and the names the
    operator gives (--allowed-host); each with any port."""
    hosts = [*LOOPBACK_NAMES, *(url_host(n) for n in names)]
    if host not in ("0.0.0.0", "::"):
        hosts.append(url_host(host))
    return list(dict.fromkeys(hosts))


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
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for genrun: backend=hf backend.KEY=VALUE ...")
    raw = sys.argv[1:] if argv is None else argv
    # stdout is the protocol on stdio: every log goes to stderr, vLLM's own logger included.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    credentials.guard_logs()
    try:
        args = parser.parse_args(credentials.hide(raw))
        import mcp  # noqa: F401 - the `serve` extra
    except ImportError:
        print("genrun-serve: error: it needs the MCP SDK: pip install 'genrun[serve]'", file=sys.stderr)
        sys.exit(2)
    except UserError as exc:
        print(f"genrun-serve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    gate: Any = None
    try:
        if args.http:
            gate, serve = prepare_http(args)
            serve()
        else:
            start = start_settings(args.overrides)
            gate = Stdio()
            starting = None
            if start is not None:
                async def starting() -> None:
                    await gate.init(None, start["backend_configs"], start["sampling_params"], start["extra_params"],
                                    start["backend"])
            build_server(gate, starting).run("stdio")
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


if __name__ == "__main__":
    main()
