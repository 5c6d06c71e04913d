"""The tokens a grammar allows once the budget's closing has begun, for the tests of it."""

from __future__ import annotations

from typing import Any


def allowed_when_closing(schema: dict[str, Any], tokenizer: Any, written: str) -> list[str]:
    """The tokens allowed after `written` under `schema`'s grammar with an 8-token budget,
    whose closing starts at step 6 (`written` is at least 6 tokens, so it has begun)."""
    import torch

    from structune.constrain.grammar import compile_schema
    from structune.constrain.processor import BudgetClosing, GrammarLogitsProcessor

    processor = GrammarLogitsProcessor(
        compile_schema(schema, tokenizer),
        closing=BudgetClosing.for_tokenizer(tokenizer, max_tokens=8),
    )
    tokens = tokenizer.encode(written, add_special_tokens=False)
    assert len(tokens) >= 6
    ids, scores = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, len(tokenizer))
    processor(ids, scores)
    for token in tokens:
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        masked = processor(ids, scores)
    return tokenizer.convert_ids_to_tokens(torch.isfinite(masked[0]).nonzero().flatten().tolist())
