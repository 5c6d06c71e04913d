"""Extractive fields: the marker in the schema, the check after parsing (Program.parse,
re-asks, recording), and the grammar that lets a local model only copy from its input."""

from __future__ import annotations

import json
import random
import re
from typing import Annotated

import pydantic
import pytest

from structune import CallableLLM, DatasetStore, InvalidOutput, Program, UserError
from structune.constrain import (
    Extracted,
    bind_sources,
    check_extracted,
    extracted_fields,
    strip_extractive,
    with_extraction,
)
from structune.constrain.extractive import MARKER_KEY, SOURCES_KEY, pieces
from structune.constrain.grammar import compile_schema
from structune.llms.local import LocalLLM
from structune.program import canonical_json
from structune.record import record


class Citation(pydantic.BaseModel):
    author: Annotated[str, Extracted()]
    year: int
    quote: Annotated[str, Extracted(source="context", mode="chars")] | None = None


class Response(pydantic.BaseModel):
    citations: list[Citation]
    keywords: list[Annotated[str, Extracted(source="context", ordered=True)]] = []


PROGRAM = Program("Context:\n{context}\nQuestion: {question}", Response)
CONTEXT = (
    'As Neumann (2020) showed, "Rücklé" et al.\\path reached 3.5%;\n'
    "see (Brown et al., 2020) and Rocktäschel's\tnotes."
)
INPUTS = {"context": CONTEXT, "question": "Who is cited?"}


def answer(*citations: dict, keywords: list[str] | None = None) -> str:
    """An answer as a constrained decoder writes it: compact UTF-8 JSON."""
    return canonical_json({"citations": list(citations), "keywords": keywords or []})


# --- the marker -------------------------------------------------------------------------


def test_the_marker_travels_in_the_schema_in_nested_models_and_list_items():
    schema = Response.model_json_schema()
    author = schema["$defs"]["Citation"]["properties"]["author"]
    assert author[MARKER_KEY] == {"source": None, "mode": "words", "ordered": False}
    keywords = schema["properties"]["keywords"]["items"]
    assert keywords[MARKER_KEY] == {"source": "context", "mode": "words", "ordered": True}
    paths = {f.path: f.marker for f in extracted_fields(json.loads(json.dumps(schema)))}
    assert paths == {
        "citations[].author": Extracted(),
        "citations[].quote": Extracted(source="context", mode="chars"),
        "keywords[]": Extracted(source="context", ordered=True),
    }


def test_a_marker_on_something_other_than_a_string_or_integer_is_refused():
    with pytest.raises(UserError, match="only str and int fields"):

        class Bad(pydantic.BaseModel):
            share: Annotated[float, Extracted()]

    class Sneaky(pydantic.BaseModel):  # a marker written by hand into the schema
        share: float = pydantic.Field(json_schema_extra={MARKER_KEY: Extracted().to_json()})

    with pytest.raises(UserError, match="share is marked as extracted but is not a string or"):
        Program("{text}", Sneaky)


def test_marker_options_are_checked():
    with pytest.raises(UserError, match="'words' or 'chars'"):
        Extracted(mode="tokens")  # type: ignore[arg-type]

    class Unknown(pydantic.BaseModel):
        name: Annotated[str, Extracted(source="document")]

    with pytest.raises(UserError, match="'document', which is not a template variable"):
        Program("{context}", Unknown)

    class Lone(pydantic.BaseModel):
        name: Annotated[str, Extracted(ordered=True)]

    with pytest.raises(UserError, match="only applies to list items"):
        Program("{context}", Lone)


# --- checked after parsing --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Neumann",
        "(Brown et al.,",  # punctuation at either end is forgiven
        "Brown   et\nal",  # and so is whitespace
        '"Rücklé" et al.\\path',  # quotes, non-ASCII letters, a backslash
        "Rocktäschel's",
        "",
    ],
)
def test_copied_values_pass(value):
    text = answer({"author": value, "year": 2020})
    assert PROGRAM.parse(text, INPUTS).citations[0].author == value
    assert check_extracted(PROGRAM.json_schema, json.loads(text), INPUTS) == []


@pytest.mark.parametrize(
    "value",
    ["Nemeth", "Neu", "Brown and Neumann", "neumann", "Rucklé", "Neumann (2021)"],
)
def test_invented_and_misspelt_values_are_named_with_their_path(value):
    text = answer({"author": "Neumann", "year": 2020}, {"author": value, "year": 2020})
    with pytest.raises(InvalidOutput) as info:
        PROGRAM.parse(text, INPUTS)
    assert info.value.reason.startswith(
        f"citations[1].author: {json.dumps(value, ensure_ascii=False)} is not in the source"
    )
    assert PROGRAM.parse(text).citations[1].author == value  # without inputs: schema only


def test_chars_mode_is_exact_and_ordered_lists_follow_the_text():
    ok = answer(
        {"author": "Brown", "year": 2020, "quote": "eumann (20"}, keywords=["Neumann", "see"]
    )
    assert PROGRAM.parse(ok, INPUTS)
    loose = answer({"author": "Brown", "year": 2020, "quote": "Neumann  (2020)"})
    with pytest.raises(InvalidOutput, match=r"citations\[0\]\.quote: .* source 'context'"):
        PROGRAM.parse(loose, INPUTS)
    backwards = answer({"author": "Brown", "year": 2020}, keywords=["see", "Neumann"])
    with pytest.raises(
        InvalidOutput, match=r"keywords\[1\]: \"Neumann\" is not in .* keywords\[0\]"
    ):
        PROGRAM.parse(backwards, INPUTS)


def test_a_missing_or_empty_source_is_a_user_error():
    text = answer({"author": "Neumann", "year": 2020})
    with pytest.raises(UserError, match="'context', which is empty"):
        PROGRAM.parse(text, {"context": "  ", "question": "q"})
    with pytest.raises(UserError, match="'context', which is missing"):
        check_extracted(PROGRAM.json_schema, json.loads(text), {"question": "q"})


def test_a_re_ask_shows_the_model_which_value_it_invented():
    seen = []

    def teacher(messages):
        seen.append(messages)
        name = "Nemeth" if len(seen) == 1 else "Neumann"
        return answer({"author": name, "year": 2020})

    result = PROGRAM.run(CallableLLM(teacher), INPUTS, max_retries=1)
    assert result.citations[0].author == "Neumann"
    assert 'citations[0].author: "Nemeth" is not in the source' in seen[1][-1]["content"]


def test_recording_marks_invented_answers_invalid(tmp_path):
    def teacher(messages):
        invented = "Hinton" in messages[-1]["content"]
        return answer({"author": "Nemeth" if invented else "Neumann", "year": 2020})

    inputs = [INPUTS, {"context": CONTEXT + " Hinton too.", "question": "q"}]
    with DatasetStore(tmp_path / "d.sqlite") as store:
        summary = record(PROGRAM, CallableLLM(teacher), inputs, store=store, progress=False)
        assert (summary.valid, summary.invalid) == (1, 1)
        (bad,) = store.examples(PROGRAM.name, valid=False)
        assert '"Nemeth" is not in the source' in bad.error
        assert store.schema(bad.schema_hash) == PROGRAM.json_schema  # the marker is kept

        with pytest.raises(UserError, match="empty"):
            record(PROGRAM, CallableLLM(teacher), [{"context": "", "question": "q"}], store=store)


def test_remote_backends_get_the_schema_without_markers_or_sources():
    bound = bind_sources(PROGRAM.json_schema, INPUTS)
    assert bound[SOURCES_KEY] == {"context": CONTEXT, "question": "Who is cited?"}
    stripped = json.dumps(strip_extractive(bound))
    assert MARKER_KEY not in stripped and SOURCES_KEY not in stripped


# --- enforced while decoding ------------------------------------------------------------


def accepts(grammar, tokenizer, text: str) -> bool:
    matcher = grammar.matcher()
    tokens = tokenizer.encode(text, add_special_tokens=False)
    return all(matcher.consume_token(t) for t in tokens) and matcher.is_accepting()


def takes_prefix(grammar, tokenizer, text: str) -> bool:
    """Whether the grammar lets an answer start with `text` (a dead end would still take it)."""
    matcher = grammar.matcher()
    return all(matcher.consume_token(t) for t in tokenizer.encode(text, add_special_tokens=False))


def test_the_grammar_accepts_copies_and_rejects_misspellings(tokenizer):
    grammar = compile_schema(PROGRAM.decoding_schema(INPUTS), tokenizer)
    good = answer({"author": "Neumann", "year": 2020}, keywords=["Brown et al."])
    assert accepts(grammar, tokenizer, good)
    for bad in [
        answer({"author": "Nemeth", "year": 2020}),
        answer({"author": "Neu", "year": 2020}),
        answer({"author": "Neumann", "year": 2020}, keywords=["Hinton"]),
    ]:
        assert not accepts(grammar, tokenizer, bad)
    assert not accepts(grammar, tokenizer, json.dumps(json.loads(good)))  # spaces, \u escapes


def test_every_span_the_grammar_allows_passes_the_check(tokenizer):
    grammar = compile_schema(PROGRAM.decoding_schema(INPUTS), tokenizer)
    rng = random.Random(0)
    for mode in ("words", "chars"):
        units = pieces(CONTEXT, mode)
        for _ in range(15):
            start = rng.randrange(len(units))
            span = "".join(units[start : start + rng.randrange(1, 8)])
            citation = (
                {"author": span, "year": 1}
                if mode == "words"
                else {"author": "Brown", "year": 1, "quote": span}
            )
            text = answer(citation)
            assert accepts(grammar, tokenizer, text), span
            assert PROGRAM.parse(text, INPUTS)


def test_an_unbound_schema_is_refused_for_decoding(tokenizer):
    with pytest.raises(UserError, match="bind_sources"):
        compile_schema(PROGRAM.json_schema, tokenizer)


def test_non_empty_is_enforced_and_other_string_keywords_are_refused(tokenizer):
    grammar = compile_schema(NAMES.decoding_schema({"text": TEXTS[0]}), tokenizer)
    assert accepts(grammar, tokenizer, '{"names":["Ada"],"exact":""}')
    assert not accepts(grammar, tokenizer, '{"names":[""],"exact":""}')

    class Coded(pydantic.BaseModel):
        code: Annotated[str, Extracted(), pydantic.Field(pattern="^[A-Z]+$")]

    schema = Program("{text}", Coded).decoding_schema({"text": "ABC"})
    with pytest.raises(UserError, match="cannot enforce pattern at code"):
        compile_schema(schema, tokenizer)


class Authors(pydantic.BaseModel):
    authors: list[Annotated[str, Extracted(ordered=True)]]


AUTHORS = Program("Reference: {text}", Authors)
REFERENCE = 'Ahuja, A., Barr, I., and "Brussee" (2020). Imitating Ahuja, 5\u00b0 Rücklé.'


def authors(*names: str) -> str:
    return canonical_json({"authors": list(names)})


def test_an_ordered_grammar_follows_the_source(tokenizer):
    grammar = compile_schema(AUTHORS.decoding_schema({"text": REFERENCE}), tokenizer)
    for good in [
        authors(),
        authors("Ahuja", "Barr", '"Brussee"'),
        authors("Ahuja", "Ahuja"),  # the source names Ahuja twice
        authors("Ahuja, A", "2020)."),
        authors("Barr", "Ahuja", "Rücklé"),  # the second Ahuja
    ]:
        assert accepts(grammar, tokenizer, good), good
        assert AUTHORS.parse(good, {"text": REFERENCE})
    for bad in [
        authors("Barr", "Ahuja", "Barr"),  # out of order
        authors("Ahuja", "Ahuja", "Ahuja"),  # repeated more often than the source repeats it
        authors("Ahuja, A.", "A."),  # overlaps the previous item
        authors(" Barr"),  # an item starts and ends on a word or punctuation
        authors("Barr "),
        authors(""),
        authors("Rucklé"),
    ]:
        assert not accepts(grammar, tokenizer, bad), bad


def test_the_ordered_grammar_accepts_exactly_what_the_check_accepts(tokenizer):
    grammar = compile_schema(AUTHORS.decoding_schema({"text": REFERENCE}), tokenizer)
    units = pieces(REFERENCE, "words")
    words = [i for i, p in enumerate(units) if p[0].isalnum()]
    rng = random.Random(0)
    agreed = {True: 0, False: 0}
    for _ in range(60):
        items = []
        for _ in range(rng.randrange(1, 4)):  # spans from a word to a word, any order
            start = rng.choice(words)
            end = rng.choice([w for w in words if w >= start][:3])
            items.append("".join(units[start : end + 1]))
        text = authors(*items)
        checked = check_extracted(AUTHORS.json_schema, json.loads(text), {"text": REFERENCE}) == []
        assert accepts(grammar, tokenizer, text) == checked, items
        agreed[checked] += 1
    assert min(agreed.values()) >= 10  # both answers were exercised


def test_an_ordered_list_over_a_too_long_source_is_refused(tokenizer):
    from structune.constrain.source_spans import MAX_ORDERED_PIECES

    long_text = "word " * MAX_ORDERED_PIECES
    with pytest.raises(UserError, match=r"shorten it .* or drop ordered=True"):
        compile_schema(AUTHORS.decoding_schema({"text": long_text}), tokenizer)

    class Counted(pydantic.BaseModel):
        authors: list[Annotated[str, Extracted(ordered=True)]] = pydantic.Field(max_length=3)

    schema = Program("{text}", Counted).decoding_schema({"text": REFERENCE})
    with pytest.raises(UserError, match="maxItems 3 at authors on an ordered"):
        compile_schema(schema, tokenizer)


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=3)


class Names(pydantic.BaseModel):
    names: list[Annotated[str, Extracted(source="text"), pydantic.Field(min_length=1)]] = (
        pydantic.Field(max_length=2)
    )
    exact: Annotated[str, Extracted(source="text", mode="chars")]


NAMES = Program("Who is named in: {text}", Names)
TEXTS = [
    'Ada Lovelace met "Charles Babbage" in 1833.',
    "Rücklé\\Neumann wrote\n'tabs'\there.",
    "Emmy Noether, Göttingen.",
]


def test_a_tiny_random_model_only_ever_copies_from_its_own_row(tiny_llm):
    inputs = [{"text": t} for t in TEXTS]
    completions = tiny_llm.complete_many(
        [NAMES.messages(i) for i in inputs],
        max_tokens=120,
        json_schema=[NAMES.decoding_schema(i) for i in inputs],
    )
    assert any(c.finish_reason == "stop" for c in completions)  # 120 tokens is plenty here
    for item, completion in zip(inputs, completions, strict=True):
        if completion.finish_reason == "length":
            continue  # cut off: reported as such, and not parsed
        result = NAMES.parse(completion.text, item)  # raises if a value is not in its own row
        assert result.exact in item["text"]
    short = tiny_llm.complete(
        NAMES.messages(inputs[0]), max_tokens=3, json_schema=NAMES.decoding_schema(inputs[0])
    )
    assert short.finish_reason == "length"


def test_program_run_constrained_decodes_copies(tiny_llm):
    result = NAMES.run(tiny_llm, {"text": TEXTS[2]}, max_tokens=120, constrained=True)
    assert result.exact in TEXTS[2]  # and run checked the names against the text


def test_recording_with_a_local_teacher_decodes_each_row_under_its_own_text(tiny_llm, tmp_path):
    inputs = [{"text": t} for t in TEXTS]
    with DatasetStore(tmp_path / "d.sqlite") as store:
        summary = record(NAMES, tiny_llm, inputs, store=store, max_tokens=120, constrained=True)
        assert summary.recorded == 3
        for example in store.examples(NAMES.name):
            assert example.valid or example.error.startswith("truncated"), example.error


def test_a_tiny_random_model_cannot_loop_in_an_ordered_list(tiny_llm):
    inputs = [{"text": t} for t in [REFERENCE, *TEXTS]]
    completions = tiny_llm.complete_many(
        [AUTHORS.messages(i) for i in inputs],
        max_tokens=100,  # more than any of these sources has tokens
        json_schema=[AUTHORS.decoding_schema(i) for i in inputs],
    )
    for item, completion in zip(inputs, completions, strict=True):
        assert completion.finish_reason == "stop", completion.text
        assert not completion.closed_early  # it ended by itself, not as the budget ran out
        AUTHORS.parse(completion.text, item)  # in the source and in order


class Cite(pydantic.BaseModel):
    author: Annotated[str, Extracted(ordered=True)]
    year: Annotated[int, Extracted()]


class Cites(pydantic.BaseModel):
    citations: list[Cite]


CITES = Program("Reference: {text}", Cites)
SOURCE_CITING = "Ahuja (2020) and Barr (2021) build on Ahuja et al. (2019)."


def cites(*pairs: tuple[str, int]) -> str:
    return canonical_json({"citations": [{"author": a, "year": y} for a, y in pairs]})


def test_a_list_of_objects_follows_the_source_by_its_ordered_field(tokenizer):
    grammar = compile_schema(CITES.decoding_schema({"text": SOURCE_CITING}), tokenizer)
    for good in [
        cites(),
        cites(("Ahuja", 2020), ("Barr", 2021), ("Ahuja", 2019)),
        cites(("Barr", 2019), ("Ahuja et al", 2020)),  # years are free: they are not ordered
    ]:
        assert accepts(grammar, tokenizer, good), good
        assert CITES.parse(good, {"text": SOURCE_CITING})
    for bad, error in [
        (cites(("Barr", 2021), ("Barr", 2021)), r"citations\[1\].author: .Barr. is not .* after"),
        (cites(("Ahuja", 2020), ("Ahuja", 2019), ("Ahuja", 2019)), r"citations\[2\].author"),
        (cites(("Ahuja", 2022)), "2022 is not a number"),
    ]:
        assert not accepts(grammar, tokenizer, bad), bad
        with pytest.raises(InvalidOutput, match=error):
            CITES.parse(bad, {"text": SOURCE_CITING})


def test_ordering_objects_needs_one_ordered_field_and_required_members(tokenizer):
    class Loose(pydantic.BaseModel):
        author: Annotated[str, Extracted(ordered=True)]
        note: str = ""

    class Both(pydantic.BaseModel):
        author: Annotated[str, Extracted(ordered=True)]
        title: Annotated[str, Extracted(ordered=True)]

    for item, error in [(Loose, "note optional"), (Both, "by one field, not 2")]:

        class Listed(pydantic.BaseModel):
            items: list[item]  # type: ignore[valid-type]

        schema = Program("{text}", Listed).decoding_schema({"text": SOURCE_CITING})
        with pytest.raises(UserError, match=error):
            compile_schema(schema, tokenizer)


# A capital and a small letter, then letters: a surname's shape, not "SAMSum" or "E2E".
NAME = r"[A-Z][a-zü][^\W\d_]*"


class Named(pydantic.BaseModel):
    author: Annotated[str, Extracted(ordered=True, pattern=NAME)]
    year: Annotated[int, Extracted()]


class NamedList(pydantic.BaseModel):
    citations: list[Named]


NAMED = Program("Reference: {text}", NamedList)
SOURCE_NAMING = "SAMSum (Gliwa et al., 2019) and E2E NLG (Novikova et al., 2017); see Gliwa."


def test_a_pattern_travels_in_the_marker_and_bad_patterns_are_refused():
    assert "pattern" not in Extracted().to_json()  # unpatterned schemas keep their hashes
    marker = NAMED.json_schema["$defs"]["Named"]["properties"]["author"][MARKER_KEY]
    assert Extracted.from_json(marker) == Extracted(ordered=True, pattern=NAME)
    with pytest.raises(UserError, match="must be a regular expression, got '\\[A-Z'"):
        Extracted(pattern="[A-Z")

    class Numbered(pydantic.BaseModel):
        year: Annotated[int, Extracted(pattern="20..")]

    with pytest.raises(UserError, match="year is an integer marked ordered or with a pattern"):
        Program("{text}", Numbered)


def test_a_copy_without_the_patterns_shape_is_named():
    inputs = {"text": SOURCE_NAMING}
    good = cites(("Gliwa", 2019), ("Novikova", 2017), ("Gliwa", 2019))
    assert check_extracted(NAMED.json_schema, json.loads(good), inputs) == []
    for author in ["SAMSum", "E2E", "al", "Gliwa et al"]:  # all copied from the source
        text = cites((author, 2019))
        with pytest.raises(InvalidOutput, match=f'author: "{author}" does not match the pattern'):
            NAMED.parse(text, inputs)
    with pytest.raises(InvalidOutput, match='"Glwa" is not in the source'):  # not both
        NAMED.parse(cites(("Glwa", 2019)), inputs)


def test_a_patterned_grammar_accepts_exactly_the_matching_copies(tokenizer):
    """Ordered, and relaxed to any order: the grammar and the check agree on every list."""
    units = pieces(SOURCE_NAMING, "words")
    words = [i for i, p in enumerate(units) if p[0].isalnum()]
    spans = ["".join(units[a : b + 1]) for a in words for b in words if a <= b <= a + 4]
    shaped = [s for s in spans if re.fullmatch(NAME, s)]
    rng = random.Random(0)
    for extraction in ("marked", "unordered"):
        schema = with_extraction(NAMED.decoding_schema({"text": SOURCE_NAMING}), extraction)
        grammar = compile_schema(schema, tokenizer)
        agreed = {True: 0, False: 0}
        for _ in range(40):
            # Spans from a word to a word, mostly name-shaped, in any order.
            authors = [rng.choice(shaped if rng.random() < 0.8 else spans) for _ in range(2)]
            text = cites(*[(a, 2019) for a in authors])
            checked = check_extracted(schema, json.loads(text), {"text": SOURCE_NAMING}) == []
            assert accepts(grammar, tokenizer, text) == checked, (extraction, authors)
            agreed[checked] += 1
        assert min(agreed.values()) >= 5, agreed  # both answers were exercised


def test_a_pattern_nothing_in_the_source_matches_leaves_only_the_empty_list(tokenizer):
    inputs = {"text": "BERT (2019) and GPT (2020)."}
    grammar = compile_schema(NAMED.decoding_schema(inputs), tokenizer)
    assert accepts(grammar, tokenizer, cites())
    assert not takes_prefix(grammar, tokenizer, '{"citations":[{')

    class Required(pydantic.BaseModel):  # a list that needs an item: refused, saying why
        names: list[Annotated[str, Extracted(ordered=True, pattern=NAME)]] = pydantic.Field(
            min_length=1
        )

    program = Program("Reference: {text}", Required)
    grammar = compile_schema(program.decoding_schema({"text": SOURCE_NAMING}), tokenizer)
    assert accepts(grammar, tokenizer, '{"names":["Gliwa","Novikova"]}')
    assert not accepts(grammar, tokenizer, '{"names":[]}')
    with pytest.raises(UserError, match="no text that matches the pattern"):
        compile_schema(program.decoding_schema(inputs), tokenizer)


def test_an_ordered_field_outside_a_list_is_refused_wherever_its_model_comes_first():
    class FirstThenList(pydantic.BaseModel):
        first: Cite
        citations: list[Cite]

    class ListThenFirst(pydantic.BaseModel):
        citations: list[Cite]
        first: Cite

    for model in (FirstThenList, ListThenFirst):
        with pytest.raises(UserError, match=r"first\.author is marked ordered"):
            Program("{text}", model)


def test_a_tiny_random_model_cannot_loop_in_a_list_ordered_by_a_field(tiny_llm):
    inputs = [{"text": t} for t in [SOURCE_CITING, REFERENCE]]
    completions = tiny_llm.complete_many(
        [CITES.messages(i) for i in inputs],
        max_tokens=300,  # more than a list with an item per word of these sources takes
        json_schema=[CITES.decoding_schema(i) for i in inputs],
    )
    for item, completion in zip(inputs, completions, strict=True):
        assert completion.finish_reason == "stop" and not completion.closed_early
        CITES.parse(completion.text, item)


# --- decoding modes and their evaluation ------------------------------------------------


def test_the_prompt_shows_the_schema_without_markers():
    class Authors(pydantic.BaseModel):  # the same model, unmarked
        authors: list[str]

    marked = AUTHORS.messages({"text": REFERENCE})
    assert MARKER_KEY not in json.dumps(marked)
    assert marked == Program("Reference: {text}", Authors).messages({"text": REFERENCE})


def test_extraction_modes_keep_relax_or_drop_the_markers():
    from structune.constrain import with_extraction

    bound = AUTHORS.decoding_schema({"text": REFERENCE})
    assert with_extraction(bound, "marked") == bound
    relaxed = with_extraction(bound, "unordered")
    assert relaxed["properties"]["authors"]["items"][MARKER_KEY]["ordered"] is False
    assert relaxed[SOURCES_KEY] == bound[SOURCES_KEY]
    assert with_extraction(bound, "off") == strip_extractive(bound)
    with pytest.raises(UserError, match="'marked', 'unordered' or 'off'"):
        with_extraction(bound, "loose")


def test_a_constrained_wrapper_without_a_schema_needs_one_per_call(tiny_llm):
    from structune.llms.base import Constrained

    with pytest.raises(UserError, match="use it in compare"):
        Constrained(tiny_llm).complete(AUTHORS.messages({"text": REFERENCE}))


def test_compare_scores_fields_exact_matches_and_invented_values(tiny_llm):
    from structune.evaluate.compare import compare
    from structune.llms.base import Constrained

    inputs = [{"text": REFERENCE}, {"text": TEXTS[0]}]
    gold = [{"authors": ["Ahuja", "Barr", "Brussee"]}, {"authors": ["Ada Lovelace"]}]
    answers = iter([authors("Ahuja", "Barr", "Brussee"), authors("Ada", "Babbage", "Turing")])
    teacher = CallableLLM(lambda messages: next(answers), model_id="scripted")
    models = {
        "scripted": teacher,
        "json grammar": Constrained(tiny_llm, extraction="off"),
        "extractive": Constrained(tiny_llm, extraction="unordered"),
        "ordered": Constrained(tiny_llm),
    }
    result = compare(AUTHORS, models, inputs, max_tokens=100, gold=gold)
    scripted = result.scores[0]
    assert (scripted.valid, scripted.marked, scripted.not_in_source) == (1, 6, 1)  # Turing
    assert scripted.field_correct == {"authors": 1} and scripted.exact == 1
    assert result.answers["scripted"][1].error.startswith('authors[2]: "Turing" is not in')
    for score in result.scores[2:]:  # copies only, and an ordered list cannot loop
        assert score.not_in_source == 0 and score.parsed == score.answers
    assert result.scores[3].truncated == 0 and result.scores[3].closed_early == 0
    assert "not in source" in result.table() and "exact" in result.table()
    with pytest.raises(UserError, match="gold answer 0 is not a valid Authors"):
        compare(AUTHORS, {"scripted": teacher}, inputs[:1], gold=[{"authors": "Ahuja"}])


class Cited(pydantic.BaseModel):
    author: Annotated[str, Extracted()]
    year: Annotated[int, Extracted()]


CITED = Program("Context: {text}", Cited)


def test_a_marked_integer_is_one_of_the_numbers_in_its_source(tokenizer):
    text = "As Hu et al. (2021a) and Li (2019) show, 3.5% is enough."
    grammar = compile_schema(CITED.decoding_schema({"text": text}), tokenizer)
    for year in (2021, 2019, 3, 5):
        answer = canonical_json({"author": "Hu", "year": year})
        assert accepts(grammar, tokenizer, answer)
        assert CITED.parse(answer, {"text": text}).year == year
    for year in (2020, 20, 35, 202):
        answer = canonical_json({"author": "Hu", "year": year})
        assert not accepts(grammar, tokenizer, answer)
        with pytest.raises(InvalidOutput, match=f"year: {year} is not a number in the source"):
            CITED.parse(answer, {"text": text})


def test_a_marked_integer_keeps_the_schemas_bounds(tokenizer):
    class Dated(pydantic.BaseModel):
        year: Annotated[int, Extracted()] = pydantic.Field(ge=1800, lt=2030)

    class Many(pydantic.BaseModel):
        dated: list[Dated]

    program = Program("Context: {text}", Many)
    text = "Table 3 (page 17) follows Li (2019), Hu (2031) and Newton (1687)."
    grammar = compile_schema(program.decoding_schema({"text": text}), tokenizer)
    assert accepts(grammar, tokenizer, '{"dated":[{"year":2019}]}')
    for year in (3, 17, 2031, 1687):
        assert not accepts(grammar, tokenizer, f'{{"dated":[{{"year":{year}}}]}}')
        with pytest.raises(InvalidOutput, match="year"):
            program.parse(f'{{"dated":[{{"year":{year}}}]}}', {"text": text})
    # no number within the bounds: the list can only be empty
    grammar = compile_schema(program.decoding_schema({"text": "See Table 3."}), tokenizer)
    assert accepts(grammar, tokenizer, '{"dated":[]}')
    assert not accepts(grammar, tokenizer, '{"dated":[{"year":3}]}')


def test_a_list_of_objects_whose_number_the_source_lacks_can_only_be_empty(tokenizer):
    class Many(pydantic.BaseModel):
        cited: list[Cited]

    program = Program("Context: {text}", Many)
    from structune.tasks.citations import sourced_citation_program as bounded

    for schema in (
        program.decoding_schema({"text": "No years here."}),
        # the citation program, ordered and not, over a chunk whose numbers are no years
        bounded.decoding_schema({"context_str": "PPO-ptx (Figure 8), page 26.", "query_str": "?"}),
        with_extraction(
            bounded.decoding_schema({"context_str": "Figure 8, page 26.", "query_str": "?"}),
            "unordered",
        ),
    ):
        grammar = compile_schema(schema, tokenizer)
        key = next(iter(schema["properties"]))
        assert accepts(grammar, tokenizer, f'{{"{key}":[]}}')
        # no item can be opened: one could never be finished (the decoder stopped there)
        assert not takes_prefix(grammar, tokenizer, f'{{"{key}":[{{"')

    class AtLeastOne(pydantic.BaseModel):
        cited: list[Cited] = pydantic.Field(min_length=1)

    needs_one = Program("Context: {text}", AtLeastOne).decoding_schema({"text": "No years."})
    with pytest.raises(UserError, match="nothing to copy"):
        compile_schema(needs_one, tokenizer)

    class Counted(pydantic.BaseModel):
        counts: list[Annotated[int, Extracted(ordered=True)]]

    with pytest.raises(UserError, match="integer marked ordered"):
        Program("{text}", Counted)
