"""Where a citation student's authors go wrong: the first token of the name.

    .venv/bin/python benchmarks/author_tokens.py RUN.json [--set other] [--adapter ID]

Reads a `rag_citations.py --json` run (its adapter, test contexts and the teacher's
answers) and, teacher-forced on each teacher answer up to a citation's `"author":"`, prints
the student's most likely next tokens beside the tokens the teacher's author is written in,
for every citation whose (author, year) pair the run's student missed, then the mean
probability of the author's first token over all citations of the set, missed or not.

Measured on lora's "Li & Liang (2021)": in the context the names are the tokens ' Li',
' &', ' Li', 'ang' (with the space), in the answer 'Li' (without), and the nested-bracket
student put 'L' first (0.47-0.96), the first token of many training surnames, and ended the
name as another L-name ("Liang", "Lao"). Most other misses start with the first letter of
the name heading the citing clause: 'S' for "SAMSum (Gliwa et al., 2019)", 'E' for "E2E
NLG Challenge ... Novikova et al. (2017)" (docs/citation-student.md, "Two-author variants
seen more often").

The answer is teacher-forced in the tokenization the adapter was trained on: where the run
trained with `--aligned-copies` (or an older adapter's manifest says `aligned_copies`),
authors copied after a space are cut as the context cuts them (`research.copies`), so
"Liang" is 'Li', 'ang' there and 'L', 'iang' otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import common  # noqa: F401  (puts the repository root, and with it `research`, on the path)
import torch

from research.copies import aligned_copies
from structune.adapters import load_manifest
from structune.llms.local import LocalLLM
from structune.program import canonical_json
from structune.tasks.citations import SURNAME_PATTERN, sourced_program
from structune.train.data import IGNORE_INDEX, tokenize_conversation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a rag_citations.py --json file")
    parser.add_argument("--set", choices=("other", "held-out"), default="other")
    parser.add_argument("--adapter", help="another adapter than the run's")
    parser.add_argument("--top", type=int, default=4)
    args = parser.parse_args()

    run = json.loads(args.run.read_text())
    # the run's test sets, named as rag_citations.py names them
    papers = run["args"]
    set_name = {
        "other": f"{papers['test_paper']} (the other paper)",
        "held-out": f"held-out stretches of {papers['train_paper']}",
    }[args.set]
    found = run[set_name]
    answers = found["comparison"]["answers"]["teacher (rules)"]
    missed = {
        (row["context"], a, y) for row in found["misses"]["student"] for a, y in row["missed"]
    }
    program = sourced_program(
        SURNAME_PATTERN if run["args"].get("surname_pattern") else None,
        desc_first=run["args"].get("desc_first", False),
    )
    order = program.output_cls.model_json_schema()["$defs"]["Citation"]["properties"]
    adapter = args.adapter or run["adapter"]
    # adapters trained before the research code left structune recorded it in their config
    aligned = run["args"].get("aligned_copies") or load_manifest(adapter).config.get(
        "aligned_copies", False
    )
    tokenize = aligned_copies if aligned else tokenize_conversation
    student = LocalLLM.load(adapter=adapter, batch_size=1)
    tokenizer = student.tokenizer

    first_token_probabilities = []
    for i, answer in enumerate(answers):
        citations = [{k: c[k] for k in order} for c in json.loads(answer["text"])["citations"]]
        if not citations:
            continue
        text = canonical_json({"citations": citations})
        conversation = [
            *program.messages(answer["inputs"]),
            {"role": "assistant", "content": text},
        ]
        example = tokenize(tokenizer, conversation, max_length=1 << 20)
        start = next(k for k, label in enumerate(example.labels) if label != IGNORE_INDEX)
        ids = example.input_ids[start:]
        with torch.no_grad():  # one pass over the whole answer, read at each author
            logits = student.model(torch.tensor([example.input_ids])).logits[0, start - 1 :]
        # characters of the answer before each of its tokens
        before = [len(tokenizer.decode(ids[:k])) for k in range(len(ids) + 1)]
        for citation, match in zip(citations, re.finditer('"author":"', text), strict=True):
            at, end = before.index(match.end()), before.index(match.end() + len(citation["author"]))
            probabilities = logits[at].softmax(-1)
            first_token_probabilities.append(float(probabilities[ids[at]]))
            if (i, citation["author"].lower(), citation["year"]) not in missed:
                continue
            top = probabilities.topk(args.top)
            likely = ", ".join(
                f"{tokenizer.decode([t])!r} {float(p):.2f}"
                for p, t in zip(top.values, top.indices, strict=True)
            )
            spelled = " ".join(repr(tokenizer.decode([t])) for t in ids[at:end])
            print(f"context {i}, {citation['author']} {citation['year']} ({spelled}): {likely}")
    mean = sum(first_token_probabilities) / len(first_token_probabilities)
    print(
        f"\n{set_name}: the student's mean P(the author's first token) over "
        f"{len(first_token_probabilities)} teacher citations: {mean:.2f}"
    )


if __name__ == "__main__":
    main()
