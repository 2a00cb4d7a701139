"""Log-likelihoods of continuations after a context (mode=choice), split into tokens exactly as
lm-evaluation-harness does, so genrun's numbers can be compared with everyone's: trailing
spaces of the context move to the continuation, the pair is encoded whole and the context's
own tokens cut off its front, and an empty context is conditioned on the prefix token (BOS,
else EOS). A whole text's log-likelihood (mode=perplexity) is scored in lm-eval's rolling
windows of the model's length. The hf and vllm backends share the split and the regrouping
of scored pairs into rows; hf's forward passes are here too.

May use: genrun.backend.base (torch only inside the functions that run the model).
"""

from __future__ import annotations

from typing import Any, Callable

from genrun.backend.base import Completion, Scored

Encode = Callable[[str], list[int]]


def encode_pair(encode: Encode, context: str, continuation: str, prefix_token: int) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens), as lm-eval's loglikelihood and _encode_pair make them."""
    if context == "":
        tokens = encode(continuation)
        if tokens and tokens[0] == prefix_token:
            return tokens[:1], tokens[1:]
        return [prefix_token], tokens
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(context + continuation)
    context_tokens = encode(context)
    return context_tokens, whole[len(context_tokens):]


def prefix_token(tokenizer: Any) -> int:
    """What an empty context is conditioned on: BOS, else EOS (lm-eval's prefix_token_id)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to condition an empty context on")
    return int(token)


def window(context: list[int], continuation: list[int], max_length: int) -> tuple[list[int], int]:
    """The model's input (the pair's last max_length + 1 tokens, less the last) and how many
    continuation tokens it predicts: the continuation itself, cut only if it alone is longer."""
    tokens = (context + continuation)[-(max_length + 1):][:-1]
    return tokens, min(len(continuation), len(tokens))


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """A text's tokens as (context, continuation) pairs that predict every token once, as
    lm-eval's loglikelihood_rolling makes them (get_rolling_token_windows with context_len=1,
    then make_disjoint_window): the first window is conditioned on the prefix token, each
    later one on the max_length tokens before it."""
    if not tokens:
        return []
    first = tokens[:max_length]
    pairs = [([prefix_token], first)]
    predicted = len(first)
    while predicted < len(tokens):
        length = min(len(tokens) - predicted, max_length)
        end = predicted + length
        context = tokens[end - max_length - 1:end - 1]
        pairs.append((context[:len(context) - (length - 1)], tokens[end - length:end]))
        predicted += length
    return pairs


def per_row(scored: list[Any], sizes: list[int], prompt_tokens: list[int], summed: bool = False) -> list[Completion]:
    """Pairs scored in one flat list (a Scored, or the error Completion of a pair the engine
    refused) back to one Completion per row of `sizes[i]` pairs. summed: the row is one text
    in rolling windows, whose log-likelihood is their sum (mode=perplexity)."""
    completions, start = [], 0
    for size, tokens in zip(sizes, prompt_tokens):
        row = scored[start:start + size]
        start += size
        failed = next((s for s in row if isinstance(s, Completion)), None)
        if failed is not None:
            completions.append(failed)
        elif summed:
            whole = Scored(sum(s.logprob for s in row), sum(s.tokens for s in row), all(s.greedy for s in row))
            completions.append(Completion(loglikelihoods=[whole], prompt_tokens=tokens))
        else:
            completions.append(Completion(loglikelihoods=row, prompt_tokens=tokens))
    return completions


def hf_scores(model: Any, pairs: list[tuple[list[int], list[int]]], max_length: int, batch_size: int) -> list[Scored]:
    """Every pair's continuation log-likelihood in batched forward passes, longest first (so
    each batch pads little), the result in the pairs' order. Pairs whose inputs are the same
    tokens (one-token choices after one context, as lm-eval groups them) share one pass: each
    reads its own last token from it. Inputs are padded on the left, so every continuation
    ends at the last position, and where the model takes `logits_to_keep` only the positions
    that predict continuation tokens go through the output layer (a fifth of a small model's
    work at every position otherwise)."""
    import inspect

    import torch

    inputs = [window(*pair, max_length) for pair in pairs]
    shared: dict[tuple[int, ...], list[int]] = {}
    for i, (tokens, _) in enumerate(inputs):
        shared.setdefault(tuple(tokens), []).append(i)
    passes = sorted(shared, key=len, reverse=True)
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    results: list[Scored | None] = [None] * len(pairs)
    for start in range(0, len(passes), batch_size):
        chunk = passes[start:start + batch_size]
        width = max(len(passed) for passed in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, passed in enumerate(chunk):
            ids[row, width - len(passed):] = torch.tensor(passed)
            mask[row, width - len(passed):] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # each row's own positions, from 0 at its first token
        keep = max(inputs[i][1] for passed in chunk for i in shared[passed])
        extra = {"logits_to_keep": keep} if keeps_logits else {}
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                           position_ids=positions.to(model.device), **extra).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        end = logprobs.shape[1]  # the last position of every row (the rest were not kept)
        for row, passed in enumerate(chunk):
            for i in shared[passed]:
                count = inputs[i][1]
                wanted = torch.tensor(pairs[i][1][len(pairs[i][1]) - count:])
                # position p predicts token p + 1: the continuation's tokens follow the last `count` inputs
                span = logprobs[row, end - count:end]
                picked = span.gather(1, wanted.unsqueeze(1)).squeeze(1)
                results[i] = Scored(float(picked.sum()), count, bool((span.argmax(dim=-1) == wanted).all()))
    return results  # type: ignore[return-value]


def vllm_scores(prompt_logprobs: list[Any], context_length: int, continuation: list[int]) -> Scored:
    """A continuation's log-likelihood from vLLM's prompt_logprobs over context + continuation:
    each position's dict holds the actual token's log-probability and its rank (1: greedy)."""
    total, greedy = 0.0, True
    for offset, token in enumerate(continuation):
        entry = prompt_logprobs[context_length + offset][token]
        total += float(entry.logprob)
        greedy = greedy and entry.rank == 1
    return Scored(total, len(continuation), greedy)
