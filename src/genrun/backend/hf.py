"""Hugging Face transformers: AutoModelForCausalLM + tokenizer, batched, on CPU or GPUs."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from typing import Any, Mapping

from genrun.backend import loglikelihood
from genrun.backend.base import (
    Backend,
    Completion,
    Messages,
    Prompt,
    check_extra,
    drop_none,
    split_known,
    template_hash,
)
from genrun.backend.local_model import (
    chat_template_text,
    check_model_path,
    device_kwargs,
    gguf_file,
    load_image,
    only_these_gpus,
)
from genrun.backend.sampling import check_sampling
from genrun.errors import RowError, UserError, one_line

log = logging.getLogger(__name__)

SAMPLING_KEYS = {
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "min_tokens",
    "seed", "stop", "repetition_penalty", "structured_outputs", "n",
}


def generate_kwargs(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """Map genrun's (vLLM/OpenAI-style) sampling keys to transformers' generate() arguments."""
    s = check_sampling(sampling)
    split_known(s, SAMPLING_KEYS, "sampling", "hf")
    kwargs: dict[str, Any] = {"max_new_tokens": int(s.get("max_tokens", 2048))}
    if s.get("temperature", 1.0) == 0:
        # Greedy. The unused sampling knobs are cleared so the model's generation_config
        # cannot switch sampling back on or warn about them.
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=float(s.get("temperature", 1.0)))
        kwargs["top_p"] = float(s.get("top_p", 1.0))
        top_k = int(s.get("top_k", 0))
        kwargs["top_k"] = top_k if top_k > 0 else None  # vLLM's "off" is 0 or -1
        if "min_p" in s:
            kwargs["min_p"] = float(s["min_p"])
    if "repetition_penalty" in s:
        kwargs["repetition_penalty"] = float(s["repetition_penalty"])
    if "min_tokens" in s:
        kwargs["min_new_tokens"] = int(s["min_tokens"])
    if "stop" in s:
        kwargs["stop_strings"] = [s["stop"]] if isinstance(s["stop"], str) else list(s["stop"])
    return kwargs


class HFBackend(Backend):
    name = "hf"
    takes_text = True
    takes_perplexity = True
    scoring_batches = 16  # pairs sorted over 16 batches of rows pad less (calls of 64 rows: half the time of 8)
    operational = frozenset({"gpu_ids", "batch_size", "data_parallel_size", "ray_address", "ray_gpus_per_engine"})
    replicable = True
    _owns_model = True  # False for a view of another's model (reconfigured)

    def __init__(
        self,
        model_name_or_path: str,
        sampling: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        gpu_ids: str | int | None = None,
        trust_remote_code: bool = True,
        batch_size: int = 8,
        dtype: str = "auto",
        seed: int | None = 0,
        max_length: int | None = None,
        chat_template: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"backend.batch_size must be at least 1, got {batch_size}")
        if max_length is not None and max_length < 2:
            raise UserError(f"backend.max_length must be at least 2 tokens, got {max_length}")
        # mode=choice and perplexity: the most tokens scored in one pass (lm-eval's max_length)
        self.max_length = max_length
        self._use(sampling, extra, batch_size)
        self.model_path = model_name_or_path
        seed = drop_none(sampling).get("seed", seed)
        gpu_ids = only_these_gpus(gpu_ids)

        import torch
        import transformers

        check_model_path(model_name_or_path)
        transformers.utils.logging.disable_progress_bar()
        if seed is not None:
            transformers.set_seed(int(seed))
        load: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        source = model_name_or_path
        gguf = gguf_file(model_name_or_path)
        if gguf is not None:  # transformers reads GGUF itself (dequantized)
            source, load["gguf_file"] = str(gguf.parent), gguf.name
        try:
            config = transformers.AutoConfig.from_pretrained(source, **load)
            # An image-text-to-text model (it has a vision tower) takes images through its processor.
            self.vision = getattr(config, "vision_config", None) is not None
            if self.vision:
                self.processor = transformers.AutoProcessor.from_pretrained(source, **load)
                self.tokenizer = self.processor.tokenizer
                self.tokenizer.padding_side = "left"
                model_class = transformers.AutoModelForImageTextToText
            else:
                self.processor = None
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, padding_side="left", **load)
                model_class = transformers.AutoModelForCausalLM  # type: ignore[assignment]
            self.model = model_class.from_pretrained(
                source,
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                **device_kwargs(gpu_ids),
                **load,
            ).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"backend.model_name_or_path={model_name_or_path!r} could not be loaded: {first}") from exc
        template = chat_template_text(chat_template)
        if template is not None:  # in place of the tokenizer's own (run.json's chat_template_sha256 says which)
            (self.processor or self.tokenizer).chat_template = template
            self.tokenizer.chat_template = template
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self._grammar_for(sampling)

    def _use(self, sampling: Mapping[str, Any] | None, extra: Mapping[str, Any] | None, batch_size: int) -> None:
        """The settings that shape answers, not the model: sampling and the chat template's."""
        self.chat_template_kwargs = check_extra(extra, self.name)
        self.generate_kwargs = generate_kwargs(sampling or {})
        # sampling.n sequences a prompt: the batch holds batch_size sequences, so memory stays put
        self.n = int(check_sampling(sampling).get("n", 1))
        self._said_batch_seeds = False
        self.configured_batch_size = batch_size
        self.batch_size = max(1, batch_size // self.n)
        if self.n > 1 and self.batch_size * self.n != batch_size:
            log.info("hf: %d prompts a batch, %d samples each (backend.batch_size=%d)", self.batch_size, self.n,
                     batch_size)

    def _grammar_for(self, sampling: Mapping[str, Any] | None) -> None:
        constraint = check_sampling(sampling).get("structured_outputs")
        self.grammar = compile_grammar(constraint, self.tokenizer, self.model.config) if constraint else None

    def reconfigured(self, sampling: Mapping[str, Any] | None, extra: Mapping[str, Any] | None) -> HFBackend:
        """The same model with other sampling and chat-template settings (genrun-serve's
        sessions): it shares the weights; closing it leaves them loaded."""
        view = copy.copy(self)
        view._use(sampling, extra, self.configured_batch_size)
        view._grammar_for(sampling)
        view._owns_model = False
        return view

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_path, "chat_template_sha256": template_hash(self.tokenizer.chat_template)}

    async def generate_batch(self, conversations: list[Prompt],
                             seeds: list[int] | None = None) -> list[Completion]:
        # generate() runs on the event loop's own thread. hf has one batch in flight, so a
        # worker thread overlapped nothing worth having (records are written between batches
        # either way), and torch ran 3-5% slower per token from one (SmolLM2-135M, batch 1:
        # 8.9 vs 8.6 s for 6 rows). Ctrl-C now also stops generate() at once. Other tasks get
        # their turn first.
        await asyncio.sleep(0)
        if seeds is not None:
            # transformers samples a whole batch from one generator: a row's samples are its own
            # only when it is alone in its batch (backend.batch_size=1)
            if len(conversations) > 1 and not self._said_batch_seeds:
                log.warning("hf: per-row seeds hold only with backend.batch_size=1; with %d rows a batch, "
                            "a row's samples depend on its batch", self.batch_size)
                self._said_batch_seeds = True
            import transformers

            transformers.set_seed(seeds[0])
        return self._generate(conversations)

    def _generate(self, conversations: list[Prompt]) -> list[Completion]:
        import torch

        completions: list[Completion | None] = [None] * len(conversations)
        rows: list[int] = []
        texts: list[str] = []
        images: list[Any] = []
        as_text = isinstance(conversations[0], str)  # chat_template=false: one setting for the whole run
        for i, conversation in enumerate(conversations):
            if isinstance(conversation, str):
                rows.append(i)
                texts.append(conversation)
                images.append([])
                continue
            try:
                messages, row_images = self._template_input(conversation)
                template = self.processor or self.tokenizer
                texts.append(template.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
                ))
            except RowError as exc:  # e.g. an image that cannot be fetched: only this row fails
                completions[i] = Completion(error=str(exc))
                continue
            rows.append(i)
            images.append(row_images)
        if not rows:
            return completions  # type: ignore[return-value]
        # The chat template already holds any BOS token the model wants; text gets the
        # tokenizer's own special tokens, as lm-eval encodes it.
        if self.vision:
            batch = self.processor(text=texts, images=images if any(images) else None, padding=True,
                                   return_tensors="pt", add_special_tokens=as_text)
        else:
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=as_text)
        batch = batch.to(self.model.device)
        extra: dict[str, Any] = {"tokenizer": self.tokenizer} if "stop_strings" in self.generate_kwargs else {}
        if self.grammar is not None:  # xgrammar's processor holds one generate() call's state
            from xgrammar.contrib.hf import LogitsProcessor

            extra["logits_processor"] = [LogitsProcessor(self.grammar)]
        # Greedy decoding gives n equal samples: generated once, repeated.
        sampled = self.n if self.generate_kwargs.get("do_sample") else 1
        if sampled > 1:
            extra["num_return_sequences"] = sampled
        with torch.inference_mode():
            output = self.model.generate(**batch, **self.generate_kwargs, **extra, use_cache=True)
        # Every row is left-padded to the same width, so new tokens start at that width for all;
        # a prompt's samples are consecutive rows of the output.
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
        for j, (i, length) in enumerate(zip(rows, prompt_lengths)):
            samples = [self._completion(tokens, length) for tokens in new_tokens[j * sampled:(j + 1) * sampled]]
            completions[i] = Completion.of_samples(samples * (self.n // sampled))
            completions[i].prompt_text = texts[j]  # type: ignore[union-attr]
        return completions  # type: ignore[return-value]

    async def loglikelihood_batch(self, rows: list[tuple[str, list[str]]]) -> list[Completion]:
        await asyncio.sleep(0)
        encode, prefix = self.tokenizer.encode, loglikelihood.prefix_token(self.tokenizer)
        pairs = [loglikelihood.encode_pair(encode, context, c, prefix) for context, continuations in rows
                 for c in continuations]
        return loglikelihood.per_row(self._scores(pairs), [len(c) for _, c in rows],
                                     [len(encode(context)) for context, _ in rows])

    async def loglikelihood_rolling_batch(self, texts: list[str]) -> list[Completion]:
        await asyncio.sleep(0)
        prefix = loglikelihood.prefix_token(self.tokenizer)
        encoded = [self.tokenizer.encode(text) for text in texts]
        windows = [loglikelihood.rolling_windows(tokens, prefix, self._max_length()) for tokens in encoded]
        return loglikelihood.per_row(self._scores([w for row in windows for w in row]), [len(w) for w in windows],
                                     [len(tokens) for tokens in encoded], summed=True)

    def _max_length(self) -> int:
        return int(self.max_length or getattr(self.model.config, "max_position_embeddings", None)
                   or self.tokenizer.model_max_length)

    def _scores(self, pairs: list[tuple[list[int], list[int]]]) -> list[Any]:
        return loglikelihood.hf_scores(self.model, pairs, self._max_length(), self.configured_batch_size)

    def _template_input(self, conversation: Messages) -> tuple[Messages, list[Any]]:
        """Messages for the chat template ({"type": "image"} parts) and the row's PIL images, in order."""
        messages, images = [], []
        for message in conversation:
            content = message["content"]
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image_url":
                        if not self.vision:
                            raise RowError(f"{self.model_path} is a text-only model: it takes no images")
                        images.append(load_image(part["image_url"]["url"]))
                        parts.append({"type": "image"})
                    else:
                        parts.append(part)
                content = parts
            messages.append({**message, "content": content})
        return messages, images

    def _completion(self, tokens: list[int], prompt_tokens: int) -> Completion:
        count, finish = 0, "length"
        for token in tokens:
            if token in self.eos_ids:
                count, finish = count + 1, "stop"
                break
            if token == self.tokenizer.pad_token_id:
                finish = "stop"  # a stop string ended this row; the rest is padding
                break
            count += 1
        answer = self.tokenizer.decode(tokens[:count], skip_special_tokens=True)
        for stop in self.generate_kwargs.get("stop_strings", []):
            answer = answer.split(stop, 1)[0]  # like vLLM and OpenAI: the stop string is not returned
        return Completion(answer=answer, finish_reason=finish, prompt_tokens=int(prompt_tokens),
                          completion_tokens=count)

    def close(self) -> None:
        if getattr(self, "model", None) is None or not self._owns_model:
            self.model = None
            return
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def compile_grammar(constraint: Mapping[str, Any], tokenizer: Any, config: Any) -> Any:
    """sampling.structured_outputs as an xgrammar grammar for this tokenizer (compiled once)."""
    try:
        import xgrammar
    except ImportError:
        raise UserError("sampling.structured_outputs on backend=hf needs xgrammar (pip install xgrammar); "
                        "backend=vllm and backend=openai (on vLLM's server) take it as they are") from None
    text_config = getattr(config, "text_config", None)
    vocab_size = getattr(config, "vocab_size", None) or getattr(text_config, "vocab_size", None)
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size))
    kind, spec = next(iter(constraint.items()))
    try:
        if kind == "json":
            return compiler.compile_json_schema(json.dumps(spec))
        if kind == "choice":
            return compiler.compile_regex("|".join(re.escape(c) for c in spec))
        if kind == "regex":
            return compiler.compile_regex(spec)
        return compiler.compile_grammar(spec)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"sampling.structured_outputs.{kind} could not be compiled: {one_line(exc, 300)}") from None
