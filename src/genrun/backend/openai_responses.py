"""What an OpenAI-compatible server's 200 answers hold, read without trusting them: the SDK
builds its models from the body without checking it, so a chat completion, a completion or
echoed prompt log-probabilities of another shape is a ServerSaidError (retried like a 5xx),
never an answer. The openai backend's request side is in openai.py.

May use: genrun.backend.base, genrun.errors.
"""

from __future__ import annotations

from typing import Any

from genrun.backend.base import Completion
from genrun.errors import one_line


def samples_of(response: Any, text: bool = False) -> list[Completion]:
    """A chat completion's choices (text: a completion's), in order, as completions (the
    usage's tokens on the first). A 200 of another shape (an HTML page, content that is not
    text) is a ServerSaidError, never an answer: the SDK builds its models from the body
    without checking it."""
    if not hasattr(response, "choices"):  # a body that is not JSON comes back as text
        kind = "completion" if text else "chat completion"
        raise ServerSaidError(f"the server's 200 answer is not a {kind}: {one_line(response, 80)!r}")
    extras = getattr(response, "model_extra", None) or {}
    if extras.get("error"):  # a 200 that carries an error (some proxies and servers do this)
        raise ServerSaidError(f"the server answered 200 with an error: {_message_of(extras['error'])}")
    choices = response.choices
    if not choices:
        raise ServerSaidError("the server answered 200 with no choices")
    if text:
        return text_samples_of(response)
    if not isinstance(choices, list) or not all(hasattr(c, "message") and hasattr(c.message, "content")
                                                for c in choices):
        raise ServerSaidError("the server's 200 answer is not a chat completion: its choices hold no messages")
    usage = response.usage
    samples = []
    for position, choice in enumerate(ordered(choices)):
        message = choice.message
        if message.content is not None and not isinstance(message.content, str):
            raise ServerSaidError(f"the server's answer has content of type {type(message.content).__name__}, "
                                  "not text")
        extras = getattr(message, "model_extra", None) or {}
        reasoning = extras.get("reasoning_content") or extras.get("reasoning")
        completion = Completion(
            answer=message.content,
            finish_reason=choice.finish_reason if isinstance(choice.finish_reason, str) else None,
            prompt_tokens=count(getattr(usage, "prompt_tokens", None)),
            completion_tokens=count(getattr(usage, "completion_tokens", None)) if position == 0 else 0,
            reasoning=reasoning if isinstance(reasoning, str) else None,
        )
        if message.content is None:  # e.g. the reasoning used up max_tokens: no answer to score
            hint = "; raise sampling.max_tokens" if choice.finish_reason == "length" else ""
            completion.error = f"the server's answer has no content (finish_reason={choice.finish_reason}{hint})"
        samples.append(completion)
    return samples


def ordered(choices: list[Any]) -> list[Any]:
    return sorted(choices, key=lambda c: c.index if isinstance(c.index, int) else 0)


def text_samples_of(response: Any) -> list[Completion]:
    """A completion's choices (the completions endpoint: each choice's `text`) as completions."""
    choices = response.choices
    if not isinstance(choices, list) or not all(hasattr(c, "text") for c in choices):
        raise ServerSaidError("the server's 200 answer is not a completion: its choices hold no text")
    usage = response.usage
    samples = []
    for position, choice in enumerate(ordered(choices)):
        if not isinstance(choice.text, str):
            raise ServerSaidError(f"the server's answer has text of type {type(choice.text).__name__}")
        samples.append(Completion(
            answer=choice.text, finish_reason=choice.finish_reason if isinstance(choice.finish_reason, str) else None,
            prompt_tokens=count(getattr(usage, "prompt_tokens", None)),
            completion_tokens=count(getattr(usage, "completion_tokens", None)) if position == 0 else 0))
    return samples


class NoPromptLogprobs(Exception):
    """The server answered, but not with the prompt's log-probabilities: no row can be scored."""


def prompt_logprobs_of(response: Any, prompts: list[str], where: str) -> list[tuple[list[float], list[Any]]]:
    """Each prompt's echoed (token log-probabilities, top log-probabilities), the generated
    token last, from a completion asked with echo and logprobs. A server that did not echo
    the prompt's log-probabilities is NoPromptLogprobs, whatever it sent instead."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or len(choices) != len(prompts):
        raise ServerSaidError(f"the server's 200 answer holds {len(choices) if isinstance(choices, list) else 'no'} "
                              f"choices for {len(prompts)} prompts")
    echoed = []
    for choice, prompt in zip(ordered(choices), prompts):
        logprobs = getattr(choice, "logprobs", None)
        values = getattr(logprobs, "token_logprobs", None)
        tops = getattr(logprobs, "top_logprobs", None)
        text = getattr(choice, "text", None)
        # echoed: the answer repeats the prompt, and every prompt token but the first has a number
        if (not isinstance(text, str) or not text.startswith(prompt) or not isinstance(values, list)
                or len(values) < 2 or not all(isinstance(v, (int, float)) for v in values[1:])):
            raise NoPromptLogprobs(
                f"{where} did not return the prompt's log-probabilities (completions with echo=true and "
                "logprobs=1): log-likelihood scoring on backend=openai needs a server that does, as vLLM's and "
                "SGLang's do")
        echoed.append((values, tops if isinstance(tops, list) and len(tops) == len(values) else [None] * len(values)))
    return echoed


def count(value: Any) -> int | None:
    """A token count from a server's usage: a whole number, or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class ServerSaidError(Exception):
    """A 200 response without an answer in it: retried like a 5xx."""


def _message_of(error: Any) -> str:
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error)


def error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, (dict, str)):
            return _message_of(inner)
    return str(getattr(exc, "message", exc))
