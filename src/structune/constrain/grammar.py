"""JSON Schema → an llguidance grammar, compiled once per (schema, tokenizer).

llguidance has the widest JSON Schema coverage measured by JSONSchemaBench; its masks take
under 1% of decode time here (benchmarks/constrained_decoding.py). Whitespace is compact:
with flexible whitespace a small base model runs away in spaces and newlines until
`max_tokens`. A schema keyword that the engine cannot enforce (llguidance reports it while
validating the grammar) is refused with the engine's message: decoding unconstrained while
claiming otherwise would be a silent failure.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from structune.errors import UserError


@dataclass(frozen=True)
class SchemaGrammar:
    """A compiled grammar for one schema and one tokenizer; `matcher()` starts a decode."""

    grammar: str
    ll_tokenizer: Any

    def matcher(self) -> Any:
        import llguidance

        return llguidance.LLMatcher(self.ll_tokenizer, self.grammar)


@lru_cache(maxsize=8)
def _ll_tokenizer(tokenizer: Any) -> Any:
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)  # ~0.4-0.9 s: worth caching


# Recently used grammars, keyed by the schema's full digest and the tokenizer's id; the
# tokenizer is kept beside its grammar so that a reused id can never match. Bounded: a
# server sees arbitrary client schemas.
_GRAMMARS: OrderedDict[tuple[str, int], tuple[Any, SchemaGrammar]] = OrderedDict()
_MAX_CACHED_GRAMMARS = 64


def schema_grammar(schema: Mapping[str, Any], ll_tokenizer: Any = None) -> str:
    """The llguidance grammar for `schema` (compact whitespace), or a refusal.

    Raises:
        UserError: the schema is not a JSON object, or uses a feature the engine cannot enforce.
    """
    import llguidance

    if not isinstance(schema, Mapping):
        raise UserError(f"a JSON Schema must be an object, got {type(schema).__name__}")
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False}
        )
    except ValueError as exc:
        raise UserError(f"the schema cannot be compiled: {exc}") from None
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll_tokenizer)
    if failed or messages:
        raise UserError(
            "constrained decoding cannot enforce this schema: "
            + "; ".join(m.strip().replace("\n", " ") for m in messages)
            + ". Remove that feature from the schema, or decode without constraints"
        )
    return grammar


def compile_schema(schema: Mapping[str, Any], tokenizer: Any) -> SchemaGrammar:
    """Compile `schema` for `tokenizer` (cached), or refuse it with the reason."""
    digest = hashlib.sha256(
        json.dumps(schema, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    key = (digest, id(tokenizer))
    cached = _GRAMMARS.get(key)
    if cached is not None and cached[0] is tokenizer:
        _GRAMMARS.move_to_end(key)
        return cached[1]
    ll_tokenizer = _ll_tokenizer(tokenizer)
    compiled = SchemaGrammar(schema_grammar(schema, ll_tokenizer), ll_tokenizer)
    _GRAMMARS[key] = (tokenizer, compiled)
    if len(_GRAMMARS) > _MAX_CACHED_GRAMMARS:
        _GRAMMARS.popitem(last=False)
    return compiled
