"""Decision weights: the tokens that open, continue or close a JSON list weigh more."""

import json

import pytest
import torch

from research.decisions import DecisionWeights, list_decisions, token_weights
from structune import TrainConfig, UserError
from structune.program import canonical_json
from structune.tasks.citations import citation_program
from structune.train.data import IGNORE_INDEX, collate, examples_hash, tokenize_conversation


def test_list_decisions_are_each_lists_open_continue_and_close():
    text = '{"a": [ 1 , [2,3], []], "b": {"c": [{"d": 1}]}}'
    found = list_decisions(text)
    # first item after each "[", each "," between items, each "]" that closes a list
    assert [text[i] for i in found] == ["1", ",", "2", ",", "]", ",", "]", "]", "{", "]"]
    assert found == sorted(found)


def test_brackets_and_commas_inside_strings_are_no_decisions():
    text = json.dumps({"x": ["a, [b]", 'q "], [" r'], "y": "[,]"})
    found = list_decisions(text)
    assert [text[i] for i in found] == ['"', ",", "]"]


def test_plain_text_and_broken_json_give_what_can_be_read():
    assert list_decisions("no json here") == []
    assert list_decisions('{"citations":[]}') == [len('{"citations":[')]
    assert list_decisions("]][1") == []  # stops at the stray "]"


def test_token_weights_mark_the_tokens_holding_a_decision():
    offsets = [(0, 2), (2, 5), (5, 6), (6, 9)]
    assert token_weights(offsets, [3, 6, 8], 4.0) == [1.0, 4.0, 1.0, 4.0]
    assert token_weights(offsets, [], 4.0) == [1.0] * 4


def citation_conversation(citations):
    inputs = {"query_str": "Which citations?", "context_str": "Text (Smith et al., 2020)."}
    answer = canonical_json({"citations": citations})
    return [*citation_program.messages(inputs), {"role": "assistant", "content": answer}]


CITES = [
    {"author": "Smith", "year": 2020, "desc": "Text (Smith et al., 2020), [a], b."},
    {"author": "Völske", "year": 2017, "desc": "Summaries (Völske et al., 2017)."},
    {"author": "Lee", "year": 2019, "desc": "c"},
]


def test_weighted_tokens_are_the_answers_decisions_and_nothing_else(tokenizer):
    conversation = citation_conversation(CITES)
    plain = tokenize_conversation(tokenizer, conversation, max_length=2048)
    weighted = DecisionWeights(5)(tokenizer, conversation, max_length=2048)
    assert plain.weights is None
    assert weighted.input_ids == plain.input_ids and weighted.labels == plain.labels
    assert weighted.weights is not None
    heavy = [i for i, w in enumerate(weighted.weights) if w != 1.0]
    assert {weighted.weights[i] for i in heavy} == {5.0}
    assert all(weighted.labels[i] != IGNORE_INDEX for i in heavy)  # answer tokens only
    # open, two continues, close: each in its own token, read back from the token text
    texts = [tokenizer.decode([weighted.input_ids[i]]) for i in heavy]
    assert len(heavy) == 4
    assert texts[0].startswith("{") and texts[-1].startswith("]")
    assert all("," in t for t in texts[1:3])

    empty = DecisionWeights(5)(tokenizer, citation_conversation([]), max_length=2048)
    assert empty.weights is not None
    heavy_empty = [t for t, w in zip(empty.input_ids, empty.weights, strict=True) if w != 1.0]
    assert len(heavy_empty) == 1 and tokenizer.decode(heavy_empty).startswith("]")


def test_the_loss_weighs_decision_tokens_by_their_weight(tiny_model_dir, tokenizer):
    from structune.models.loading import load_model
    from structune.train.lora import answer_loss, with_lora

    model, _ = load_model(str(tiny_model_dir), dtype="float32")
    model = with_lora(model, TrainConfig(lora_r=4, lora_alpha=8))
    conversations = [citation_conversation(CITES), citation_conversation(CITES[:1])]

    def summed(weight):
        examples = [DecisionWeights(weight)(tokenizer, c, max_length=2048) for c in conversations]
        batch = collate(examples, pad_token_id=0)
        with torch.no_grad():
            return float(answer_loss(model, batch, reduction="sum")), batch

    unweighted, plain_batch = summed(1.0)
    assert "weights" not in plain_batch
    weighted, batch = summed(4.0)
    # the decision tokens' own losses, from the model's logits
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    losses = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), batch["labels"][:, 1:], reduction="none"
    )
    decisions = batch["weights"][:, 1:] == 4.0
    assert decisions.sum() == 4 + 2  # three citations and one
    expected = unweighted + 3.0 * float(losses[decisions].sum())
    assert weighted == pytest.approx(expected, rel=1e-5)


def test_decision_weight_is_validated_and_names_its_own_run(tokenizer):
    for weight in (0, -1, float("nan")):
        with pytest.raises(UserError, match="decision weight"):
            DecisionWeights(weight)
    conversation = citation_conversation(CITES)
    hashes = {
        examples_hash([DecisionWeights(w)(tokenizer, conversation, max_length=2048)])
        for w in (1.0, 10.0)
    }
    assert len(hashes) == 2  # a checkpoint of one weighting never resumes the other
