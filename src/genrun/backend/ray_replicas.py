"""Engines as Ray actors, for a run across the nodes of a Ray cluster: `+backend.ray_address=...`
(`local` starts a Ray instance on this machine). The driver (this process) holds the journal
and genrun's scheduler; each actor builds the backend (vllm, hf) on the GPUs Ray gives it.
Placement, restarting a lost actor (`max_restarts=1`) and losing a node are Ray's; a call
that was on a lost actor goes to another (replicas.Replicas), and the actor takes calls again
once Ray has restarted it.

May use ray (the `ray` extra) and genrun.backend.replicas; build.build is handed in.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any, Callable, Mapping

from genrun.backend.base import Backend
from genrun.backend.replicas import READY_TIMEOUT_S, Handle, ReplicaFailed, ReplicaLost, Replicas
from genrun.errors import UserError, one_line

log = logging.getLogger(__name__)

RAY_KEYS = ("ray_address", "ray_gpus_per_engine")


class EngineActor:
    """One engine, in a Ray actor's process (async: many calls at once)."""

    def __init__(self, config: dict[str, Any], build: Callable[..., Backend], sampling: dict[str, Any],
                 extra: dict[str, Any], seed: int | None) -> None:
        self.backend = build(config, sampling, extra, seed)

    def ready(self) -> dict[str, Any]:
        backend = self.backend
        return {"describe": backend.describe(), "batch_size": backend.batch_size, "concurrency": backend.concurrency,
                "scoring_rows": backend.scoring_rows}

    async def call(self, method: str, args: tuple) -> tuple[str, Any]:
        try:
            return "ok", await getattr(self.backend, method)(*args)
        except Exception as exc:  # noqa: BLE001 - classified here, where the backend is
            return "failed", self.backend.classify(exc)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"backend.ray_address needs Ray ({exc}): pip install 'genrun[ray]'") from exc
    return ray


def on_ray(engine: type[Backend], config: Mapping[str, Any], sampling: Mapping[str, Any] | None,
           extra: Mapping[str, Any] | None, seed: int | None, build: Callable[..., Backend]) -> Replicas:
    """backend.data_parallel_size engines (1 by default) as actors on the Ray cluster at
    backend.ray_address, each with backend.ray_gpus_per_engine GPUs (by default the
    tensor_parallel_size, or 1, when the cluster has GPUs; none otherwise)."""
    ray = import_ray()
    address = str(config["ray_address"])
    ours = not ray.is_initialized()  # a Ray instance this run connected to (or started): its to leave
    if ours:
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"backend.ray_address={address!r}: no Ray cluster there ({one_line(exc, 200)}); "
                            "start one (ray start --head) or use ray_address=local") from exc
    gpus = config.get("ray_gpus_per_engine")
    if gpus is None:
        gpus = int(config.get("tensor_parallel_size") or 1) if ray.cluster_resources().get("GPU") else 0
    count = int(config.get("data_parallel_size") or 1)
    if count < 1:
        raise UserError(f"backend.data_parallel_size must be at least 1, got {count}")
    # Ray gives each actor its GPUs (CUDA_VISIBLE_DEVICES): gpu_ids are this machine's, not the cluster's
    engine_config = {k: v for k, v in config.items() if k not in (*RAY_KEYS, "data_parallel_size", "gpu_ids")}
    actor = ray.remote(num_gpus=gpus, max_restarts=1, max_task_retries=0, max_concurrency=1000)(EngineActor)
    log.info("%d engines on the Ray cluster at %s, %s GPUs each", count, address, gpus)
    try:
        engines = Replicas(engine, [engine_config] * count, sampling, extra, seed, build=build,
                           transport=lambda number, cfg, run: RayReplica(number, actor.remote(cfg, *run), ray))
    except BaseException:
        if ours:
            ray.shutdown()
        raise
    if ours:
        engines.after_close = ray.shutdown
    return engines


class RayReplica(Handle):
    """The driver's side of one engine actor: its calls in flight (see replicas.Replica)."""

    def __init__(self, number: int, actor: Any, ray: Any) -> None:
        super().__init__(number)
        self.actor, self.ray = actor, ray
        self.lost_to: Callable[[Any, str], None] = lambda replica, why: None

    def wait_ready(self) -> None:
        """Until the actor is built (or, after a loss, until Ray has built it again: while it
        restarts, Ray says it is unavailable)."""
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                self.info = self.ray.get(self.actor.ready.remote(), timeout=max(deadline - time.monotonic(), 1))
                break
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise UserError(f"engine {self.number} did not come back on Ray within "
                                    f"{READY_TIMEOUT_S:.0f}s") from None
                time.sleep(0.5)
            except Exception as exc:  # noqa: BLE001 - RayActorError (gone for good), a timeout, the build's error
                raise UserError(f"engine {self.number} could not start on Ray: {one_line(exc, 300)}") from None
        self.live = True

    def watch(self, lost: Callable[[Any, str], None]) -> None:
        self.lost_to = lost  # called from the reply of a call the actor did not answer

    def send(self, number: int, method: str, args: tuple) -> concurrent.futures.Future:
        future = self.register(number)
        reply = self.actor.call.remote(method, args).future()
        reply.add_done_callback(lambda done: self._replied(number, done))
        return future

    def _replied(self, number: int, done: concurrent.futures.Future) -> None:
        future = self.pending.pop(number, None)
        if future is None or future.done():
            return
        try:
            kind, payload = done.result()
        except Exception as exc:  # noqa: BLE001 - the actor or its node is gone (RayActorError)
            # this call's future is failed here, not left for lost(): replies come on Ray's
            # threads, and one that came after lost() swapped the calls out would never be answered
            why = f"engine {self.number} was lost ({type(exc).__name__})"
            future.set_exception(ReplicaLost(why))
            self.lost_to(self, why)
            return
        if kind == "ok":
            future.set_result(payload)
        elif payload.engine_dead:  # the engine inside the actor died: Ray starts the actor again
            why = f"engine {self.number} died ({payload.message})"
            future.set_exception(ReplicaLost(why))
            self.ray.kill(self.actor, no_restart=False)
            self.lost_to(self, why)
        else:
            future.set_exception(ReplicaFailed(payload))

    def again(self) -> RayReplica:
        """The same actor, which Ray restarts (max_restarts): wait_ready waits for it."""
        return RayReplica(self.number, self.actor, self.ray)

    def stop(self, timeout: float = 30) -> None:
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - gone already
            pass
