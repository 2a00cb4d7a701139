"""Any OpenAI-compatible server, through the official SDK's AsyncOpenAI: chat completions,
and for prompts as text (chat_template=false, mode=choice) the completions endpoint.

One request per row; the engine keeps `concurrency` of them in flight (per server, with
several base URLs: servers.py spreads them) and applies the retry policy, using classify()
below. The SDK's own retries are off so only that policy applies.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import time
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Mapping

from genrun import credentials
from genrun.backend import structured
from genrun.backend.base import Backend, Completion, Failure, Messages, Prompt, Scored, check_extra
from genrun.backend.openai_responses import (
    NoPromptLogprobs,
    ServerSaidError,
    count,
    error_message,
    prompt_logprobs_of,
    samples_of,
)
from genrun.backend.pacing import Pacer
from genrun.backend.sampling import check_sampling
from genrun.backend.servers import Server, Servers, base_urls, server_fault
from genrun.errors import UserError, one_line

# Sampling keys the chat-completions endpoint takes as parameters; any other sampling key
# (top_k, repetition_penalty, min_p, ...) goes into the request body, which vLLM and
# SGLang read.
CHAT_PARAMS = {
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "reasoning_effort", "response_format", "n",
}
RETRYABLE_STATUS = {408, 409, 429}
log = logging.getLogger(__name__)
NO_KEYS: Mapping[str, Any] = MappingProxyType({})  # an empty default that cannot be changed
AUTH_STATUS = {401, 403}


class OpenAIBackend(Backend):
    name = "openai"
    takes_batch_jobs = True
    takes_text = True
    operational = frozenset({"base_url", "api_key", "concurrency", "retries", "base_delay", "timeout", "rpm", "tpm",
                             "prices", "batch", "batch_poll_s", "set_aside_s"})

    def __init__(
        self,
        model_name: str,
        sampling: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        base_url: str | list[str] = "http://localhost:8000/v1",  # a list: several servers answer the run
        api_key: str | None = None,  # None: OPENAI_API_KEY, read here so no config ever holds it
        concurrency: int = 8,  # requests in flight, per server
        retries: int = 3,
        base_delay: float = 1.0,
        timeout: float = 600.0,  # seconds per request attempt
        send_chat_template_kwargs: bool = True,  # false for servers that reject unknown body fields
        extra_body: Mapping[str, Any] = NO_KEYS,  # more request-body keys
        rpm: float | None = None,  # requests per minute, paced evenly
        tpm: float | None = None,  # tokens per minute (estimated before a request, corrected after)
        prices: Mapping[str, float] = NO_KEYS,  # {input_per_1m: X, output_per_1m: Y}: metrics.json's cost
        seed: int | None = None,  # the run's seed; sent only when sampling.seed is set
        batch: bool = False,  # send the run as one Batch API job instead of request by request
        batch_poll_s: float = 30.0,  # seconds between looks at the batch's status
        set_aside_s: float = 5.0,  # a server that stopped answering waits this long (doubling) to be tried again
    ) -> None:
        if concurrency < 1:
            raise UserError(f"backend.concurrency must be at least 1, got {concurrency}")
        if retries < 0:
            raise UserError(f"backend.retries must be 0 or more, got {retries}")
        if batch_poll_s <= 0:
            raise UserError(f"backend.batch_poll_s must be a positive number of seconds, got {batch_poll_s}")
        if timeout <= 0:
            raise UserError(f"backend.timeout must be a positive number of seconds, got {timeout}")
        if set_aside_s <= 0:
            raise UserError(f"backend.set_aside_s must be a positive number of seconds, got {set_aside_s}")
        urls = base_urls(base_url)
        if batch and len(urls) > 1:
            raise UserError("backend.batch=true sends the run as one Batch job to one server; give backend.base_url "
                            "one URL, or set backend.batch=false")
        for key, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise UserError(f"backend.{key} must be a positive number per minute (or null for no limit), "
                                f"got {value}")
        chat_template_kwargs = check_extra(extra, self.name)
        sampling = check_sampling(sampling)
        self.params = {k: v for k, v in sampling.items() if k in CHAT_PARAMS}
        self.body = {k: v for k, v in sampling.items() if k not in CHAT_PARAMS}
        schema = structured.json_schema(sampling.get("structured_outputs"))
        if schema is not None:  # the standard field, which OpenAI and vLLM's server both read
            del self.body["structured_outputs"]
            self.params["response_format"] = {"type": "json_schema",
                                              "json_schema": {"name": "answer", "schema": schema}}
        # regex, choice and grammar stay in the body as `structured_outputs`, which vLLM's server reads
        if send_chat_template_kwargs and chat_template_kwargs:
            self.body["chat_template_kwargs"] = chat_template_kwargs
        self.body.update(extra_body)
        self.extra_body = dict(extra_body)  # what a log-likelihood request sends besides its own keys
        self.model_name = model_name
        self.shown_url = ", ".join(credentials.redact_url(u) for u in urls)
        # Local servers accept any key; the SDK insists on one.
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.servers = Servers(urls, concurrency, set_aside_s)
        self.concurrency, self.retries = concurrency * len(urls), retries
        self.base_delay, self.timeout = base_delay, timeout
        self.batch, self.batch_poll_s = batch, batch_poll_s
        self._said_no_n = False
        self.max_tokens = int(sampling.get("max_tokens") or sampling.get("max_completion_tokens") or 1024)
        self.pacer = Pacer(rpm, tpm, self.max_tokens * int(sampling.get("n", 1)))

    def describe(self) -> dict[str, Any]:
        shown = [s.shown for s in self.servers.all]
        return {"model": self.model_name, "base_url": shown[0] if len(shown) == 1 else shown}

    def by_part(self) -> dict[str, dict[str, dict[str, int]]] | None:
        return {"servers": self.servers.counts()} if len(self.servers) > 1 else None

    def live_counts(self) -> dict[str, str]:
        return self.servers.live() if len(self.servers) > 1 else {}

    def client(self) -> Any:
        """The first server's client (a Batch job's: backend.batch takes one base URL)."""
        return self._client_of(self.servers.all[0])

    def _client_of(self, server: Server) -> Any:
        """A server's AsyncOpenAI client, made on first use in the running event loop."""
        if server.client is None:
            from openai import AsyncOpenAI

            server.client = AsyncOpenAI(base_url=server.url, api_key=self.api_key, timeout=self.timeout,
                                        max_retries=0)
        return server.client

    async def generate_batch(self, conversations: list[Messages],  # type: ignore[override]  # chat messages only
                             seeds: list[int] | None = None) -> list[Completion]:
        return [await self._answer(messages, seeds[i] if seeds else None) for i, messages in enumerate(conversations)]

    async def _answer(self, messages: Messages, seed: int | None = None) -> Completion:
        params = self.params if seed is None else {**self.params, "seed": seed}
        samples = await self._request(messages, params)
        missing = self.params.get("n", 1) - len(samples)
        if missing > 0:  # a server that ignores `n`: the other samples one request each
            if not self._said_no_n:
                log.warning("%s returned %d of n=%d samples: asking for the rest one request each",
                            self.shown_url, len(samples), self.params["n"])
                self._said_no_n = True
            single = {k: v for k, v in params.items() if k != "n"}
            if seed is not None:  # each extra sample a seed of its own, still fixed by the row's
                requests = [self._request(messages, {**single, "seed": seed + i + 1}) for i in range(missing)]
            else:
                requests = [self._request(messages, single) for _ in range(missing)]
            for more in await asyncio.gather(*requests):
                samples += more
        return Completion.of_samples(samples[: self.params.get("n", 1)])

    async def _request(self, messages: Prompt, params: Mapping[str, Any]) -> list[Completion]:
        """One request's choices, in order, as completions (the usage's tokens on the first).
        Text goes to the completions endpoint, chat messages to chat completions."""
        # About 4 characters a token, plus the most the answers may take.
        estimate = len(json.dumps(messages)) // 4 + self.max_tokens * int(params.get("n", 1))
        body = self.body or None
        if isinstance(messages, str):
            response = await self._send(estimate, lambda client: client.completions.create(
                model=self.model_name, prompt=messages, extra_body=body, **params))
        else:
            response = await self._send(estimate, lambda client: client.chat.completions.create(
                model=self.model_name, messages=messages, extra_body=body, **params))
        samples = samples_of(response, text=isinstance(messages, str))  # first: another shape has no usage
        await self._succeeded(response, estimate)
        return samples

    async def _send(self, estimate: int, send: Callable[[Any], Awaitable[Any]]) -> Any:
        """One request in a server's concurrency window, paced, within the attempt's deadline.
        With several servers, a request the server failed through its own fault (see
        server_fault) is sent at once to another it has not tried; when it has tried them all,
        the last error is the scheduler's to retry."""
        import openai

        tried: set[Server] = set()
        while True:
            server = await self.servers.take(tried)
            assert server is not None  # tried is never all of them here
            sent = time.monotonic()
            try:
                await self.pacer.wait(estimate)
                # The deadline of the whole attempt, body included: the client's own timeout is
                # per read, so a server that trickles a byte a second would never time out.
                async with asyncio.timeout(self.timeout):
                    response = await send(self._client_of(server))
                self.servers.answered(server, sent)
                return response
            except Exception as exc:
                if isinstance(exc, openai.RateLimitError) and _retry_after(exc.response.headers) is None:
                    self.servers.overloaded(server)
                fault = server_fault(exc, self.timeout)
                if fault is None:
                    raise
                self.servers.failed(server, sent, *fault)
                tried.add(server)
                if len(tried) == len(self.servers):
                    raise
            finally:
                await self.servers.give_back(server)

    async def _succeeded(self, response: Any, estimate: int) -> None:
        await self.pacer.used(estimate, count(getattr(response.usage, "total_tokens", None)))

    async def loglikelihood_batch(self, rows: list[tuple[str, list[str]]]) -> list[Completion]:
        return [await self._loglikelihoods(context, continuations) for context, continuations in rows]

    async def _loglikelihoods(self, context: str, continuations: list[str]) -> Completion:
        """One request to the completions endpoint with the context alone and then context +
        each continuation as prompts, echoed with their log-probabilities (echo, logprobs=1,
        one token generated). The context's own token count cuts each whole prompt, as lm-eval
        splits a pair: encoded whole, the context's tokens off its front, trailing spaces of
        the context moved to the continuation. The server tokenizes, so no tokenizer is needed here."""
        kept = context.rstrip()
        if not kept:
            return Completion(error="an empty context is conditioned on the model's BOS token, which backend=openai "
                                    "cannot send; use backend=hf or vllm")
        moved = context[len(kept):]
        prompts = [kept, *(kept + moved + c for c in continuations)]
        estimate = sum(map(len, prompts)) // 4 + len(prompts)
        response = await self._send(estimate, lambda client: client.completions.create(
            model=self.model_name, prompt=prompts, max_tokens=1, temperature=0, logprobs=1, echo=True,
            extra_body=self.extra_body or None))
        echoed = prompt_logprobs_of(response, prompts, self.shown_url)
        await self._succeeded(response, estimate)
        context_tokens = len(echoed[0][0]) - 1  # less the one generated token
        if any(len(logprobs) < context_tokens + 2 for logprobs, _ in echoed[1:]):  # no continuation token left
            raise ServerSaidError("the server echoed fewer tokens for a context and its continuation than for the "
                                  "context alone")
        scored = []
        for logprobs, tops in echoed[1:]:
            span, top = logprobs[context_tokens:-1], tops[context_tokens:-1]
            # greedy as lm-eval reads it: each token's log-probability is the best one offered
            greedy = all(isinstance(t, dict) and t and lp >= max(t.values()) for lp, t in zip(span, top))
            scored.append(Scored(float(sum(span)), len(span), greedy))
        return Completion(loglikelihoods=scored, prompt_tokens=context_tokens)

    def request_body(self, messages: Prompt, seed: int | None = None) -> dict[str, Any]:
        """The JSON body _request sends for a row: what a Batch input file holds (genrun.engine.batch_files).
        Text (chat_template=false) is a completions body."""
        params = self.params if seed is None else {**self.params, "seed": seed}
        key = "prompt" if isinstance(messages, str) else "messages"
        return {"model": self.model_name, key: messages, **params, **self.body}

    def completion_of(self, body: Mapping[str, Any]) -> Completion:
        """A row's outcome from a chat-completion (or, for text, a completion) body read from a
        file (a Batch output line)."""
        from openai.types import Completion as TextCompletion
        from openai.types.chat import ChatCompletion

        try:
            if isinstance(body, Mapping) and body.get("object") == "text_completion":
                samples = samples_of(TextCompletion.model_validate(body), text=True)
            else:
                samples = samples_of(ChatCompletion.model_validate(body))
        except (ServerSaidError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            return Completion(error=one_line(str(exc), 300))
        wanted = self.params.get("n", 1)
        if len(samples) < wanted:
            return Completion(error=f"the answer holds {len(samples)} of n={wanted} samples")
        return Completion.of_samples(samples[:wanted])

    def classify(self, exc: Exception) -> Failure:
        import openai

        if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
            return Failure(f"timeout: no answer within {self.timeout:g}s", retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return Failure(self._redact(f"connection error: {type(cause).__name__}: {cause}"), retryable=True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = self._redact(f"HTTP {status}: {error_message(exc)}")
            if status in AUTH_STATUS:
                return Failure(
                    f"{self.shown_url} rejected the API key ({message}); set OPENAI_API_KEY "
                    "or backend.api_key", no_row_can_succeed=True,
                )
            if status == 404:  # a wrong model name or base_url: every request would fail the same way
                return Failure(f"{message} (check backend.model_name={self.model_name!r} and "
                               f"backend.base_url={self.shown_url!r})", no_row_can_succeed=True)
            retryable = status in RETRYABLE_STATUS or status >= 500
            return Failure(message, retryable=retryable, retry_after=_retry_after(exc.response.headers))
        if isinstance(exc, ServerSaidError):
            return Failure(self._redact(str(exc)), retryable=True)
        if isinstance(exc, NoPromptLogprobs):
            return Failure(self._redact(str(exc)), no_row_can_succeed=True)
        if isinstance(exc, ValueError):  # json.JSONDecodeError: a 200 whose body is not JSON
            return Failure(self._redact(f"the server's answer is not valid JSON ({exc})"), retryable=True)
        return Failure(self._redact(f"{type(exc).__name__}: {exc}"))

    def _redact(self, text: str) -> str:
        """No key, and no credentials inside the URL, in an error message."""
        keys = [self.api_key] if len(self.api_key) >= 4 else []
        return credentials.redact(one_line(text), [*keys, *credentials.known_values()])

    async def aclose(self) -> None:
        # The client belongs to the event loop it was used in: close it there.
        self.pacer.reset()
        for client in self.servers.reset():
            await client.close()


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), if the server sent one."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(when.timestamp() - time.time(), 0.0) if when else None
