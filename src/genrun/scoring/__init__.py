"""Scoring: metrics (exact match, F1, accuracy, math_equal), answer extraction, the Scorer that
fills a record's scores (pass@k, maj@n), confidence intervals and paired tests, the judge's
rubric and verdicts, and code_pass's programs and the sandbox they run in.

May use: genrun.prompt (the judge's messages and templates), genrun.backend (structured
outputs' json check), genrun.settings (its slices), genrun.errors; math-verify (the `math`
extra) in math_equal's worker process; bubblewrap and util-linux's prlimit/setpriv, as
programs, in the sandbox.
"""

from genrun.scoring.metrics import accuracy, exact_match, f1, normalize, score, strip_thinking
from genrun.scoring.scorer import Scorer, pass_at_k, score_record

__all__ = ["Scorer", "accuracy", "exact_match", "f1", "normalize", "pass_at_k", "score", "score_record",
           "strip_thinking"]
