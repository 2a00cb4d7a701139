"""Several engines on one node, one run: `backend.data_parallel_size=N` (vllm, hf) starts N
copies of the backend, each in a process of its own (on its own group of `gpu_ids`), all fed
by genrun's one scheduler, so the run still has one journal and each row one record.

Each batch goes to the engine with the fewest batches in flight, so a slow engine takes
fewer. An engine that is lost (its process, or the engine inside it, died) has its batches
sent to the others, and is started again once; if it is lost again, the run goes on with
the rest, and says so. When none is left, the run stops as on a dead engine: resume finishes it.

The engines' own side is in engine_processes.py (processes of this node) and ray_replicas.py
(Ray actors). May use genrun.backend.base and local_model (build.build is handed in: build.py
starts this) and threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from typing import Any, Callable, Mapping

from genrun.backend.base import Backend, Completion, Failure, Prompt
from genrun.backend.local_model import parse_gpu_ids
from genrun.errors import UserError

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


class Handle:
    """What the pool holds of one engine, wherever it runs: its calls in flight, by number."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.pending: dict[int, concurrent.futures.Future] = {}
        self.lock = threading.Lock()
        self.live = False
        self.info: dict[str, Any] = {}  # from the engine once it is ready

    def register(self, number: int) -> concurrent.futures.Future:
        """A call's future, held until its reply; ReplicaLost when the engine is gone."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:
            if not self.live:
                raise ReplicaLost(f"engine {self.number} is gone")
            self.pending[number] = future
        return future

    # What a transport gives: each of these is its own (engine_processes.Replica, ray_replicas.RayReplica).
    def wait_ready(self) -> None:
        raise NotImplementedError

    def watch(self, lost: Callable[[Any, str], None]) -> None:
        raise NotImplementedError

    def send(self, number: int, method: str, args: tuple) -> concurrent.futures.Future:
        raise NotImplementedError

    def lost(self, why: str) -> None:
        """Every call in flight goes elsewhere (ReplicaLost)."""
        with self.lock:
            self.live = False
            pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ReplicaLost(why))


class Replicas(Backend):
    """N engines behind one backend (see the module's docstring)."""

    name = "data_parallel"  # not a backend of its own: its engines' backend names it

    def __init__(self, engine: type[Backend], configs: list[dict[str, Any]], sampling: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None, seed: int | None = None, *, build: Callable[..., Backend],
                 transport: Callable[[int, dict[str, Any], tuple], Handle]) -> None:
        """build: build.build, which each engine runs on its config (handed in: build.py is
        what starts this). transport(number, config, run_args): one engine's Handle, a process
        of this node's (engine_processes.Replica) or a Ray actor (ray_replicas.RayReplica)."""
        self.name = engine.name
        # the pool answers as its engines do: these are each pool's own
        self.takes_text, self.takes_perplexity = engine.takes_text, engine.takes_perplexity  # type: ignore[misc]
        self.run_args = (build, dict(sampling or {}), dict(extra or {}), seed)
        self.numbers = itertools.count()
        self.restarted: set[int] = set()
        self.starting: list[Any] = []  # engines being started again
        self.closing = False
        self.after_close: Callable[[], Any] | None = None  # e.g. leave the Ray instance
        self.replicas = [transport(i, config, self.run_args) for i, config in enumerate(configs)]
        try:
            for replica in self.replicas:
                replica.wait_ready()
        except BaseException:
            self.close()
            raise
        for replica in self.replicas:
            replica.watch(self._lost)
        first = self.replicas[0].info
        self.batch_size, self.concurrency = first["batch_size"], first["concurrency"] * len(self.replicas)
        self.scoring_batches = max(1, first["scoring_rows"] // max(first["batch_size"], 1))  # type: ignore[misc]
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
