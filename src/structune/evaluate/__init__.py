"""Evaluation: base vs tuned vs teacher on held-out inputs."""

from structune.evaluate.compare import Comparison, ModelScore, compare

__all__ = ["Comparison", "ModelScore", "compare"]
