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
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from structune.llms.local import LocalLLM
from structune.models.chat import chat_token_ids, render_chat_contents
from structune.program import canonical_json
from structune.tasks.citations import SURNAME_PATTERN, sourced_program


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
    student = LocalLLM.load(adapter=args.adapter or run["adapter"], batch_size=1)
    tokenizer = student.tokenizer

    first_token_probabilities = []
    for i, answer in enumerate(answers):
        citations = [{k: c[k] for k in order} for c in json.loads(answer["text"])["citations"]]
        if not citations:
            continue
        chat = render_chat_contents(
            tokenizer, program.messages(answer["inputs"]), add_generation_prompt=True
        )
        prompt = chat_token_ids(tokenizer, chat)
        text = canonical_json({"citations": citations})
        ids = tokenizer(text, add_special_tokens=False).input_ids
        with torch.no_grad():  # one pass over the whole answer, read at each author
            logits = student.model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 :]
        opened = [m.end() for m in re.finditer(re.escape('"author":"'), text)]
        for citation, at in zip(citations, opened, strict=True):
            head = tokenizer(text[:at], add_special_tokens=False).input_ids
            assert head == ids[: len(head)], "the answer's tokens split at an author"
            probabilities = logits[len(head)].softmax(-1)
            name = tokenizer(citation["author"], add_special_tokens=False).input_ids
            first_token_probabilities.append(float(probabilities[name[0]]))
            if (i, citation["author"].lower(), citation["year"]) not in missed:
                continue
            top = probabilities.topk(args.top)
            likely = ", ".join(
                f"{tokenizer.decode([t])!r} {float(p):.2f}"
                for p, t in zip(top.values, top.indices, strict=True)
            )
            spelled = " ".join(repr(t) for t in tokenizer.convert_ids_to_tokens(name))
            print(f"context {i}, {citation['author']} {citation['year']} ({spelled}): {likely}")
    mean = sum(first_token_probabilities) / len(first_token_probabilities)
    print(
        f"\n{set_name}: the student's mean P(the author's first token) over "
        f"{len(first_token_probabilities)} teacher citations: {mean:.2f}"
    )


if __name__ == "__main__":
    main()
