"""The one small error hierarchy of structune.

`UserError` is a mistake the caller can fix (a missing template variable, an unknown
adapter id, a malformed file); `InvalidOutput` is a model answer that is not a valid
instance of the schema; `BackendError` is a model backend that failed at run time
(an endpoint that is down, a file that will not load). Every message says what went
wrong and what to do; the CLI prints them as one line.
"""

from __future__ import annotations


class StructuneError(Exception):
    """Base class of every error structune raises on purpose."""


class UserError(StructuneError):
    """The caller asked for something that cannot be done as asked; the message says the fix."""


class BackendError(StructuneError):
    """A model backend failed: an endpoint is down or answered an error, a model file is corrupt."""


class InvalidOutput(StructuneError):
    """A model's text is not a valid instance of the program's output schema.

    Attributes:
        text: the raw completion text, kept so nothing the model said is lost.
        reason: why it is invalid (no JSON found, JSON syntax, or the validation errors).
    """

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        preview = text if len(text) <= 200 else text[:200] + "…"
        super().__init__(f"model output is not a valid answer: {reason}\n--- output ---\n{preview}")
