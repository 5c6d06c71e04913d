"""Which mistakes citation students make, run beside run.

    .venv/bin/python benchmarks/citation_errors.py RUN.json [RUN.json ...] [--model student]

Reads `rag_citations.py --json` runs and, for each test set, prints one row per run: the
student's F1, then its wrong pairs by kind (`structune.evaluate.citations.WRONG_KINDS`: a
co-author named as a work of its own, "Liang" of "Li & Liang (2021)"; a cited author with
another year; a misspelled copy, "Rebbuffi"; another word of the context, "E2E"; a name the
context does not hold) and its missed pairs by kind (in an answer that did not parse, or
left out). Two recipes with the same F1 can fail in different places; this says where.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from structune.evaluate.citations import (
    MISSED_KINDS,
    WRONG_KINDS,
    citation_errors,
    citation_scores,
)
from structune.evaluate.compare import Comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="rag_citations.py --json files")
    parser.add_argument("--model", default="student", help="the row of each run to read")
    args = parser.parse_args()
    reports = {path.stem: json.loads(path.read_text()) for path in args.runs}
    first = next(iter(reports.values()))
    sets = [
        name for name, value in first.items() if isinstance(value, dict) and "comparison" in value
    ]
    kinds = [*WRONG_KINDS, *MISSED_KINDS]
    for name in sets:
        print(f"\n{name}: the {args.model}'s wrong pairs, then its missed ones, by kind")
        header = f"{'run':<16} {'F1':>5} " + " ".join(f"{k:>11}" for k in kinds)
        print(header + "\n" + "-" * len(header))
        for run, report in reports.items():
            if name not in report or args.model not in report[name]["comparison"]["answers"]:
                print(f"{run:<16} (no {args.model} on this set)")
                continue
            comparison = Comparison.from_dict(report[name]["comparison"])
            inputs = [a.inputs for a in comparison.answers[args.model]]
            f1 = citation_scores(comparison, inputs)[args.model].f1
            errors = citation_errors(comparison, inputs)[args.model]
            print(f"{run:<16} {f1:>5.2f} " + " ".join(f"{errors[k]:>11}" for k in kinds))


if __name__ == "__main__":
    main()
