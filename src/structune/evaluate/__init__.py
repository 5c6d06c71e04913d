"""Evaluation: base vs tuned vs teacher on held-out inputs.

`compare` measures rates and speed; `agreement` scores an answer against a reference
field by field; `evaluate` does both and returns an `EvalReport` (table, JSON, HTML).
"""

from structune.evaluate.agreement import Agreement, Counts, agreement
from structune.evaluate.compare import Comparison, ModelScore, compare
from structune.evaluate.report import EvalReport, evaluate, read_gold

__all__ = [
    "Agreement",
    "Comparison",
    "Counts",
    "EvalReport",
    "ModelScore",
    "agreement",
    "compare",
    "evaluate",
    "read_gold",
]
