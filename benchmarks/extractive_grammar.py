"""What an extractive grammar costs per request, next to the JSON grammar alone.

    .venv/bin/python benchmarks/extractive_grammar.py [--words 1000] [--repeat 6] [--model DIR]
        [--pdf PATH]

Extracted fields copy from each request's own input, so their grammar is built per
(schema, source text) and cannot be shared the way a plain schema grammar is. For a source
of `--words` words from `--pdf` (the LoRA paper, e.g. `--pdf ../shared/data/papers/lora.pdf`
where this workplace keeps it; plain words without it) and the bundled model's tokenizer,
three grammars side by side:

- JSON grammar: a citation schema without markers (what `constrained=True` costs anyway);
- extractive: the same schema with `author` marked `Extracted()` (a span of the source);
- ordered list: `keywords: list[Annotated[str, Extracted(ordered=True)]]` (a rule per piece
  of the source: each item after the previous one);
- the last two with a surname's shape (`pattern=SURNAME_PATTERN`, the sourced citation
  program's author): the source's runs that match, one literal each.

Timed: compiling (`schema_grammar`: Lark text + compile; a schema is validated once, on the
first run only), starting a matcher, its first mask, the first mask inside the copied
string (the lexer builds its states for the source lazily), and the mean mask per token
while copying ten words (one surname, under a pattern). Medians over the `--repeat` runs
after the first; each run uses a different source, so no grammar comes from a cache. A
decode step of the 135M model takes ~20 ms on this CPU (benchmarks/constrained_decoding.py),
the yardstick for the masks.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import pydantic

from structune.constrain import Extracted, bind_sources
from structune.constrain.grammar import llguidance_tokenizer, schema_grammar
from structune.errors import UserError
from structune.models.loading import resolve_model
from structune.tasks.citations import SURNAME_PATTERN


class PlainCitation(pydantic.BaseModel):
    author: str
    year: int
    desc: str


class Citation(pydantic.BaseModel):
    author: Annotated[str, Extracted(source="context")]
    year: int
    desc: str


class Keywords(pydantic.BaseModel):
    keywords: list[Annotated[str, Extracted(source="context", ordered=True)]]


class Surname(pydantic.BaseModel):
    author: Annotated[str, Extracted(source="context", pattern=SURNAME_PATTERN)]
    year: int
    desc: str


class Surnames(pydantic.BaseModel):
    names: list[Annotated[str, Extracted(source="context", ordered=True, pattern=SURNAME_PATTERN)]]


def citations_of(item: type[pydantic.BaseModel]) -> dict[str, Any]:
    class Response(pydantic.BaseModel):
        citations: list[item]  # type: ignore[valid-type]

    return Response.model_json_schema()


GRAMMARS = {  # name → (schema, the answer's text up to the copied string)
    "JSON grammar": (citations_of(PlainCitation), '{"citations":[{"author":"'),
    "extractive": (citations_of(Citation), '{"citations":[{"author":"'),
    "ordered list": (Keywords.model_json_schema(), '{"keywords":["'),
    "extractive, surname": (citations_of(Surname), '{"citations":[{"author":"'),
    "ordered, surname": (Surnames.model_json_schema(), '{"names":["'),
}
STEPS = ("schema_grammar", "start matcher", "first mask", "build + first mask")
STEPS += ("first mask inside the string", "mask per copied token")


def paper_words(pdf: Path | None) -> list[str]:
    if pdf is None:
        return [f"word{i % 700}" for i in range(20_000)]
    import pymupdf

    with pymupdf.open(pdf) as doc:
        return " ".join(page.get_text() for page in doc).split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer to use")
    parser.add_argument(
        "--pdf", type=Path, metavar="PATH", help="source words from this PDF (plain words without)"
    )
    args = parser.parse_args()
    if args.pdf is not None and not args.pdf.is_file():
        parser.error(f"--pdf {args.pdf}: no such file")

    import llguidance
    from transformers import AutoTokenizer

    from structune.constrain.grammar import MAX_ITEMS_IN_ROW

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    ll_tokenizer = llguidance_tokenizer(tokenizer)
    limits = llguidance.LLParserLimits(max_items_in_row=MAX_ITEMS_IN_ROW)
    words = paper_words(args.pdf)
    times: dict[tuple[str, str], list[float]] = {}

    def timed(name: str, step: str, started: float) -> float:
        elapsed = (time.perf_counter() - started) * 1e3
        times.setdefault((name, step), []).append(elapsed)
        return elapsed

    refused = {}
    for name, (schema, prefix) in GRAMMARS.items():
        for run in range(args.repeat):
            offset = 500 + run * args.words
            source = " ".join(words[offset : offset + args.words])
            bound = bind_sources(schema, {"context": source})

            started = time.perf_counter()
            try:
                grammar = schema_grammar(bound, ll_tokenizer)
            except UserError as exc:  # an ordered list over a source past its bound
                refused[name] = str(exc).split(";")[0]
                break
            build = timed(name, "schema_grammar", started)
            started = time.perf_counter()
            matcher = llguidance.LLMatcher(ll_tokenizer, grammar, limits=limits)
            build += timed(name, "start matcher", started)
            started = time.perf_counter()
            matcher.compute_bitmask()
            build += timed(name, "first mask", started)
            times.setdefault((name, "build + first mask"), []).append(build)

            matcher.consume_tokens(tokenizer.encode(prefix, add_special_tokens=False))
            started = time.perf_counter()
            matcher.compute_bitmask()
            timed(name, "first mask inside the string", started)

            copied = " ".join(source.split()[100:110]).replace("\\", "").replace('"', "")
            if "surname" in name:  # the first word from there on that has the shape
                copied = next(w for w in source.split()[100:] if re.fullmatch(SURNAME_PATTERN, w))
            tokens = tokenizer.encode(copied, add_special_tokens=False)
            started = time.perf_counter()
            for token in tokens:
                if not matcher.consume_token(token):
                    raise SystemExit(f"{name}: the grammar refused a copy: {matcher.get_error()}")
                matcher.compute_bitmask()
            times.setdefault((name, "mask per copied token"), []).append(
                (time.perf_counter() - started) * 1e3 / len(tokens)
            )

    shown = [name for name in GRAMMARS if name not in refused]
    origin = args.pdf.name if args.pdf else "plain words"
    print(f"source: {args.words} words of {origin}; ms, median of runs 2-{args.repeat} (first run)")
    print(f"  {'':<30}" + "".join(f"{name:>22}" for name in shown))
    for step in STEPS:
        row = f"  {step:<30}"
        for name in shown:
            values = times[name, step]
            rest = statistics.median(values[1:]) if len(values) > 1 else float("nan")
            row += f"{rest:>12.2f} ({values[0]:>7.2f})"
        print(row)
    for name, reason in refused.items():
        print(f"  {name}: refused: {reason}")


if __name__ == "__main__":
    main()
