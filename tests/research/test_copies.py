"""Aligned copies: answer strings copied from the prompt are cut as the prompt cuts them."""

from research.copies import aligned_copies, copied_values
from structune.program import canonical_json
from structune.tasks.citations import citation_program
from structune.train.data import IGNORE_INDEX, examples_hash, tokenize_conversation

CONTEXT = 'Prefix tuning (Li & Liang, 2021) and SAMSum (Gliwa et al., 2019).\nSee "Kim" now.'
CITES = [
    {"author": "Liang", "year": 2021, "desc": "Prefix tuning (Li & Liang, 2021)"},
    {"author": "Gliwa", "year": 2019, "desc": 'See "Kim" now.'},  # escaped: left as it is
    {"author": "Nobody", "year": 2020, "desc": "not in the context"},
]


def conversation(citations):
    inputs = {"query_str": "Which citations?", "context_str": CONTEXT}
    answer = canonical_json({"citations": citations})
    return [*citation_program.messages(inputs), {"role": "assistant", "content": answer}]


def test_copied_values_are_string_values_the_prompt_holds_after_a_space():
    answer = canonical_json({"citations": CITES, "Liang": 1})
    spans = copied_values(answer, f"prompt: {CONTEXT}")
    # keys ("author", "Liang") and the escaped desc are no copies, "Nobody" is not there, and
    # "(Gliwa" is cut after its bracket as after the answer's quote: the same pieces already
    assert [answer[a:b] for a, b in spans] == ["Liang", "Prefix tuning (Li & Liang, 2021)"]
    assert copied_values(answer, "no names here") == []


def answer_pieces(tokenizer, example):
    return [
        tokenizer.decode([t])
        for t, label in zip(example.input_ids, example.labels, strict=True)
        if label != IGNORE_INDEX
    ]


def test_an_aligned_answer_copies_the_prompts_pieces_and_reads_the_same(tokenizer):
    plain = tokenize_conversation(tokenizer, conversation(CITES), max_length=4096)
    aligned = aligned_copies(tokenizer, conversation(CITES), max_length=4096)
    prompt = plain.labels.index(next(t for t in plain.labels if t != IGNORE_INDEX))
    assert aligned.input_ids[:prompt] == plain.input_ids[:prompt]  # the prompt is untouched
    assert tokenizer.decode(aligned.input_ids) == tokenizer.decode(plain.input_ids)

    # SmolLM2's tokenizer cuts " Liang" as ' Li', 'ang' but `"Liang` as 'L', 'iang'
    in_context = [tokenizer.decode([t]) for t in tokenizer(" Liang")["input_ids"]]
    assert in_context == [" Li", "ang"]
    plain_pieces, aligned_pieces = (
        answer_pieces(tokenizer, plain),
        answer_pieces(tokenizer, aligned),
    )
    author = plain_pieces.index("author") + 2  # after 'author', '":"'
    assert plain_pieces[author : author + 2] == ["L", "iang"]
    assert aligned_pieces[author : author + 2] == ["Li", "ang"]
    assert aligned_pieces[-1] == plain_pieces[-1] == tokenizer.eos_token


def test_aligned_copies_name_their_own_run(tokenizer):
    plain = tokenize_conversation(tokenizer, conversation(CITES), max_length=4096)
    aligned = aligned_copies(tokenizer, conversation(CITES), max_length=4096)
    assert examples_hash([plain]) != examples_hash([aligned])
