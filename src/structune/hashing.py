"""Content hashes: a short identity of a JSON value that stays the same across runs.

The identity is the SHA-256 of the value's JSON with keys sorted and non-ASCII text
written as UTF-8, in hex, cut to the length its user needs. Several identities are
persisted (example ids in datasets, schema hashes in their rows, run keys naming
checkpoint folders), so the serialization must never change: `tests/unit/test_hashing.py` pins
known values.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def content_hash(value: Any, *, length: int, compact: bool = False) -> str:
    """The first `length` hex digits of the SHA-256 of `value`'s canonical JSON.

    Args:
        value: a JSON-serializable value; the key order of its objects does not matter.
        length: how many hex digits to keep (64 keeps them all).
        compact: serialize without spaces after `,` and `:`. Schema hashes have always
            been taken over the compact form, every other hash over the spaced one; each
            keeps its form so that stored values still match.
    """
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=separators)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
