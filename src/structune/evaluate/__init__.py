"""Evaluation: base vs tuned vs teacher on held-out inputs.

`compare` measures rates, speed and the content of valid answers (`content`: repeated
list items, constant, echoed and copied values); `agreement` scores an answer against a
reference field by field; `evaluate` does both and returns an `EvalReport` (table, JSON,
HTML).
"""

from structune.evaluate.agreement import Agreement, Counts, agreement
from structune.evaluate.compare import Comparison, ModelScore, compare
from structune.evaluate.content import ContentScores, content_scores
from structune.evaluate.report import EvalReport, evaluate, read_gold

__all__ = [
    "Agreement",
    "Comparison",
    "ContentScores",
    "Counts",
    "EvalReport",
    "ModelScore",
    "agreement",
    "compare",
    "content_scores",
    "evaluate",
    "read_gold",
]
