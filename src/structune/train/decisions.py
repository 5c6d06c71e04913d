"""Where a JSON answer decides its own length: each list's open, continue and close.

Most tokens of a structured answer are copied or follow from the format; a few decide how
many items a list holds: the character after `[` (an item, or `]` for an empty list), and
after each item the `,` that continues the list or the `]` that closes it. Each is one token
of hundreds, so the mean loss barely sees it, and a small student that has learned the rest
still stops a list early or repeats its items (the citation student of
`benchmarks/rag_citations.py` did both). `TrainConfig(decision_weight=...)` weighs these
tokens more in the loss. Measured there, a weight of 10 made the open decision sharp and
the student worse: continues outnumber closes about 2 to 1 in its answers, and it learned to
never close a citing list (docs/citation-student.md).
"""

from __future__ import annotations

from collections.abc import Sequence


def list_decisions(answer: str) -> list[int]:
    """Character offsets in `answer` (JSON text) of each list's decisions: the first
    character after every `[`, and every `,` and `]` that ends a list item. Text that is not
    JSON gives the decisions found up to where it stops being JSON (none for plain text)."""
    decisions: list[int] = []
    open_lists: list[bool] = []  # one per open container: True for a list, False an object
    in_string = escaped = after_open = False
    for offset, char in enumerate(answer):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char.isspace():
            continue
        if after_open:  # the first character after `[`: the list's first decision
            decisions.append(offset)
            after_open = False
        elif char in ",]" and open_lists and open_lists[-1]:
            decisions.append(offset)
        if char == '"':
            in_string = True
        elif char in "[{":
            open_lists.append(char == "[")
            after_open = char == "["
        elif char in "]}":
            if not open_lists:
                break  # not JSON from here on
            open_lists.pop()
    return decisions


def token_weights(
    offsets: Sequence[tuple[int, int]], decisions: Sequence[int], weight: float
) -> list[float]:
    """`weight` for each token whose character span `(start, end)` holds a decision, 1.0 for
    the others."""
    targets = sorted(decisions)
    weights = []
    next_target = 0
    for start, end in offsets:
        while next_target < len(targets) and targets[next_target] < start:
            next_target += 1
        holds = next_target < len(targets) and targets[next_target] < end
        weights.append(weight if holds else 1.0)
    return weights
