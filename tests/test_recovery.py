import json
import re

import pytest

from structune import UserError
from structune.program import canonical_json
from structune.tasks.citations import citation_program
from structune.train.adapters import load_manifest
from structune.train.data import IGNORE_INDEX, tokenize_conversation
from structune.train.recovery import recovery_conversations

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
