"""Schema coverage of constrained decoding on real-world schemas, and one answer to each.

    .venv/bin/python benchmarks/schema_coverage.py DATA_DIR [--per-set 12] [--seed 0]
        [--sets NAME ...] [--max-tokens 256] [--largest 5] [--no-answers]

DATA_DIR is JSONSchemaBench's `data/` folder: one folder per set, one JSON schema per file
(`git clone https://github.com/guidance-ai/jsonschemabench`; nothing is fetched at run
time). `--per-set` schemas are drawn from each set with `--seed`. Each is compiled for the
bundled tokenizer with relaxing allowed (`x-structune-relax`) and counted as compiled
exactly (the engine takes it as given, objects closed), rewritten exactly (it compiles once
`structune.constrain.rewrite` has rewritten it), relaxed + checked (some keywords only
checked after decoding), or refused, with the engine's reason.

Each handled schema then gets one greedy answer from the base model (`smollm2-135m`, the
schema in the prompt), through `LocalLLM.complete_many`: the path of `Program.run` and the
server, re-sampling included. An answer is valid (it passes `jsonschema` in the schema's
own draft, checked here again, independently), cut (`max_tokens` ran out), or invalid (a
violation the re-samples did not cure, which callers get as an error). "Claimed valid but
failing" counts answers returned as valid that fail `jsonschema`: it must be 0.

The `--largest` schemas of the sample are compiled once more, each in a fresh process:
wall time, and the peak resident memory the compile adds (Linux: `VmHWM` after resetting
it through `/proc/self/clear_refs`).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from structune.errors import UserError

SETS = [
    "Glaiveai2K",
    "Github_trivial",
    "Github_easy",
    "Github_medium",
    "Github_hard",
    "Kubernetes",
    "Snowplow",
    "WashingtonPost",
    "JsonSchemaStore",
]
PROMPT = "Write one JSON value that is valid under this JSON Schema:\n{schema}"
SCHEMA_CHARS = 1500  # of each schema shown in the prompt: the grammar holds the rest


@dataclass
class Case:
    set: str
    path: Path
    schema: dict[str, Any]
    kind: str = ""  # exact, rewritten, relaxed, refused
    reason: str = ""
    checked: tuple[str, ...] = ()
    rewritten: list[str] = field(default_factory=list)
    answer: str = ""  # valid, cut, invalid, claimed valid but failing, error
    closed_early: bool = False
    resamples: int = 0


def sample(data: Path, sets: list[str], per_set: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for name in sets:
        files = sorted((data / name).glob("*.json"))
        if not files:
            raise SystemExit(f"{data / name} holds no *.json: pass JSONSchemaBench's data/")
        for path in rng.sample(files, min(per_set, len(files))):
            cases.append(Case(name, path, json.loads(path.read_text())))
    return cases


def classify(case: Case, tokenizer: Any) -> None:
    """Refused, relaxed (keywords only checked), or else exact: compiled as given (objects
    closed, nothing rewritten) or only once rewritten."""
    from structune.constrain.checked import relaxed
    from structune.constrain.grammar import compile_schema, schema_grammar

    try:
        compiled = compile_schema(relaxed(case.schema), tokenizer)
    except UserError as exc:
        case.kind, case.reason = "refused", " ".join(str(exc).split())
        return
    coverage = compiled.coverage
    case.checked, case.rewritten = coverage.checked, list(coverage.rewritten)
    if coverage.checked:
        case.kind = "relaxed"
        return
    try:
        schema_grammar(case.schema, compiled.ll_tokenizer)  # the engine alone, no rewrite
        case.kind = "exact"
    except UserError:
        case.kind = "rewritten"


def answer(cases: list[Case], llm: Any, max_tokens: int) -> None:
    """One greedy answer per case, a set's cases in one batch (one at a time on an error)."""
    from structune.constrain.checked import relaxed

    conversations = [
        [{"role": "user", "content": PROMPT.format(schema=json.dumps(c.schema)[:SCHEMA_CHARS])}]
        for c in cases
    ]
    schemas = [relaxed(c.schema) for c in cases]
    try:
        completions = llm.complete_many(conversations, max_tokens=max_tokens, json_schema=schemas)
    except UserError:
        if len(cases) == 1:
            raise
        for case in cases:
            try:
                answer([case], llm, max_tokens)
            except UserError as exc:
                case.answer, case.reason = "error", " ".join(str(exc).split())
        return
    for case, completion in zip(cases, completions, strict=True):
        judge(case, completion)


def judge(case: Case, completion: Any) -> None:
    from structune.constrain.checked import validator_class

    check = completion.schema_check
    case.closed_early, case.resamples = completion.closed_early, check.resamples
    if completion.finish_reason != "stop":
        case.answer = "cut"
    elif check.violation is not None:
        case.answer, case.reason = "invalid", check.violation
    else:
        cls = validator_class(case.schema)
        valid = cls(case.schema, format_checker=cls.FORMAT_CHECKER).is_valid(
            json.loads(completion.text)
        )
        case.answer = "valid" if valid else "claimed valid but failing"


def measure_compile(path: str) -> tuple[float, float, str]:
    """In a fresh process: seconds and peak MB that compiling the schema at `path` takes."""
    from transformers import AutoTokenizer

    from structune.constrain.checked import relaxed
    from structune.constrain.grammar import compile_schema
    from structune.models.loading import resolve_model

    logging.getLogger("structune.constrain.grammar").setLevel(logging.ERROR)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    compile_schema({"type": "object"}, tokenizer)  # the engine's tokenizer, built once
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kb("VmRSS")
    started = time.perf_counter()
    try:
        compile_schema(relaxed(json.loads(Path(path).read_text())), tokenizer)
        outcome = "compiled"
    except UserError as exc:
        outcome = "refused: " + " ".join(str(exc).split())[:60]
    seconds = time.perf_counter() - started
    return seconds, (_status_kb("VmHWM") - before) / 1024, outcome


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def report(cases: list[Case]) -> None:
    kinds = ["exact", "rewritten", "relaxed", "refused"]
    answers = ["valid", "cut", "invalid", "claimed valid but failing", "error"]
    print(
        f"{'set':<16}"
        + "".join(f"{k:>10}" for k in kinds)
        + "".join(f"{a[:8]:>10}" for a in answers)
    )
    for name in [*dict.fromkeys(c.set for c in cases), "all"]:
        rows = [c for c in cases if name in ("all", c.set)]
        kind, ans = Counter(c.kind for c in rows), Counter(c.answer for c in rows)
        print(
            f"{name:<16}"
            + "".join(f"{kind[k]:>10}" for k in kinds)
            + "".join(f"{ans[a]:>10}" for a in answers)
        )
    handled = sum(c.kind != "refused" for c in cases)
    print(
        f"\nhandled {handled}/{len(cases)}; answers closed early by the budget: "
        f"{sum(c.closed_early for c in cases)}; re-sampled: {sum(c.resamples > 0 for c in cases)}"
    )
    checked = Counter(k for c in cases for k in c.checked)
    rewritten = Counter(r.split(" at ")[0] for c in cases for r in c.rewritten)
    print("only checked (schemas):", dict(checked.most_common()))
    print("rewritten (occurrences):", dict(rewritten.most_common()))
    for case in cases:
        if case.kind == "refused" or case.answer in (
            "invalid",
            "error",
            "claimed valid but failing",
        ):
            what = case.kind if case.kind == "refused" else case.answer
            print(f"  {what}: {case.set}/{case.path.name}: {case.reason[:200]}")


def report_largest(cases: list[Case], count: int) -> None:
    largest = sorted(cases, key=lambda c: c.path.stat().st_size, reverse=True)[:count]
    print(f"\n{'largest schemas':<44}{'KB':>8}{'compile s':>11}{'peak MB':>9}  outcome")
    context = get_context("spawn")
    for case in largest:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            seconds, megabytes, outcome = pool.submit(measure_compile, str(case.path)).result()
        name = f"{case.set}/{case.path.name}"[:43]
        kb = case.path.stat().st_size / 1024
        print(f"{name:<44}{kb:>8.0f}{seconds:>11.2f}{megabytes:>9.1f}  {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="JSONSchemaBench's data/ folder")
    parser.add_argument("--per-set", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=SETS)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--largest", type=int, default=5)
    parser.add_argument("--no-answers", action="store_true", help="coverage only, no decoding")
    args = parser.parse_args()
    # each relaxed schema's warning: the table below counts them
    logging.getLogger("structune.constrain.grammar").setLevel(logging.ERROR)

    from structune.llms.local import LocalLLM

    cases = sample(args.data, args.sets, args.per_set, args.seed)
    llm = LocalLLM.load("smollm2-135m", batch_size=args.per_set)
    started = time.perf_counter()
    for case in cases:
        classify(case, llm.tokenizer)
    print(
        f"{len(cases)} schemas (seed {args.seed}) compiled in {time.perf_counter() - started:.1f} s"
    )
    if not args.no_answers:
        started = time.perf_counter()
        for name in args.sets:
            handled = [c for c in cases if c.set == name and c.kind != "refused"]
            if handled:
                answer(handled, llm, args.max_tokens)
            print(f"  {name}: answered at {time.perf_counter() - started:.0f} s", flush=True)
        seconds = time.perf_counter() - started
        print(f"answered in {seconds:.0f} s (greedy, max_tokens {args.max_tokens})")
    print()
    report(cases)
    if args.largest:
        report_largest(cases, args.largest)


if __name__ == "__main__":
    main()
