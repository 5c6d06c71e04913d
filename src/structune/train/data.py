"""Training data: conversations in, token ids with assistant-only labels out.

A training example is a chat conversation whose last turn is the assistant's answer.
The prompt part is rendered with a generation prompt and tokenized on its own by
`chat_token_ids`, exactly as at inference (message contents never yield control tokens),
and the answer tokens follow; only the answer (up to and including the end-of-turn token)
carries loss. Batches are padded to their longest member, not to a fixed length, and can
be grouped by length to pad less (`training_batches`).

`tokenize_conversation` is the trainer's default; `finetune(..., tokenize=...)` takes any
`ExampleTokenizer`, the hook for experiments that cut the answer into other tokens or weigh
some of them more in the loss, built from `split_training_chat` and `tokenize_conversation`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from structune.errors import UserError
from structune.hashing import content_hash
from structune.messages import Message
from structune.models.chat import (
    RenderedChat,
    chat_token_ids,
    render_chat,
    render_chat_contents,
)

IGNORE_INDEX = -100  # labels with this value carry no loss (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class TokenizedExample:
    """A conversation's token ids, its labels (`IGNORE_INDEX` outside the answer) and, where
    some answer tokens weigh more in the loss, a weight per token (None: all 1.0)."""

    input_ids: list[int]
    labels: list[int]
    weights: list[float] | None = None


def dataset_hash(conversations: Sequence[Sequence[Message]]) -> str:
    return content_hash([list(c) for c in conversations], length=16)


def examples_hash(examples: Sequence[TokenizedExample]) -> str:
    """A short hash of the token ids, labels and weights a run trains on: the data part of
    its identity (`structune.train.checkpoints.run_key`), whichever `ExampleTokenizer`
    made them."""
    return content_hash([[e.input_ids, e.labels, e.weights] for e in examples], length=16)


class ExampleTokenizer(Protocol):
    """How `finetune` turns a conversation into a training example (its `tokenize`).

    `tokenize_conversation` is the default. Another one can cut the answer into other
    tokens or weigh some of them more in the loss (`TokenizedExample.weights`). It should
    be deterministic: a run's checkpoints are keyed by the examples it makes
    (`examples_hash`), so a run resumes only on the same examples.
    """

    def __call__(
        self, tokenizer: Any, messages: Sequence[Message], *, max_length: int
    ) -> TokenizedExample: ...


def split_training_chat(tokenizer: Any, messages: Sequence[Message]) -> tuple[RenderedChat, int]:
    """`messages` rendered by the chat template, and the character where the answer (the
    final assistant message) starts: the prompt with its generation prompt ends there.

    Raises:
        UserError: the conversation does not end with an assistant message, or the template
            renders it otherwise than it renders its prompt.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise UserError("a training conversation must end with an assistant message")
    prompt = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    full = render_chat_contents(tokenizer, messages, add_generation_prompt=False)
    if not full.text.startswith(prompt):
        raise UserError(
            "the chat template renders a conversation differently from its prompt, so the "
            "answer cannot be located; use a model whose template extends the prompt"
        )
    return full, len(prompt)


def tokenize_conversation(
    tokenizer: Any, messages: Sequence[Message], *, max_length: int
) -> TokenizedExample:
    """Token ids of a whole conversation; labels only on the final assistant answer.

    Where the answer message has `learn_from`, the answer tokens that lie wholly before that
    character carry no loss either: a prefix given, not learned.
    """
    full, prompt_end = split_training_chat(tokenizer, messages)
    # The two parts are tokenized apart, the prompt exactly as inference tokenizes it.
    prompt_ids = chat_token_ids(tokenizer, full, end=prompt_end)
    answer_ids = chat_token_ids(tokenizer, full, start=prompt_end)
    if tokenizer.eos_token_id in answer_ids:  # drop what the template writes after end-of-turn
        answer_ids = answer_ids[: answer_ids.index(tokenizer.eos_token_id) + 1]
    if len(prompt_ids) + len(answer_ids) > max_length:
        # Cutting it would teach the model to stop mid-answer, without end-of-turn.
        raise UserError(
            f"a training example is {len(prompt_ids) + len(answer_ids)} tokens "
            f"({len(prompt_ids)} prompt), over max_length={max_length}; raise max_length or "
            "shorten the prompt"
        )
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    if "learn_from" in messages[-1]:
        given = _given_tokens(tokenizer, full.text[prompt_end:], answer_ids, messages[-1])
        labels[len(prompt_ids) : len(prompt_ids) + given] = [IGNORE_INDEX] * given
    return TokenizedExample(prompt_ids + answer_ids, labels)


def _given_tokens(tokenizer: Any, answer_text: str, answer_ids: list[int], answer: Message) -> int:
    """How many of the answer's tokens end at or before its character `learn_from`: the
    token that holds that character is learned, so the answer is cut where the model's own
    tokens would cut it ('"}]}' as one token, not '"}' given and ']}' learned)."""
    content, learn_from = answer["content"], answer.get("learn_from", 0)
    start = answer_text.find(content)
    if not 0 < learn_from <= len(content) or start < 0 or not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"a given answer prefix (learn_from={learn_from}) needs a fast tokenizer, a chat "
            f"template that writes the answer as it is and an offset within its "
            f"{len(content)} characters"
        )
    encoded = tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"][: len(answer_ids)] != answer_ids:
        raise UserError(
            "a given answer prefix (learn_from) needs an answer without control-token text"
        )
    offsets = encoded["offset_mapping"][: len(answer_ids)]
    return sum(1 for _, end in offsets if end <= start + learn_from)


def training_batches(
    examples: Sequence[TokenizedExample], *, batch_size: int, seed: int, group_by_length: bool
) -> Iterator[list[TokenizedExample]]:
    """Endless batches, each epoch a new shuffle.

    With `group_by_length`, each window of 8 batches' worth of examples is sorted by length
    before it is cut into batches, so that batches hold similar lengths and pad little.
    Faster, but each batch then holds one kind of example (four empty answers, four long
    lists), and on a small dataset the model learns less per step: on the long-answer set of
    `benchmarks/trainer_vs_hf.py` (10 steps), final answer loss 0.130 grouped against 0.115
    shuffled for a loop of 124 s instead of 148 (seed 0; over seeds 0-2, run with its
    functions by a one-off script, 0.123 against 0.111). Off by default, as in
    transformers' `Trainer` (`group_by_length`).
    """
    rng = random.Random(seed)
    window = batch_size * 8 if group_by_length else batch_size
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            if group_by_length:
                chunk.sort(key=lambda i: len(examples[i].input_ids))
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(batches)
            for batch in batches:
                yield [examples[i] for i in batch]


def collate(batch: Sequence[TokenizedExample], *, pad_token_id: int) -> dict[str, Any]:
    """Right-pad a batch to its longest example: tensors of shape (batch, longest), with
    `weights` where an example has them."""
    import torch

    longest = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    tensors = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    if any(example.weights is not None for example in batch):
        tensors["weights"] = torch.ones((len(batch), longest))
        for row, example in enumerate(batch):
            if example.weights is not None:
                tensors["weights"][row, : len(example.weights)] = torch.tensor(example.weights)
    return tensors
