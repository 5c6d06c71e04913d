"""What an extractive grammar costs per request: build, first mask, masks inside a span.

    .venv/bin/python benchmarks/extractive_grammar.py [--words 1000] [--repeat 5] [--model DIR]

Extracted fields copy from each request's own input, so their grammar is built per
(schema, source text) and cannot be shared the way a plain schema grammar is. This times,
for a citation schema whose `author` is `Extracted()` and a source of `--words` words from
the LoRA paper (plain words if the PDF is missing), with the bundled model's tokenizer:
writing the Lark text, compiling it (`schema_grammar`: Lark text + compile; the grammar is
validated once per schema, on the first run only), starting a matcher, its first mask, the
first mask inside the marked string (the lexer builds its states for the source lazily),
and the mean mask per token while copying ten words. Medians over the `--repeat` runs after
the first; each run uses a different source, so no grammar comes from a cache.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Annotated

import pydantic

from structune.constrain import Extracted, bind_sources
from structune.constrain.extractive_grammar import extractive_grammar
from structune.constrain.grammar import _ll_tokenizer, schema_grammar
from structune.models.loading import resolve_model

PAPER = Path(__file__).resolve().parents[2] / "shared" / "data" / "papers" / "lora.pdf"


class Citation(pydantic.BaseModel):
    author: Annotated[str, Extracted(source="context")]
    year: int
    desc: str


class Response(pydantic.BaseModel):
    citations: list[Citation]


def paper_words() -> list[str]:
    if not PAPER.exists():
        return [f"word{i % 700}" for i in range(20_000)]
    import pymupdf

    with pymupdf.open(PAPER) as doc:
        return " ".join(page.get_text() for page in doc).split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer to use")
    args = parser.parse_args()

    import llguidance
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    ll_tokenizer = _ll_tokenizer(tokenizer)
    words = paper_words()
    times: dict[str, list[float]] = {}

    def timed(name: str, started: float) -> None:
        times.setdefault(name, []).append((time.perf_counter() - started) * 1e3)

    for run in range(args.repeat):
        offset = 500 + run * args.words
        source = " ".join(words[offset : offset + args.words])
        schema = bind_sources(Response.model_json_schema(), {"context": source})

        started = time.perf_counter()
        extractive_grammar(schema)
        timed("write Lark text", started)

        started = time.perf_counter()
        grammar = schema_grammar(schema, ll_tokenizer)
        timed("schema_grammar", started)

        started = time.perf_counter()
        matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
        timed("start matcher", started)

        started = time.perf_counter()
        matcher.compute_bitmask()
        timed("first mask", started)
        times.setdefault("build + first mask", []).append(
            sum(times[k][-1] for k in ("schema_grammar", "start matcher", "first mask"))
        )

        prefix = tokenizer.encode('{"citations":[{"author":"', add_special_tokens=False)
        matcher.consume_tokens(prefix)
        started = time.perf_counter()
        matcher.compute_bitmask()
        timed("first mask inside the span", started)

        copied = " ".join(source.split()[100:110]).replace("\\", "").replace('"', "")
        tokens = tokenizer.encode(copied, add_special_tokens=False)
        started = time.perf_counter()
        for token in tokens:
            if not matcher.consume_token(token):
                break
            matcher.compute_bitmask()
        times.setdefault("mask per copied token", []).append(
            (time.perf_counter() - started) * 1e3 / len(tokens)
        )

    print(f"source: {args.words} words; ms, first run (validates) / median of the others")
    for name, values in times.items():
        rest = statistics.median(values[1:]) if len(values) > 1 else float("nan")
        print(f"  {name:<28} {values[0]:8.2f} {rest:8.2f}")


if __name__ == "__main__":
    main()
