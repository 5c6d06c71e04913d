"""JSON Schema → an llguidance grammar, compiled once per (schema, tokenizer).

llguidance has the widest JSON Schema coverage measured by JSONSchemaBench; its masks take
under 1% of decode time here (benchmarks/constrained_decoding.py). Whitespace is compact:
with flexible whitespace a small base model runs away in spaces and newlines until
`max_tokens`. A schema keyword that the engine cannot enforce (llguidance reports it while
validating the grammar) is refused with the engine's message: decoding unconstrained while
claiming otherwise would be a silent failure.

A schema with extracted fields (`structune.constrain.extractive`) compiles to a Lark grammar
instead, one per (schema, source text): its sources are part of the schema, and of the
cache key.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from structune.constrain.extractive import has_extracted
from structune.errors import UserError

# An ordered extracted list can start its next item at any later piece of its source, so
# the Earley parser holds a few items per source piece in one row; llguidance's default
# (2,000) would stop a list over a source of ~700 words mid-answer. The writer refuses
# sources past `extractive_grammar.MAX_ORDERED_PIECES`, which stays under this.
MAX_ITEMS_IN_ROW = 20_000


@dataclass(frozen=True)
class SchemaGrammar:
    """A compiled grammar for one schema and one tokenizer; `matcher()` starts a decode."""

    grammar: str
    ll_tokenizer: Any

    def matcher(self) -> Any:
        """A fresh matcher at the start of the grammar.

        Raises:
            UserError: the engine refuses the grammar (e.g. a source text past its size limits).
        """
        import llguidance

        limits = llguidance.LLParserLimits(max_items_in_row=MAX_ITEMS_IN_ROW)
        matcher = llguidance.LLMatcher(self.ll_tokenizer, self.grammar, limits=limits)
        if matcher.is_error():
            raise UserError(
                f"constrained decoding cannot start: {matcher.get_error()}. Shorten the input "
                "that extracted fields copy from, or decode without constraints"
            )
        return matcher


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

    Extracted fields need their sources bound into the schema (`bind_sources`).

    Raises:
        UserError: the schema is not a JSON object, or uses a feature the engine cannot enforce.
    """
    import llguidance

    if not isinstance(schema, Mapping):
        raise UserError(f"a JSON Schema must be an object, got {type(schema).__name__}")
    if has_extracted(schema):
        return _extractive_grammar(schema, ll_tokenizer)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False}
        )
    except ValueError as exc:
        raise UserError(f"the schema cannot be compiled: {exc}") from None
    _validate(grammar, ll_tokenizer)
    return grammar


def _validate(grammar: str, ll_tokenizer: Any) -> None:
    import llguidance

    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, ll_tokenizer)
    if failed or messages:
        raise UserError(
            "constrained decoding cannot enforce this schema: "
            + "; ".join(m.strip().replace("\n", " ") for m in messages)
            + ". Remove that feature from the schema, or decode without constraints"
        )


# Digests of extractive schemas already validated, with placeholder sources: validating
# costs as much as starting a matcher, and a source text cannot make the grammar invalid
# (it only fills chunk lists), so one validation per schema serves every request.
_VALIDATED: OrderedDict[str, None] = OrderedDict()


def _extractive_grammar(schema: Mapping[str, Any], ll_tokenizer: Any) -> str:
    import llguidance

    from structune.constrain.extractive import SOURCES_KEY
    from structune.constrain.extractive_grammar import extractive_grammar

    lark = extractive_grammar(schema)  # refuses a schema without bound sources
    shape = {**schema, SOURCES_KEY: dict.fromkeys(schema[SOURCES_KEY], "x")}
    key = _digest(shape)
    if key not in _VALIDATED:
        _validate(llguidance.LLMatcher.grammar_from_lark(extractive_grammar(shape)), ll_tokenizer)
        _VALIDATED[key] = None
        if len(_VALIDATED) > _MAX_CACHED_GRAMMARS:
            _VALIDATED.popitem(last=False)
    return llguidance.LLMatcher.grammar_from_lark(lark)


def _digest(schema: Mapping[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(schema, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def compile_schema(schema: Mapping[str, Any], tokenizer: Any) -> SchemaGrammar:
    """Compile `schema` for `tokenizer` (cached), or refuse it with the reason."""
    key = (_digest(schema), id(tokenizer))
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
