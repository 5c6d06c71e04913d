"""Measures of a citation student beyond its scores (`rag_citations.py`): its probability
of opening and of closing a list where the answer's loss barely looks, and the recall its
answer budget allows."""

from __future__ import annotations

import json
import math

from structune.llms.local import LocalLLM
from structune.program import canonical_json
from structune.tasks.citations import Response, citation_pairs, extract_citations


def cite_probability(llm: LocalLLM, program, inputs: list[dict]) -> tuple[float, float]:
    """The model's mean probability of opening a citation (any token but one starting with
    "]") right after `{"citations":[`, over the inputs whose context cites and over those
    whose context does not: the one decision the answer's loss barely sees (one token of a
    few hundred), and the first thing to look at when a student answers `[]` to everything
    or invents citations everywhere. Equal means the student has not learned to look."""
    import torch

    from structune.models.chat import chat_token_ids, render_chat_contents

    vocab = llm.tokenizer.convert_ids_to_tokens(list(range(len(llm.tokenizer))))
    closing = [i for i, token in enumerate(vocab) if token.startswith("]")]
    means = {True: [], False: []}
    for inputs_ in inputs:
        # tokenized as at inference (the prompt) and as in training (the answer, on its own)
        chat = render_chat_contents(
            llm.tokenizer, program.messages(inputs_), add_generation_prompt=True
        )
        prefix = llm.tokenizer('{"citations":[', add_special_tokens=False).input_ids
        ids = torch.tensor([chat_token_ids(llm.tokenizer, chat) + prefix])
        with torch.no_grad():
            p = llm.model(ids).logits[0, -1].softmax(-1)
        cites = bool(extract_citations(inputs_["context_str"]).citations)
        means[cites].append(1 - float(p[closing].sum()))
    return tuple(sum(v) / len(v) if v else float("nan") for v in (means[True], means[False]))


def close_probability(
    llm: LocalLLM, program, inputs: list[dict], teacher
) -> tuple[float, float, float]:
    """The other half of `cite_probability`: teacher-forced on `teacher`'s answers over
    the inputs whose context cites, the student's mean probability of closing the list
    (`]}`) rather than opening another citation (`,{"`) after the last citation, and after
    each other one. A student that stops its lists early closes after the others; one that
    repeats (or runs on) stays open after the last. Third, the probability after the last
    citation of the longest list alone: the held-out F1 rides on that one answer (13 of
    its 20 pairs), and the mean over the lists does not tell whether it closes."""
    import torch

    from structune.models.chat import chat_token_ids, render_chat_contents

    def log_probability(ids: list[int], start: int) -> float:
        with torch.no_grad():
            logits = llm.model(torch.tensor([ids])).logits[0, start - 1 : -1]
        picked = logits.log_softmax(-1).gather(1, torch.tensor(ids[start:])[:, None])
        return float(picked.sum())

    # the teacher's answers, each citation's fields in the program's order (`--desc-first`)
    order = program.output_cls.model_json_schema()["$defs"]["Citation"]["properties"]
    after: dict[bool, list[float]] = {True: [], False: []}
    longest = (0, float("nan"))  # (citations, P(close) after its last)
    for inputs_ in inputs:
        messages = program.messages(inputs_)
        citations = [
            {name: c[name] for name in order} for c in json.loads(teacher(messages))["citations"]
        ]
        chat = render_chat_contents(llm.tokenizer, messages, add_generation_prompt=True)
        prompt = chat_token_ids(llm.tokenizer, chat)
        for k in range(1, len(citations) + 1):
            head = canonical_json({"citations": citations[:k]})[: -len("]}")]
            close, more = (
                prompt + llm.tokenizer(head + end, add_special_tokens=False).input_ids
                for end in ("]}", ',{"')
            )
            common = next(i for i, (a, b) in enumerate(zip(close, more, strict=False)) if a != b)
            odds = log_probability(more, common) - log_probability(close, common)
            after[k == len(citations)].append(1 / (1 + math.exp(odds)))
        if len(citations) > longest[0]:
            longest = (len(citations), after[True][-1])
    last, earlier = (sum(v) / len(v) if v else float("nan") for v in (after[True], after[False]))
    return last, earlier, longest[1]


def recall_ceiling(tokenizer, teacher_answers, max_tokens: int) -> float:
    """The recall the teacher's own answers reach when cut at `max_tokens` tokens, as a
    grammar closes a list when the budget runs out: no model can recall more at that budget.
    (Two of the default test contexts list 13 and 10 citations: 1,833 and 1,074 tokens of
    answer, over the 768 this benchmark first allowed, which capped held-out recall at 0.60.)
    """
    reached = total = 0
    for answer in teacher_answers:
        citations = json.loads(answer.text)["citations"]
        total += len(citation_pairs(Response.model_validate({"citations": citations})))
        fits: list = []
        for end in range(1, len(citations) + 1):
            text = canonical_json({"citations": citations[:end]})
            if len(tokenizer(text, add_special_tokens=False).input_ids) + 1 > max_tokens:
                break  # + 1: the end-of-turn token
            fits = citations[:end]
        reached += len(citation_pairs(Response.model_validate({"citations": fits})))
    return reached / total if total else 1.0
