"""Where each tool call goes: the one session of stdio (genrun.api, as the Python API has it),
or the caller's own HTTP session; and the engines HTTP sessions share."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
from typing import Any, AsyncIterator, Dict

from genrun import api
from genrun.backend.base import Backend
from genrun.backend.build import build, config_of
from genrun.errors import UserError
from genrun.serve.policy import Operator

MAX_SESSIONS = 1024  # HTTP sessions remembered; the least recently used is forgotten first


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
    def key(cls: type[Backend], settings: dict[str, Any]) -> str:
        return json.dumps([cls.name, settings], sort_keys=True, default=str)

    def build(self, cls: type, settings: dict[str, Any], sampling: dict[str, Any], extra: dict[str, Any]) -> Any:
        """Build a backend (blocking: a model loads); an engine is kept for the sessions to share."""
        backend = build(config_of(cls, settings), sampling, extra)
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



def request_headers(ctx: Any) -> Any:
    """The HTTP request's headers of a tool call (None on stdio), on either SDK major."""
    request = getattr(getattr(ctx, "request_context", None), "request", None)
    return getattr(request, "headers", None)


class Stdio:
    """The local user's one session: genrun.api as the Python API has it."""

    def __init__(self, conventions: api.Conventions | None = None) -> None:
        import anyio

        self.turn = anyio.Lock()  # one backend, one call on it at a time
        if conventions is not None:
            api.current().conventions = conventions

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
        sid = (request_headers(ctx) or {}).get("mcp-session-id")
        if not sid:  # the handshake-only gate (handshake_only) lets no sessionless request through
            raise UserError("no MCP session: connect with a client that opens one (the initialize handshake)")
        session = self.sessions.get(sid)
        if session is None:
            session = self.sessions[sid] = HttpSession(api.Session(self.operator.images, self.operator.conventions))
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
        assert session.lease is not None  # _use gave it one
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
