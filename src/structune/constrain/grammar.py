"""JSON Schema → an llguidance grammar, compiled once per (schema, tokenizer).

llguidance has the widest JSON Schema coverage measured by JSONSchemaBench; its masks take
under 1% of decode time here (benchmarks/constrained_decoding.py). Whitespace is compact:
with flexible whitespace a small base model runs away in spaces and newlines until
`max_tokens`. A schema keyword that the engine cannot enforce (llguidance reports it while
validating the grammar) is refused with the engine's message: decoding unconstrained while
claiming otherwise would be a silent failure.

A client's schema can be built to make the engine work hard: nesting that overflows parsers,
quadratic optional properties, enums and counted regexes that take seconds to lex. Compiling
is bounded by the schema's shape (`check_schema_size`, cheap and with a clear message) and by
llguidance's fuel limits (`_engine_limits`), and `compile_schema` walks the first few tokens,
so that lazy lexer work is paid, or refused, before decoding starts. What native code still
spends cannot be interrupted from Python: the server adds a deadline around it.

What llguidance refuses is rewritten first (`structune.constrain.rewrite`): exactly where
an equivalent exists, else relaxed, which the schema must allow (`x-structune-relax`,
`structune.constrain.checked`); otherwise the schema is refused, naming the keywords. The
compiled grammar carries the full schema's check and what the grammar enforces: every
finished answer is validated against the full schema (`checked.check_answers`).

A schema with extracted fields (`structune.constrain.extractive`) compiles to a Lark grammar
instead, one per (schema, source text): its sources are part of the schema, and of the
cache key.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from structune.constrain.checked import (
    RELAX_KEY,
    Coverage,
    SchemaChecker,
    dialect_of,
    wants_relaxing,
)
from structune.constrain.distinct import DISTINCT_KEY, DistinctList, hold_distinct
from structune.constrain.extractive import SOURCES_KEY, has_extracted, strip_extractive
from structune.constrain.strict import strict_objects
from structune.errors import UserError
from structune.hashing import content_hash

log = logging.getLogger(__name__)

# An ordered extracted list can start its next item at any later piece of its source, so
# the Earley parser holds a few items per source piece in one row; llguidance's default
# (2,000) would stop a list over a source of ~700 words mid-answer. The writer refuses
# sources past `source_spans.MAX_ORDERED_PIECES`, which stays under this.
MAX_ITEMS_IN_ROW = 20_000

# Limits measured with llguidance 1.9 on 2 cores. JSON nesting: llguidance's parser stops at
# 128 levels with a bare "recursion limit exceeded", and Python's `json` raises RecursionError
# near 1,000; 100 leaves room for any real schema. Properties: an object's optional properties
# compile in quadratic time (1,000 take ~0.4 s, 5,000 ~7 s, and no engine limit bounds it).
MAX_SCHEMA_DEPTH = 100
MAX_SCHEMA_PROPERTIES = 1_000
# Lexer fuel (~50k units a ms) for building the grammar's regexes: a quarter of the default
# still fits a 5,000-value enum, and refuses what would take seconds (`^(a{1000}){1000}$`
# took ~3 s to its first mask with the default 1,000,000).
INITIAL_LEXER_FUEL = 250_000


def _engine_limits() -> Any:
    import llguidance

    return llguidance.LLParserLimits(
        max_items_in_row=MAX_ITEMS_IN_ROW,
        initial_lexer_fuel=INITIAL_LEXER_FUEL,
        verbose_errors=False,  # a dump of the parser's state would go to the client as-is
    )


@dataclass(frozen=True)
class SchemaGrammar:
    """A compiled grammar for one schema and one tokenizer; `matcher()` starts a decode.

    Attributes:
        coverage: what the grammar enforces, and what is only checked afterwards.
        checker: the full schema's check of a finished answer (`compile_schema` sets it).
        distinct: the lists whose items the decoder holds distinct (`constrain.distinct`).
    """

    grammar: str
    ll_tokenizer: Any
    coverage: Coverage = field(default_factory=Coverage)
    checker: SchemaChecker | None = field(default=None, compare=False)
    distinct: tuple[DistinctList, ...] = ()

    def matcher(self) -> Any:
        """A fresh matcher at the start of the grammar.

        Raises:
            UserError: the engine refuses the grammar (e.g. a source text past its size limits).
        """
        import llguidance

        matcher = llguidance.LLMatcher(self.ll_tokenizer, self.grammar, limits=_engine_limits())
        if matcher.is_error():
            raise UserError(
                f"constrained decoding cannot start: {matcher.get_error()}. Shorten the input "
                "that extracted fields copy from, or decode without constraints"
            )
        return matcher

    def accepts(self, text: str) -> bool:
        """Whether the grammar allows `text` as a whole answer."""
        import llguidance

        matcher = llguidance.LLMatcher(
            self.ll_tokenizer, self.grammar, limits=_engine_limits(), log_level=0
        )
        tokens = self.ll_tokenizer.tokenize_str(text)
        return matcher.try_consume_tokens(tokens) == len(tokens) and matcher.is_accepting()


@lru_cache(maxsize=8)
def llguidance_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a transformers (fast) `tokenizer`, which its grammars and token
    masks are built for; made once per tokenizer."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)  # ~0.4-0.9 s: worth caching


# Recently used grammars, keyed by the schema's full digest and the tokenizer's id; the
# tokenizer is kept beside its grammar so that a reused id can never match. Bounded: a
# server sees arbitrary client schemas.
_GRAMMARS: OrderedDict[tuple[str, int], tuple[Any, SchemaGrammar]] = OrderedDict()
_MAX_CACHED_GRAMMARS = 64
_GRAMMARS_LOCK = threading.Lock()


def schema_grammar(schema: Mapping[str, Any], ll_tokenizer: Any = None) -> str:
    """The llguidance grammar for `schema` (compact whitespace, objects closed to keys the
    schema does not declare: `strict_objects`), or a refusal.

    Extracted fields need their sources bound into the schema (`bind_sources`).

    Raises:
        UserError: the schema is not a JSON object, or uses a feature the engine cannot enforce.
    """
    check_schema_size(schema)
    schema = strict_objects(schema)
    if has_extracted(schema):
        return _extractive_grammar(schema, ll_tokenizer)
    return _json_grammar(schema, ll_tokenizer)


def _json_grammar(schema: Mapping[str, Any], ll_tokenizer: Any) -> str:
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema),
            defaults={"whitespace_flexible": False},
            # not for a schema's own `x-guidance` to change: a lenient engine would ignore
            # what it cannot enforce, and claim it
            overrides={"lenient": False, "coerce_one_of": False},
        )
    except ValueError as exc:
        raise UserError(f"the schema cannot be compiled: {exc}") from None
    _validate(grammar, ll_tokenizer)
    return grammar


@dataclass(frozen=True)
class SchemaPlan:
    """What the grammar compiles for a schema (`schema`), and what it covers."""

    schema: Any
    coverage: Coverage


def plan_schema(schema: Mapping[str, Any]) -> SchemaPlan:
    """What the grammar compiles for `schema` (objects closed, refused keywords rewritten
    or, where the schema allows it, relaxed), and what that grammar covers.

    Raises:
        UserError: keywords that need relaxing, in a schema that does not allow it; a schema
            that admits no value.
    """
    from structune.constrain.keywords import enforced_keywords
    from structune.constrain.rewrite import rewrite_schema

    check_schema_size(schema)  # before anything recursive
    full = full_schema(schema)
    rewrite = rewrite_schema(strict_objects(full), dialect_of(full))
    if rewrite.schema is False or not isinstance(rewrite.schema, Mapping):
        raise UserError(
            "the schema admits no value (a `not {}` or keywords that contradict each other), "
            "so no answer could be decoded: fix the schema"
        )
    relaxed = sorted({f"{n.keyword} (at {n.path})" for n in rewrite.relaxed})
    if relaxed and not wants_relaxing(schema):
        raise UserError(
            f"no grammar can enforce {_listed(relaxed)}; to decode under a grammar without "
            "them and check each answer against the full schema, pass relax=True "
            f'(Program.run) or put "{RELAX_KEY}": true at the top of the schema'
        )
    if relaxed:
        log.warning("decoding under a relaxed grammar; only checked after: %s", _listed(relaxed))
    coverage = Coverage(
        enforced=tuple(enforced_keywords(rewrite.schema)),
        rewritten=tuple(str(n) for n in rewrite.rewritten),
        checked=tuple(sorted({n.keyword for n in rewrite.relaxed})),
    )
    return SchemaPlan(rewrite.schema, coverage)


def full_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` without structune's own keys: what answers are validated against."""
    plain = strip_extractive(schema)
    return {k: v for k, v in plain.items() if k not in (RELAX_KEY, SOURCES_KEY)}


def _listed(items: list[str], most: int = 6) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def check_schema_size(schema: Mapping[str, Any]) -> None:
    """Refuse a schema nested deeper than `MAX_SCHEMA_DEPTH` or with more than
    `MAX_SCHEMA_PROPERTIES` properties, before anything recursive or costly touches it.

    Raises:
        UserError: the schema is not a JSON object, or is past one of those bounds.
    """
    if not isinstance(schema, Mapping):
        raise UserError(f"a JSON Schema must be an object, got {type(schema).__name__}")
    properties = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]  # iterative: a deep schema must not recurse
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise UserError(
                f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep; "
                "flatten it, or use $ref for recursive structures"
            )
        if isinstance(node, Mapping):
            if isinstance(node.get("properties"), Mapping):
                properties += len(node["properties"])
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    if properties > MAX_SCHEMA_PROPERTIES:
        raise UserError(
            f"the schema has {properties} properties; at most {MAX_SCHEMA_PROPERTIES} "
            "can be compiled in reasonable time: split it into smaller schemas"
        )


def _validate(grammar: str, ll_tokenizer: Any) -> None:
    import llguidance

    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, ll_tokenizer, limits=_engine_limits()
    )
    if failed or messages:
        raise UserError(
            "constrained decoding cannot enforce this schema: "
            + "; ".join(_engine_message(m) for m in messages)
            + ". Remove or simplify that part of the schema, or decode without constraints"
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
    key = content_hash(shape, length=64)
    if key not in _VALIDATED:
        whole = extractive_grammar(shape, prune=False)  # placeholders fill no number
        _validate(llguidance.LLMatcher.grammar_from_lark(whole), ll_tokenizer)
        _VALIDATED[key] = None
        if len(_VALIDATED) > _MAX_CACHED_GRAMMARS:
            _VALIDATED.popitem(last=False)
    return llguidance.LLMatcher.grammar_from_lark(lark)


def compile_schema(schema: Mapping[str, Any], tokenizer: Any) -> SchemaGrammar:
    """Compile `schema` for `tokenizer` (cached), or refuse it with the reason.

    Raises:
        UserError: the schema cannot be enforced, or is past the bounds on what it may cost.
    """
    cached = cached_grammar(schema, tokenizer)
    if cached is not None:
        return cached
    ll_tokenizer = llguidance_tokenizer(tokenizer)
    # Distinct lists are held by the decoder beside the grammar (`constrain.distinct`);
    # its walks are recursive, so the schema's size is bounded first.
    check_schema_size(schema)
    held, distinct = hold_distinct(schema)
    if has_extracted(held):  # tried once per shape, not per source (`_extractive_grammar`)
        grammar = schema_grammar(held, ll_tokenizer)
        compiled = SchemaGrammar(grammar, ll_tokenizer, checker=_checker(schema), distinct=distinct)
    else:
        plan = plan_schema(held)
        grammar = _json_grammar(plan.schema, ll_tokenizer)
        by_decoder = {"uniqueItems" if d.by is None else DISTINCT_KEY for d in distinct}
        coverage = replace(
            plan.coverage, enforced=tuple(sorted({*plan.coverage.enforced, *by_decoder}))
        )
        compiled = SchemaGrammar(grammar, ll_tokenizer, coverage, _checker(schema), distinct)
        _try_decoding(compiled)
    with _GRAMMARS_LOCK:
        _GRAMMARS[(content_hash(schema, length=64), id(tokenizer))] = (tokenizer, compiled)
        if len(_GRAMMARS) > _MAX_CACHED_GRAMMARS:
            _GRAMMARS.popitem(last=False)
    return compiled


def _checker(schema: Mapping[str, Any]) -> SchemaChecker:
    return SchemaChecker(full_schema(schema))


def cached_grammar(schema: Mapping[str, Any], tokenizer: Any) -> SchemaGrammar | None:
    """The grammar `compile_schema` made for `schema` and `tokenizer`, if it is still cached.

    Raises:
        UserError: the schema is not an object, or is past `check_schema_size`'s bounds.
    """
    check_schema_size(schema)  # before hashing it: json.dumps recurses
    key = (content_hash(schema, length=64), id(tokenizer))
    with _GRAMMARS_LOCK:  # the server compiles on one thread and decodes on another
        cached = _GRAMMARS.get(key)
        if cached is None or cached[0] is not tokenizer:
            return None
        _GRAMMARS.move_to_end(key)
        return cached[1]


def _try_decoding(grammar: SchemaGrammar, steps: int = 8) -> None:
    """Walk the grammar's first `steps` tokens (the lowest allowed id each time).

    llguidance builds lexer states lazily, and its limits trip while it consumes tokens
    (`^a{1000000}$`: "too many expressions constructed" at the first token; a required
    `$ref` to itself: "too many items"). Tripping them here turns a schema's real cost, or
    its refusal, into a compile error instead of a failure mid-decode.
    """
    import numpy as np

    matcher = grammar.matcher()
    vocab = grammar.ll_tokenizer.vocab_size
    for _ in range(steps):
        mask = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.flatnonzero(np.unpackbits(mask, bitorder="little")[:vocab])
        if matcher.is_error() or matcher.is_stopped() or not allowed.size:
            break
        matcher.consume_token(int(allowed[0]))
    if matcher.is_error():
        raise UserError(
            f"constrained decoding cannot start: {_engine_message(matcher.get_error())}. "
            "The schema admits no value, or is too complex: simplify it, or decode without "
            "constraints"
        )


def _engine_message(text: str) -> str:
    """An llguidance message on one line, without its marker for withheld details."""
    return " ".join(text.replace("<non-verbose/>", "").split())
