"""Scores (the `scoring` config group): exact match, token F1 and accuracy, best over the references.

Normalised as QA benchmarks do (lower case, no punctuation or articles, white space folded).
Thinking is removed before scoring, never from the stored answer. Without extraction,
accuracy means the reference is contained in the answer; with `scoring.extract` (see
extract.py), the extracted answer must equal the reference read the same way.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from genrun import extract as extractors
from genrun.errors import UserError, one_line
from genrun.structured import valid_json

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


def exact_match(answer: str, reference: str) -> float:
    return float(normalize(answer) == normalize(reference))


def f1(answer: str, reference: str) -> float:
    predicted, gold = normalize(answer).split(), normalize(reference).split()
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return float(predicted == gold)  # both empty counts as a match
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def accuracy(answer: str, reference: str) -> float:
    gold = normalize(reference)
    return float(bool(gold) and gold in normalize(answer))


METRICS: dict[str, Callable[[str, str], float]] = {"exact_match": exact_match, "f1": f1, "accuracy": accuracy}


def references(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def score(answer: str, reference: Any, metrics: Iterable[str] = METRICS) -> dict[str, Any]:
    """Best score over the references for each metric; flags unclosed thinking."""
    text, unclosed = strip_thinking(answer)
    golds = references(reference)
    scores: dict[str, Any] = {
        name: max((METRICS[name](text, gold) for gold in golds), default=0.0) for name in metrics
    }
    if unclosed:
        scores["unclosed_thinking"] = True
    return scores


def same(extracted: str, reference: str) -> float:
    return float(extracted.strip().casefold() == reference.strip().casefold())


@dataclass
class Scorer:
    """The run's scoring settings, checked once; score() gives a record's extracted answer
    (None without extraction) and its scores."""

    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    extract: str = "none"
    pattern: str | None = None
    json_valid: bool = False  # answers constrained by a JSON schema: also score whether they parse

    def __post_init__(self) -> None:
        self.metrics = list(self.metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise UserError(f"scoring.metrics={unknown[0] if unknown else '[]'!r} is not a metric "
                            f"(choose from {', '.join(METRICS)})")
        kinds = ["none", *extractors.EXTRACTORS, "regex"]
        if self.extract not in kinds:
            raise UserError(f"scoring.extract={self.extract!r} is unknown (choose from {', '.join(kinds)})")
        self._extract: Callable[[str], str | None] | None = extractors.EXTRACTORS.get(self.extract)
        self._read_reference: Callable[[str], str | None] = extractors.READ_REFERENCE.get(self.extract, str.strip)
        if self.extract == "regex":
            if not self.pattern:
                raise UserError("scoring.extract=regex needs scoring.pattern, e.g. 'scoring.pattern=\"Answer: (.+)\"'")
            try:
                self._extract = extractors.regex(extractors.compile_pattern(self.pattern))
            except Exception as exc:  # noqa: BLE001 - regex.error: the user's pattern
                raise UserError(f"scoring.pattern={self.pattern!r} is not a valid regular expression: {exc}") from None

    def score(self, answer: str, reference: Any) -> tuple[str | None, dict[str, Any]]:
        if self._extract is None:
            return None, score(answer, reference, self.metrics)
        text, unclosed = strip_thinking(answer)
        extracted = self._extract(text)
        golds = [g for g in (self._read_reference(r) for r in references(reference)) if g is not None]
        scores: dict[str, Any] = {}
        for name in self.metrics:
            # extracted values compare as they are: normalising would turn "1.5" into "15"
            compare = same if name in ("accuracy", "exact_match") else METRICS[name]
            scores[name] = max((compare(extracted, g) for g in golds), default=0.0) if extracted is not None else 0.0
        if unclosed:
            scores["unclosed_thinking"] = True
        return extracted, scores


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples with `correct` right (Chen et al. 2021):
    1 - C(n - c, k) / C(n, k), the chance that k samples drawn from the n hold a right one."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def sample_metrics(main: str, sample_scores: list[dict[str, Any]], votes: list[str | None]) -> dict[str, float]:
    """pass@k for k = 1, 2, 4, ... up to n (and n), and maj@n, on the main metric: a sample is
    right when it scores 1. votes: what each sample answered (extracted or normalised)."""
    n = len(sample_scores)
    correct = sum(1 for s in sample_scores if s.get(main) == 1.0)
    ks = sorted({*(2**i for i in range(n.bit_length()) if 2**i <= n), n})
    result = {f"pass@{k}": pass_at_k(n, correct, k) for k in ks}
    counted = Counter(v for v in votes if v is not None)
    if counted:
        winner = counted.most_common(1)[0][0]  # ties: the one answered first
        result[f"maj@{n}"] = float(sample_scores[votes.index(winner)].get(main, 0.0))
    else:
        result[f"maj@{n}"] = 0.0
    return result


def score_record(record: dict[str, Any], scorer: Scorer) -> None:
    """Set a record's `extracted` and `scores` from its answer(s) and reference. With several
    samples (`answers`), each sample is scored (`sample_scores`), a metric's row score is its
    mean over the samples, and pass@k and maj@n are added. A judge's verdict is kept.

    Scoring never loses an answer: a row that cannot be scored (a pattern that runs too long
    on it, an answer of a shape no metric reads) keeps its answer and gets `scoring_error`."""
    old = record.get("scores") or {}
    record.pop("scoring_error", None)
    try:
        _score_record(record, scorer)
    except Exception as exc:  # noqa: BLE001 - one row's scoring, never the run
        for key in ("extracted", "sample_extracted", "sample_scores", "scores"):
            record.pop(key, None)
        if "judge" in old:
            record["scores"] = {"judge": old["judge"]}
        reason = str(exc) if isinstance(exc, extractors.ExtractionTimeout) else f"{type(exc).__name__}: {exc}"
        record["scoring_error"] = one_line(reason, 300)


def _score_record(record: dict[str, Any], scorer: Scorer) -> None:
    old = record.pop("scores", None) or {}
    for key in ("extracted", "sample_extracted", "sample_scores"):
        record.pop(key, None)
    answers = record.get("answers") or ([record["answer"]] if record.get("answer") is not None else [])
    scores: dict[str, Any] = {k: v for k, v in old.items() if k == "judge" or (k == "json_valid" and not scorer.json_valid)}
    if answers and scorer.json_valid:
        scores["json_valid"] = sum(map(valid_json, answers)) / len(answers)
    if answers and record.get("reference") is not None:
        results = [scorer.score(a, record["reference"]) for a in answers]
        if scorer.extract != "none":
            record["extracted"] = results[0][0]
        if len(answers) == 1:
            scores.update(results[0][1])
        else:
            sample_scores = [r[1] for r in results]
            record["sample_scores"] = sample_scores
            if scorer.extract != "none":
                record["sample_extracted"] = [r[0] for r in results]
                votes = record["sample_extracted"]
            else:
                votes = [normalize(strip_thinking(a)[0]) for a in answers]
            for name in scorer.metrics:
                scores[name] = sum(s[name] for s in sample_scores) / len(sample_scores)
            if any(s.get("unclosed_thinking") for s in sample_scores):
                scores["unclosed_thinking"] = True
            scores.update(sample_metrics(scorer.metrics[0], sample_scores, votes))
    if scores:
        record["scores"] = scores
