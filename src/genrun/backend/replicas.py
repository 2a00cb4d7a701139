"""Several engines on one node, one run: `backend.data_parallel_size=N` (vllm, hf) starts N
copies of the backend, each in a process of its own (on its own group of `gpu_ids`), all fed
by genrun's one scheduler, so the run still has one journal and each row one record.

Each batch goes to the engine with the fewest batches in flight, so a slow engine takes
fewer. An engine that is lost (its process, or the engine inside it, died) has its batches
sent to the others, and is started again once; if it is lost again, the run goes on with
the rest, and says so. When none is left, the run stops as on a dead engine: resume finishes it.

May use genrun.backend.base and local_model (build.build is handed in: build.py starts
this); multiprocessing (spawn) and threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import multiprocessing
import signal
import threading
from typing import Any, Callable, Mapping

from genrun.backend.base import Backend, Completion, Failure, Prompt
from genrun.backend.local_model import parse_gpu_ids
from genrun.errors import UserError, one_line

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 1800.0  # a large model's start-up


class ReplicaLost(Exception):
    """The engine answering a call is gone: the call goes to another."""


class ReplicaFailed(Exception):
    """A call's failure inside an engine, as that engine's backend classified it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def replica_configs(config: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """One backend config per engine, each with its group of GPUs; None for one engine.
    The count is backend.data_parallel_size, or for vllm, gpu_ids over tensor_parallel_size."""
    count = config.get("data_parallel_size")
    ids = parse_gpu_ids(config.get("gpu_ids"))
    width = config.get("tensor_parallel_size")
    if count is None and ids and width and len(ids) > int(width):
        count = len(ids) // int(width)
    if count is None or int(count) == 1:
        return None
    count = int(count)
    if count < 1:
        raise UserError(f"backend.data_parallel_size must be at least 1, got {count}")
    if ids is not None and len(ids) % count:
        raise UserError(f"backend.gpu_ids has {len(ids)} GPUs, which {count} engines cannot share evenly; give "
                        "backend.data_parallel_size a divisor of it")
    size = len(ids) // count if ids is not None else 0
    base = {k: v for k, v in config.items() if k != "data_parallel_size"}
    return [{**base, "gpu_ids": ",".join(map(str, ids[i * size:(i + 1) * size])) if ids else None}
            for i in range(count)]


def serve(conn: Any, config: dict[str, Any], build: Callable[..., Backend], sampling: dict[str, Any],
          extra: dict[str, Any], seed: int | None) -> None:
    """An engine's process: build the backend (with build.build, handed in), say it is ready,
    then answer calls as they come (many at once), until told to close or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes the engines
    try:
        backend = build(config, sampling, extra, seed)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        conn.send(("failed", one_line(f"{exc}", 500)))
        return
    conn.send(("ready", {"describe": backend.describe(), "batch_size": backend.batch_size,
                         "concurrency": backend.concurrency, "scoring_rows": backend.scoring_rows}))
    asyncio.run(answer_calls(conn, backend))


async def answer_calls(conn: Any, backend: Backend) -> None:
    loop = asyncio.get_running_loop()
    calls: asyncio.Queue = asyncio.Queue()
    sending = threading.Lock()
    threading.Thread(target=lambda: _read(conn, loop, calls), daemon=True).start()

    async def one(number: int, method: str, args: tuple) -> None:
        try:
            reply = ("ok", await getattr(backend, method)(*args))
        except Exception as exc:  # noqa: BLE001 - classified here, where the backend is
            reply = ("failed", backend.classify(exc))
        with sending:
            conn.send((number, *reply))

    tasks = set()
    async with backend:
        while (call := await calls.get()) is not None:
            task = asyncio.create_task(one(*call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in tasks:
            task.cancel()
    backend.close()


def _read(conn: Any, loop: asyncio.AbstractEventLoop, calls: asyncio.Queue) -> None:
    try:
        while (message := conn.recv()) != "close":
            loop.call_soon_threadsafe(calls.put_nowait, message)
    except (EOFError, OSError):  # the parent is gone
        pass
    loop.call_soon_threadsafe(calls.put_nowait, None)


class Replica:
    """The parent's side of one engine process: its pipe, its calls in flight."""

    def __init__(self, number: int, config: dict[str, Any], run: tuple) -> None:
        context = multiprocessing.get_context("spawn")
        self.number, self.config, self.run_args = number, config, run
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, config, *run), daemon=False,
                                       name=f"genrun-engine-{number}")
        self.process.start()
        child.close()
        self.pending: dict[int, concurrent.futures.Future] = {}
        self.lock = threading.Lock()
        self.live = False
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> None:
        if not self.conn.poll(READY_TIMEOUT_S):
            raise UserError(f"engine {self.number} did not start within {READY_TIMEOUT_S:.0f}s")
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            raise UserError(f"engine {self.number} ended while it started (exit code "
                            f"{self.process.join(5) or self.process.exitcode}); its log above says why") from None
        if kind != "ready":
            raise UserError(f"engine {self.number} could not start: {payload}")
        self.info, self.live = payload, True

    def send(self, number: int, method: str, args: tuple) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:
            if not self.live:
                raise ReplicaLost(f"engine {self.number} is gone")
            self.pending[number] = future
            try:
                self.conn.send((number, method, args))
            except (OSError, ValueError) as exc:
                self.pending.pop(number, None)
                raise ReplicaLost(f"engine {self.number} is gone ({exc})") from exc
        return future

    def watch(self, lost: Callable[[Any, str], None]) -> None:
        """Hand each reply to its call, in a thread; lost(self, why) when the engine ends."""
        threading.Thread(target=self._read, args=(lost,), daemon=True).start()

    def _read(self, lost: Callable[[Any, str], None]) -> None:
        why = f"engine {self.number} ended"
        try:
            while True:
                number, kind, payload = self.conn.recv()
                future = self.pending.pop(number, None)
                if future is None or future.done():
                    continue
                if kind == "ok":
                    future.set_result(payload)
                elif payload.engine_dead:  # the engine inside the process died: the process is no use
                    why = f"engine {self.number} died ({payload.message})"
                    self.pending[number] = future
                    break
                else:
                    future.set_exception(ReplicaFailed(payload))
        except (EOFError, OSError):
            why += f" (exit code {self.process.exitcode})" if self.process.exitcode is not None else ""
        lost(self, why)

    def again(self) -> Replica:
        """A new process for this engine."""
        return Replica(self.number, self.config, self.run_args)

    def lost(self, why: str) -> None:
        """Every call in flight goes elsewhere; the process is ended."""
        with self.lock:
            self.live = False
            pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ReplicaLost(why))
        self.stop(timeout=0)

    def stop(self, timeout: float = 30) -> None:
        try:
            self.conn.send("close")
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            for child in descendants(self.process.pid):  # vLLM's EngineCore would outlive it
                child.kill()
            self.process.kill()
            self.process.join(5)


def descendants(pid: int | None) -> list[Any]:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - gone already, or no psutil: nothing to end
        return []


class Replicas(Backend):
    """N engines behind one backend (see the module's docstring)."""

    name = "data_parallel"  # not a backend of its own: its engines' backend names it

    def __init__(self, engine: type[Backend], configs: list[dict[str, Any]], sampling: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None, seed: int | None = None, *, build: Callable[..., Backend],
                 transport: Callable[[int, dict[str, Any], tuple], Any] | None = None) -> None:
        """build: build.build, which each engine runs on its config (handed in: build.py is
        what starts this). transport(number, config, run_args): one engine's handle; a process
        of this node's by default (Replica), a Ray actor with ray_replicas.RayReplica."""
        self.name = engine.name
        self.takes_text, self.takes_perplexity = engine.takes_text, engine.takes_perplexity
        self.run_args = (build, dict(sampling or {}), dict(extra or {}), seed)
        self.numbers = itertools.count()
        self.restarted: set[int] = set()
        self.starting: list[Any] = []  # engines being started again
        self.closing = False
        self.after_close: Callable[[], Any] | None = None  # e.g. leave the Ray instance
        self.replicas = [(transport or Replica)(i, config, self.run_args) for i, config in enumerate(configs)]
        try:
            for replica in self.replicas:
                replica.wait_ready()
        except BaseException:
            self.close()
            raise
        for replica in self.replicas:
            replica.watch(self._lost)
        first = self.replicas[0].info
        self.batch_size, self.per_engine = first["batch_size"], first["concurrency"]
        self.concurrency = self.per_engine * len(self.replicas)
        self.scoring_batches = max(1, first["scoring_rows"] // max(first["batch_size"], 1))
        self.answered = [0] * len(self.replicas)
        self.losses = [0] * len(self.replicas)
        log.info("%d engines started", len(self.replicas))

    def describe(self) -> dict[str, Any]:
        return {**self.replicas[0].info["describe"], "engines": len(self.replicas)}

    def by_part(self) -> dict[str, dict[str, dict[str, int]]] | None:
        return {"engines": {f"engine{r.number}": {"rows": self.answered[r.number], "lost": self.losses[r.number]}
                            for r in self.replicas}}

    def live_counts(self) -> dict[str, str]:
        return {f"engine{r.number}": f"{self.answered[r.number]}{'' if r.live else ' (lost)'}" for r in self.replicas}

    async def generate_batch(self, conversations: list[Prompt], seeds: list[int] | None = None) -> list[Completion]:
        return await self._call("generate_batch", (conversations, seeds) if seeds else (conversations,))

    async def loglikelihood_batch(self, rows: list[tuple[str, list[str]]]) -> list[Completion]:
        return await self._call("loglikelihood_batch", (rows,))

    async def loglikelihood_rolling_batch(self, texts: list[str]) -> list[Completion]:
        return await self._call("loglikelihood_rolling_batch", (texts,))

    async def _call(self, method: str, args: tuple) -> list[Completion]:
        """The call on the live engine with the fewest in flight; again on another when that
        engine is lost while it holds it."""
        while True:
            live = [r for r in self.replicas if r.live]
            if not live:
                raise ReplicaFailed(Failure("every engine is gone (see genrun.log); resume the run to finish it",
                                            engine_dead=True))
            replica = min(live, key=lambda r: len(r.pending))
            try:
                completions = await asyncio.wrap_future(replica.send(next(self.numbers), method, args))
            except ReplicaLost:  # said once, by _read
                continue
            self.answered[replica.number] += len(completions)
            return completions

    def _lost(self, replica: Any, why: str) -> None:
        with replica.lock:
            if not replica.live:  # closed on purpose, or said already
                return
            replica.live = False
        log.warning("%s; its rows go to the other engines", why)
        self.losses[replica.number] += 1
        replica.lost(why)
        self._restart(replica)

    def _restart(self, replica: Any) -> None:
        """A lost engine is started again once; a second loss leaves the run to the others."""
        if self.closing:
            return
        if replica.number in self.restarted:
            log.warning("engine %d was lost twice: the run goes on with %d engines", replica.number,
                        sum(r.live for r in self.replicas))
            return
        self.restarted.add(replica.number)
        log.warning("engine %d: starting it again", replica.number)

        def start() -> None:
            fresh = replica.again()
            self.starting.append(fresh)
            try:
                fresh.wait_ready()
            except UserError as exc:
                if not self.closing:
                    log.warning("engine %d could not start again (%s): the run goes on with the others",
                                replica.number, exc)
                fresh.stop(timeout=0)
                return
            finally:
                self.starting.remove(fresh)
            if self.closing:
                fresh.stop()
                return
            self.replicas[replica.number] = fresh
            fresh.watch(self._lost)
            log.warning("engine %d is back", replica.number)

        threading.Thread(target=start, daemon=True).start()

    def classify(self, exc: Exception) -> Failure:
        if isinstance(exc, ReplicaFailed):
            return exc.failure
        return super().classify(exc)

    def close(self) -> None:
        self.closing = True
        for replica in [*getattr(self, "replicas", []), *self.starting]:
            with replica.lock:
                replica.live = False
            replica.stop()
        if self.after_close is not None:
            after, self.after_close = self.after_close, None
            after()
