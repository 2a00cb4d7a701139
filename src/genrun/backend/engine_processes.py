"""Engines as processes of this node, for replicas.Replicas: each one spawned, building the
backend on its own config (its group of gpu_ids), and answering calls through a pipe, many at
once. Ctrl-C is the parent's: it closes the engines.

May use genrun.backend.base and replicas; multiprocessing (spawn) and threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import signal
import threading
from typing import Any, Callable

from genrun.backend.base import Backend
from genrun.backend.replicas import READY_TIMEOUT_S, Handle, ReplicaFailed, ReplicaLost
from genrun.errors import UserError, one_line


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


class Replica(Handle):
    """The parent's side of one engine process: its pipe, its calls in flight."""

    def __init__(self, number: int, config: dict[str, Any], run: tuple) -> None:
        super().__init__(number)
        context = multiprocessing.get_context("spawn")
        self.config, self.run_args = config, run
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, config, *run), daemon=False,
                                       name=f"genrun-engine-{number}")
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        if not self.conn.poll(READY_TIMEOUT_S):
            raise UserError(f"engine {self.number} did not start within {READY_TIMEOUT_S:.0f}s")
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise UserError(f"engine {self.number} ended while it started (exit code {self.process.exitcode}); "
                            "its log above says why") from None
        if kind != "ready":
            raise UserError(f"engine {self.number} could not start: {payload}")
        self.info, self.live = payload, True

    def send(self, number: int, method: str, args: tuple) -> concurrent.futures.Future:
        future = self.register(number)
        try:
            with self.lock:
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
                    future.set_exception(ReplicaLost(why))
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
        super().lost(why)
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
