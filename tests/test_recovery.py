import json
import re

import pytest

from structune import UserError
from structune.adapters import load_manifest
from structune.program import canonical_json
from structune.tasks.citations import citation_program
from structune.train.data import IGNORE_INDEX, tokenize_conversation
from structune.train.recovery import corrected_conversation, recovery_conversations

ITEMS = [
    {"author": name, "year": 2000 + i, "desc": f"{name} did it."}
    for i, name in enumerate(["Smith", "Lee", "Völske", "Bojar", "Zellers", "Socher", "Wang"])
]


def conversation(citations, context="Text (Smith et al., 2020)."):
    inputs = {"query_str": "Which citations?", "context_str": context}
    answer = canonical_json({"citations": citations})
    return [*citation_program.messages(inputs), {"role": "assistant", "content": answer}]


def given_and_learned(made):
    answer = made[-1]
    return answer["content"][: answer["learn_from"]], answer["content"][answer["learn_from"] :]


def test_recovery_answers_give_a_list_with_one_mistake_and_learn_the_rest():
    made = recovery_conversations([conversation(ITEMS)], count=200, seed=3)
    assert len(made) == 200
    closes = 0
    for recovered in made:
        assert recovered[:-1] == conversation(ITEMS)[:-1]  # the same prompt
        written = json.loads(recovered[-1]["content"])["citations"]
        given, learned = given_and_learned(recovered)
        assert learned[0] in ",]"  # cut where the student decides to go on or to close
        given_items = json.loads(given + "]}")["citations"]
        # the given items end at one of the teacher's, and the teacher's list goes on from it
        last = ITEMS.index(given_items[-1])
        assert written == given_items + ITEMS[last + 1 :]
        closes += learned == "]}"
        # one mistake: one work left out, one written twice, or two swapped
        teacher = ITEMS[: last + 1]
        assert given_items != teacher
        if len(given_items) < len(teacher):
            assert all(item in teacher for item in given_items)
            assert len(given_items) == len(teacher) - 1
        elif len(given_items) > len(teacher):
            assert [i for n, i in enumerate(given_items) if i not in given_items[:n]] == teacher
        else:
            assert sorted(map(str, given_items)) == sorted(map(str, teacher))
            assert sum(a != b for a, b in zip(given_items, teacher, strict=True)) == 2
    # half end at the last item, so that the close itself is learned
    assert 70 < closes < 130


def test_answers_without_a_long_enough_list_are_not_drawn():
    short, long = conversation(ITEMS[:3], "Short."), conversation(ITEMS, "Long.")
    assert recovery_conversations([short, conversation([])], count=5, min_items=4) == []
    prompts = {
        made[1]["content"]
        for made in recovery_conversations([short, long], count=40, min_items=4, seed=1)
    }
    assert prompts == {long[1]["content"]}
    prompts = {
        made[1]["content"]
        for made in recovery_conversations([short, long], count=40, min_items=3, seed=1)
    }
    assert prompts == {short[1]["content"], long[1]["content"]}


def test_the_given_prefix_carries_no_loss_and_the_token_deciding_after_it_does(tokenizer):
    for recovered in recovery_conversations([conversation(ITEMS)], count=30, seed=5):
        example = tokenize_conversation(tokenizer, recovered, max_length=4096)
        given, learned = given_and_learned(recovered)
        learned_ids = [t for t in example.labels if t != IGNORE_INDEX]
        # the learned tokens are the answer's last ones, the end-of-turn token among them
        assert example.input_ids[-len(learned_ids) :] == learned_ids
        text = tokenizer.decode(learned_ids)
        assert text.endswith(learned + "<|im_end|>")
        # what reaches back into the prefix is the token holding the first learned character
        reaching_back = text[: -len(learned + "<|im_end|>")]
        assert given.endswith(reaching_back) and len(reaching_back) < 4


def test_a_given_prefix_outside_the_answer_is_refused(tokenizer):
    made = recovery_conversations([conversation(ITEMS)], count=1)[0]
    made[-1]["learn_from"] = len(made[-1]["content"]) + 1
    with pytest.raises(UserError, match="learn_from"):
        tokenize_conversation(tokenizer, made, max_length=4096)
    made[-1]["learn_from"] = 10
    with pytest.raises(UserError, match="aligned_copies"):
        tokenize_conversation(tokenizer, made, max_length=4096, aligned_copies=True)


def student(items, end="]}"):
    """A student's answer text: its items in canonical JSON, then `end`."""
    return canonical_json({"citations": items})[: -len("]}")] + end


def test_a_student_answer_with_the_teachers_works_needs_no_correction():
    reworded = [{**item, "desc": "Said otherwise."} for item in ITEMS]
    assert corrected_conversation(conversation(ITEMS), student(reworded)) is None
    mistake = corrected_conversation(conversation(ITEMS), student(reworded), worded=()).mistake
    assert mistake == "not in the list"
    assert corrected_conversation(conversation([]), student([])) is None
    # a teacher's answer without a list: nothing to go on from
    plain = [*conversation([])[:-1], {"role": "assistant", "content": "no JSON"}]
    assert corrected_conversation(plain, student(ITEMS)) is None


INVENTED = {"author": "Laura", "year": 2021, "desc": "Laura did it."}


@pytest.mark.parametrize(
    ("written", "mistake", "given", "rest"),
    [
        # the teacher's list goes on with the work the student should have written
        ([*ITEMS[:2], INVENTED], "not in the list", [*ITEMS[:2], INVENTED], ITEMS[2:]),
        ([{**ITEMS[0], "year": 1999}], "not in the list", [{**ITEMS[0], "year": 1999}], ITEMS),
        ([*ITEMS[:2], ITEMS[0]], "written twice", [*ITEMS[:2], ITEMS[0]], ITEMS[2:]),
        # after the one skipped to, not again from the one left out
        ([ITEMS[0], ITEMS[3]], "left out", [ITEMS[0], ITEMS[3]], ITEMS[4:]),
        ([*ITEMS, ITEMS[-1]], "written twice", [*ITEMS, ITEMS[-1]], []),
    ],
)
def test_a_student_answer_is_written_on_from_its_first_wrong_item(written, mistake, given, rest):
    for end in ("]}", ',{"author":"Lau', ',{"author" "Laura"}'):  # closed, cut off, broken
        correction = corrected_conversation(conversation(ITEMS), student(written, end))
        assert correction.mistake == mistake
        assert correction.conversation[:-1] == conversation(ITEMS)[:-1]
        given_text, learned = given_and_learned(correction.conversation)
        assert json.loads(given_text + "]}")["citations"] == given
        assert json.loads(given_text + learned)["citations"] == given + rest


def test_a_list_closed_early_or_broken_gives_the_right_items_and_learns_the_rest():
    for end, mistake in [("]}", "closed early"), (',{"author":"Lee","ye', "broken")]:
        correction = corrected_conversation(conversation(ITEMS), student(ITEMS[:3], end))
        assert correction.mistake == mistake
        given_text, learned = given_and_learned(correction.conversation)
        assert json.loads(given_text + "]}")["citations"] == ITEMS[:3]
        assert learned.startswith(",") and json.loads(given_text + learned)["citations"] == ITEMS
    # no right item before the mistake: the teacher's whole answer is learned
    for text, mistake in [
        (student([]), "closed early"),
        ("[]", "broken"),
        ('{"citations":[{"author":', "broken"),
        ("Sure! Here are", "broken"),
    ]:
        correction = corrected_conversation(conversation(ITEMS), text)
        assert correction.mistake == mistake
        assert correction.conversation == conversation(ITEMS)
    # a list the teacher leaves empty: the student's invented work given, the close learned
    correction = corrected_conversation(conversation([]), student([INVENTED]))
    assert given_and_learned(correction.conversation)[1] == "]}"


def test_a_corrections_given_items_carry_no_loss(tokenizer):
    correction = corrected_conversation(conversation(ITEMS), student([*ITEMS[:2], INVENTED]))
    example = tokenize_conversation(tokenizer, correction.conversation, max_length=4096)
    learned = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert "Laura" not in learned and learned.endswith('Wang did it."}]}<|im_end|>')
    assert learned.count('"author"') == len(ITEMS) - 2


def test_train_adds_recovery_answers_and_says_when_it_has_none(tiny_model_dir, tmp_path, capsys):
    from structune.cli import main

    def train(answers, *flags):
        jsonl = tmp_path / "cites.jsonl"
        # each its own context: an import keeps one answer per prompt
        lines = [
            json.dumps({"messages": conversation(a, f"Text {n}.")}) + "\n"
            for n, a in enumerate(answers)
        ]
        jsonl.write_text("".join(lines))
        argv = ["train", "--jsonl", str(jsonl), "--base", str(tiny_model_dir)]
        return main([*argv, "--max-steps", "1", "--lora-r", "4", *flags])

    assert train([ITEMS, ITEMS[:2]], "--recovery", "3") == 0
    adapter = re.search(r"adapter (cites-\w+)", capsys.readouterr().out).group(1)
    assert load_manifest(adapter).dataset_size == 5
    assert train([ITEMS[:3], ITEMS[:2]], "--recovery", "3") == 1
    assert "JSON list of 4 items or more" in capsys.readouterr().err
