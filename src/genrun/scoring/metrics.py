"""Score metrics: exact match, token F1 and accuracy, best over the references.

Normalised as QA benchmarks do (lower case, no punctuation or articles, white space folded).
Thinking is removed before scoring, never from the stored answer. Without extraction,
accuracy means the reference is contained in the answer; with `scoring.extract` (see
extract.py), the extracted answer must equal the reference read the same way.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, Callable, Iterable

OPEN_THINK, CLOSE_THINK = "<think>", "</think>"
ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans("", "", string.punctuation)


def strip_thinking(answer: str) -> tuple[str, bool]:
    """The answer without <think>...</think> blocks, and whether a thinking block never closed."""
    kept, position = [], 0
    while True:  # each <think>...</think> block out, in one pass (a regex took quadratic time)
        start = answer.find(OPEN_THINK, position)
        end = answer.find(CLOSE_THINK, start + len(OPEN_THINK)) if start >= 0 else -1
        if end < 0:  # no block left: no later <think> has a closing tag either
            kept.append(answer[position:])
            break
        kept.append(answer[position:start])
        position = end + len(CLOSE_THINK)
    text = "".join(kept)
    if CLOSE_THINK in text:  # templates that pre-fill "<think>" leave only the closing tag
        text = text.rsplit(CLOSE_THINK, 1)[1]
    unclosed = "<think>" in text
    if unclosed:
        text = text.split("<think>", 1)[0]
    return text, unclosed


def normalize(text: str) -> str:
    text = text.lower().translate(PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


# Each metric compares an answer and a reference already normalised: a row normalises its
# answer and each reference once, whatever the number of metrics.
def _exact_match(said: str, gold: str) -> float:
    return float(said == gold)


def _f1(said: str, gold: str) -> float:
    predicted, expected = said.split(), gold.split()
    left: dict[str, int] = {}  # the tokens both share, as a multiset (Counter's & took 4x longer)
    for token in expected:
        left[token] = left.get(token, 0) + 1
    common = 0
    for token in predicted:
        if left.get(token):
            left[token] -= 1
            common += 1
    if common == 0:
        return float(predicted == expected)  # both empty counts as a match
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def _accuracy(said: str, gold: str) -> float:
    return float(bool(gold) and gold in said)


NORMALIZED: dict[str, Callable[[str, str], float]] = {"exact_match": _exact_match, "f1": _f1, "accuracy": _accuracy}


def exact_match(answer: str, reference: str) -> float:
    return _exact_match(normalize(answer), normalize(reference))


def f1(answer: str, reference: str) -> float:
    return _f1(normalize(answer), normalize(reference))


def accuracy(answer: str, reference: str) -> float:
    return _accuracy(normalize(answer), normalize(reference))


METRICS: dict[str, Callable[[str, str], float]] = {"exact_match": exact_match, "f1": f1, "accuracy": accuracy}


def references(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def score(answer: str, reference: Any, metrics: Iterable[str] = METRICS) -> dict[str, Any]:
    """Best score over the references for each metric; flags unclosed thinking."""
    said, unclosed = normalized_answer(answer)
    return score_normalized(said, unclosed, normalized_references(reference), metrics)


def normalized_answer(answer: str) -> tuple[str, bool]:
    """The answer as the metrics compare it (thinking removed, normalised), and whether a
    thinking block never closed."""
    text, unclosed = strip_thinking(answer)
    return normalize(text), unclosed


def score_normalized(said: str, unclosed: bool, golds: list[str], metrics: Iterable[str]) -> dict[str, Any]:
    if len(golds) == 1:  # most rows: no max() over one reference
        gold = golds[0]
        scores: dict[str, Any] = {name: NORMALIZED[name](said, gold) for name in metrics}
    else:
        scores = {name: max((NORMALIZED[name](said, gold) for gold in golds), default=0.0) for name in metrics}
    if unclosed:
        scores["unclosed_thinking"] = True
    return scores


def normalized_references(reference: Any) -> list[str]:
    return [normalize(gold) for gold in references(reference)]


def same(extracted: str, reference: str) -> float:
    return float(extracted.strip().casefold() == reference.strip().casefold())


# mode=choice, as lm-evaluation-harness scores multiple choice: the choice with the highest
# log-likelihood (acc), per character of the choice's text (acc_norm), per UTF-8 byte (acc_bytes).
# With one continuation (lm-eval's loglikelihood tasks, lambada), acc is whether it is the
# model's greedy continuation; perplexity is exp(-mean) of the right continuations' log-likelihoods.
CHOICE_METRICS = ("acc", "acc_norm", "acc_bytes", "perplexity")
CHOICE_DEFAULT = ["acc", "acc_norm"]


# mode=perplexity, as lm-evaluation-harness aggregates loglikelihood_rolling: over the corpus,
# weighted by each text's words or UTF-8 bytes (not a mean of per-text values). Each metric's
# unit, and how the corpus's log-likelihood per unit (a ratio, r <= 0) becomes it.
PERPLEXITY_METRICS: dict[str, str] = {"word_perplexity": "words", "byte_perplexity": "bytes",
                                      "bits_per_byte": "bytes"}
PERPLEXITY_DEFAULT = list(PERPLEXITY_METRICS)
# Every metric that is a ratio of sums over the rows (a record's `perplexity` holds its parts), by its unit.
RATIO_METRICS: dict[str, str] = {**PERPLEXITY_METRICS, "perplexity": "rows"}


def from_loglikelihood_per_unit(metric: str, r: float) -> float:
    """word/byte perplexity is exp(-r); bits per byte is -r / ln 2."""
    if metric == "bits_per_byte":
        return -r / math.log(2)
    return math.exp(-r) if -r < 709 else math.inf  # beyond: more than a float holds


def text_units(text: str) -> dict[str, int]:
    """What a text's log-likelihood is divided by: its words as lm-eval counts them (split on
    runs of whitespace) and its UTF-8 bytes."""
    return {"words": len(re.split(r"\s+", text)), "bytes": len(text.encode("utf-8"))}


def choice_picks(logprobs: list[float], choices: list[str]) -> dict[str, int]:
    """The index each choice metric picks (the first on a tie, as numpy's argmax)."""
    def argmax(values: list[float]) -> int:
        return max(range(len(values)), key=lambda i: (values[i], -i))

    return {"acc": argmax(logprobs),
            "acc_norm": argmax([lp / max(len(c), 1) for lp, c in zip(logprobs, choices)]),
            "acc_bytes": argmax([lp / max(len(c.encode()), 1) for lp, c in zip(logprobs, choices)])}
