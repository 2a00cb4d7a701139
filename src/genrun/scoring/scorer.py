"""The Scorer (the `scoring` config group): a record's extracted answer and scores from its
answer(s) and reference, pass@k and maj@n over several samples."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from genrun.backend.structured import valid_json
from genrun.errors import UserError, one_line
from genrun.scoring import extract as extractors
from genrun.scoring.metrics import (
    CHOICE_DEFAULT,
    CHOICE_METRICS,
    METRICS,
    PERPLEXITY_DEFAULT,
    PERPLEXITY_METRICS,
    choice_picks,
    from_loglikelihood_per_unit,
    normalized_answer,
    normalized_references,
    references,
    same,
    score,
    score_normalized,
    strip_thinking,
    text_units,
)
from genrun.settings.schema import ScoringConfig


@dataclass
class Scorer:
    """The run's scoring settings, checked once; score() gives a record's extracted answer
    (None without extraction) and its scores."""

    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    extract: str = "none"
    pattern: str | None = None
    json_valid: bool = False  # answers constrained by a JSON schema: also score whether they parse
    choice_policy: str = "letter"  # extract=choice, when the letter and the text disagree (see score())

    @classmethod
    def of(cls, scoring: ScoringConfig, json_valid: bool = False, mode: str = "generate") -> Scorer:
        metrics = list(scoring.metrics)
        own = {"choice": (CHOICE_METRICS, CHOICE_DEFAULT), "perplexity": (PERPLEXITY_METRICS, PERPLEXITY_DEFAULT)}
        for other, (names, _) in own.items():
            if other != mode and any(m in names for m in metrics):
                raise UserError(f"scoring.metrics: {', '.join(names)} score mode={other} runs; "
                                f"this one is mode={mode} (use {', '.join(own[mode][0] if mode in own else METRICS)})")
        if mode in own:
            names, default = own[mode]
            # the default metrics read text answers: a log-likelihood run scores its own unless told
            metrics = [m for m in metrics if m in names] or list(default)
            if scoring.extract != "none":
                raise UserError(f"mode={mode} scores log-likelihoods, not text: remove scoring.extract")
        return cls(metrics, scoring.extract, scoring.pattern, json_valid, scoring.choice_policy)

    def __post_init__(self) -> None:
        self.metrics = list(self.metrics)
        unknown = [m for m in self.metrics if m not in METRICS and m not in CHOICE_METRICS
                   and m not in PERPLEXITY_METRICS and m not in RAW_METRICS]
        if unknown or not self.metrics:
            raise UserError(f"scoring.metrics={unknown[0] if unknown else '[]'!r} is not a metric "
                            f"(choose from {', '.join([*METRICS, *RAW_METRICS])}; mode=choice: "
                            f"{', '.join(CHOICE_METRICS)}; "
                            f"mode=perplexity: {', '.join(PERPLEXITY_METRICS)})")
        if "math_equal" in self.metrics:
            from genrun.scoring.math_equal import check_installed

            check_installed()
        self.text_metrics = [m for m in self.metrics if m not in RAW_METRICS]  # compared as text
        if self.choice_policy not in extractors.CHOICE_POLICIES:
            raise UserError(f"scoring.choice_policy={self.choice_policy!r} is unknown (choose from "
                            f"{', '.join(extractors.CHOICE_POLICIES)})")
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

    def score(self, answer: str, reference: Any, choices: list[str] | None = None) -> tuple[str | None, dict[str, Any]]:
        """The extracted answer and the scores."""
        extracted, scores, _ = self.read(answer, reference, choices)
        return extracted, scores

    def read(self, answer: str, reference: Any,
             choices: list[str] | None = None) -> tuple[str | None, dict[str, Any], dict[str, Any] | None]:
        """The extracted answer, the scores, and with extract=choice and the row's choices, what
        the letter and the choice's text each named (`choice_reading`)."""
        if self._extract is None:
            return None, score(answer, reference, self.metrics), None
        text, unclosed = strip_thinking(answer)
        reading = None
        if self.extract == "choice" and choices:
            extracted, reading = self.read_choice(text, [str(c) for c in choices])
        else:
            extracted = self._extract(text)
        golds = [g for g in (self._read_reference(r) for r in references(reference)) if g is not None]
        scores: dict[str, Any] = {}
        for name in self.metrics:
            if name == "code_pass":
                continue  # from the program's run (executions), not from the text
            # extracted values compare as they are: normalising would turn "1.5" into "15"
            compare = same if name in ("accuracy", "exact_match") else METRICS.get(name) or raw_metric(name)
            scores[name] = max((compare(extracted, g) for g in golds), default=0.0) if extracted is not None else 0.0
        if unclosed:
            scores["unclosed_thinking"] = True
        if reading is not None:
            scores["ambiguous"] = reading["ambiguous"]
        return extracted, scores, reading

    def read_choice(self, text: str, choices: list[str]) -> tuple[str | None, dict[str, Any]]:
        """letter: the letter wins, the text when there is none; text: lm-eval's flexible-extract
        (a "(B)", else the text, else "...: B"); strict: a row whose letter and text name
        different choices has no answer (scores 0)."""
        letter, by_text = extractors.choice(text), extractors.choice_by_text(text, choices)
        ambiguous = letter is not None and by_text is not None and letter != by_text
        if self.choice_policy == "text":
            extracted = extractors.flexible_extract(text, choices)
        elif self.choice_policy == "strict" and ambiguous:
            extracted = None
        else:
            extracted = letter or by_text
        return extracted, {"letter": letter, "text": by_text, "ambiguous": ambiguous}


RAW_METRICS = ("math_equal", "code_pass")  # read the answer as it is: never normalised as text


def raw_metric(name: str) -> Callable[[str, str], float]:
    from genrun.scoring.math_equal import math_equal

    return {"math_equal": math_equal}[name]


def raw_scores(answer: str, reference: Any, metrics: list[str]) -> dict[str, float]:
    """Without extraction: math_equal reads the whole answer (math-verify finds the expression)."""
    text, _ = strip_thinking(answer)
    from genrun.scoring.math_equal import math_equal

    return {m: max((math_equal(text, g, prose=True) for g in references(reference)), default=0.0)
            for m in metrics if m == "math_equal"}


def executed(record: dict[str, Any], answers: list[str]) -> list[float] | None:
    """code_pass of each sample, from the record's executions when they are of these answers."""
    runs = record.get("executions")
    if not isinstance(runs, list) or len(runs) != len(answers):
        return None
    if any(not isinstance(r, dict) or r.get("answer") != answer_digest(a) for r, a in zip(runs, answers)):
        return None
    return [float(r.get("passed") is True) for r in runs]


def answer_digest(answer: str) -> str:
    import hashlib

    return hashlib.sha256(answer.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
        for key in ("extracted", "sample_extracted", "sample_scores", "scores", "choice_reading"):
            record.pop(key, None)
        if "judge" in old:
            record["scores"] = {"judge": old["judge"]}
        reason = str(exc) if isinstance(exc, extractors.ExtractionTimeout) else f"{type(exc).__name__}: {exc}"
        record["scoring_error"] = one_line(reason, 300)


def _score_choices(record: dict[str, Any], scorer: Scorer) -> None:
    """mode=choice: the answer is the choice of highest log-likelihood; each metric scores 1
    when its pick is the reference's index."""
    choices, scored = record["choices"], record["loglikelihoods"]
    picks = choice_picks([s["logprob"] for s in scored], choices)
    record["answer"] = choices[picks["acc"]]
    gold = record.get("reference")
    if gold is not None:
        record["scores"] = {m: float(picks[m] == gold) for m in scorer.metrics if m in picks}
        if len(choices) == 1 and "acc" in record["scores"]:  # one continuation: lm-eval's is_greedy
            record["scores"]["acc"] = float(bool(scored[0]["greedy"]))
        if "perplexity" in scorer.metrics:  # summed over the rows in metrics.json
            record["perplexity"] = {"logprob": float(scored[gold]["logprob"]), "rows": 1}


def _score_text(record: dict[str, Any], scorer: Scorer) -> None:
    """mode=perplexity: the text's log-likelihood and its units (`perplexity`), which
    metrics.json sums over the corpus, and the row's own perplexities (`scores`)."""
    (scored,) = record["loglikelihoods"]
    logprob = float(scored["logprob"])
    units = text_units(str(record.get("units_text", record["prompt"])))
    record["perplexity"] = {"logprob": logprob, **units}
    record["scores"] = {m: from_loglikelihood_per_unit(m, logprob / max(units[PERPLEXITY_METRICS[m]], 1))
                        for m in scorer.metrics if m in PERPLEXITY_METRICS}


def _score_record(record: dict[str, Any], scorer: Scorer) -> None:
    if record.get("loglikelihoods") is not None:
        record.pop("scores", None)
        record.pop("perplexity", None)
        if record.get("choices") is None:
            return _score_text(record, scorer)
        return _score_choices(record, scorer)
    old = record.pop("scores", None) or {}
    for key in ("extracted", "sample_extracted", "sample_scores", "choice_reading"):
        record.pop(key, None)
    answers = record.get("answers") or ([record["answer"]] if record.get("answer") is not None else [])
    # a judge's verdict is kept; so is json_valid when this scorer does not compute it
    scores: dict[str, Any] = {k: v for k, v in old.items()
                              if k == "judge" or (k == "json_valid" and not scorer.json_valid)}
    if answers and scorer.json_valid:
        scores["json_valid"] = sum(map(valid_json, answers)) / len(answers)
    if answers and record.get("reference") is not None:
        if scorer.extract == "none":  # each distinct answer normalised once: its scores and its vote
            golds = normalized_references(record["reference"])
            said = {a: normalized_answer(a) for a in answers}
            results: list[tuple[str | None, dict[str, Any]]] = [
                (None, {**score_normalized(*said[a], golds, scorer.text_metrics),
                               **raw_scores(a, record["reference"], scorer.metrics)}) for a in answers]
        else:
            choices = record.get("choices") if scorer.extract == "choice" else None
            scored = [scorer.read(a, record["reference"], choices) for a in answers]
            results = [(extracted, scores) for extracted, scores, _ in scored]
            if scored[0][2] is not None and len(answers) == 1:
                record["choice_reading"] = {k: v for k, v in scored[0][2].items() if k != "ambiguous"}
        passed = executed(record, answers) if "code_pass" in scorer.metrics else None
        if passed is not None:
            for (_, sample), value in zip(results, passed):
                sample["code_pass"] = value
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
                votes = [said[a][0] for a in answers]
            for name in scorer.metrics:
                if all(name in s for s in sample_scores):  # code_pass: once the programs ran
                    scores[name] = sum(s[name] for s in sample_scores) / len(sample_scores)
            if any(s.get("unclosed_thinking") for s in sample_scores):
                scores["unclosed_thinking"] = True
            if any("ambiguous" in s for s in sample_scores):  # a row is ambiguous when one of its samples is
                scores["ambiguous"] = any(s.get("ambiguous") for s in sample_scores)
            if scorer.metrics[0] in scores:
                scores.update(sample_metrics(scorer.metrics[0], sample_scores, votes))
    if scores:
        record["scores"] = scores
