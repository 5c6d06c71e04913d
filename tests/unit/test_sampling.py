"""`Sampling`: its checks, how a violation is re-sampled, the CLI flags that build it, and
the tiny random model decoding with it under a grammar."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import jsonschema
import pytest

from structune import Sampling, UserError
from structune.cli import build_parser
from structune.cli.args import sampling_from
from structune.constrain.checked import RESAMPLE_SEED, RESAMPLE_TEMPERATURE, resampling
from structune.llms.local import LocalLLM
from structune.llms.sampling import GREEDY, MAX_SEED


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"temperature": -0.1}, "temperature", "between 0 (greedy) and 2"),
        ({"temperature": 2.5}, "temperature", "between 0 (greedy) and 2"),
        ({"temperature": float("nan")}, "temperature", "between 0"),
        ({"temperature": "1"}, "temperature", "between 0"),
        ({"top_p": 0.0}, "top_p", "(0, 1]"),
        ({"top_p": 1.01}, "top_p", "(0, 1]"),
        ({"seed": -1}, "seed", f"from 0 to {MAX_SEED}"),
        ({"seed": MAX_SEED + 1}, "seed", f"from 0 to {MAX_SEED}"),
        ({"seed": 1.0}, "seed", "an integer"),
        ({"seed": True}, "seed", "an integer"),
        ({"repetition_penalty": 0.0}, "repetition_penalty", "above 0"),
        ({"repetition_penalty": float("inf")}, "repetition_penalty", "finite"),
    ],
)
def test_a_bad_option_is_refused_naming_the_field_and_its_range(options, field, says):
    with pytest.raises(UserError, match=rf"^{field} must .*{re.escape(says)}"):
        Sampling(**options)


def test_the_edges_of_every_range_are_accepted():
    Sampling(temperature=2, top_p=1e-9, seed=0, repetition_penalty=0.5)
    Sampling(temperature=0.0, top_p=1.0, seed=MAX_SEED, repetition_penalty=3)


def test_greedy_is_temperature_zero_with_or_without_a_penalty():
    assert GREEDY.greedy and Sampling().greedy and Sampling(repetition_penalty=1.3).greedy
    assert not Sampling(temperature=0.1).greedy


def test_equal_options_are_one_batching_key_and_cannot_be_changed():
    assert hash(Sampling(temperature=0.5, seed=1)) == hash(Sampling(temperature=0.5, seed=1))
    assert len({Sampling(), GREEDY, Sampling(top_p=0.9)}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        GREEDY.temperature = 1.0  # type: ignore[misc]


def test_a_violation_is_resampled_at_the_callers_options_or_warmer_when_greedy():
    warmed = resampling(Sampling(repetition_penalty=1.2), attempt=2)
    assert warmed == Sampling(
        temperature=RESAMPLE_TEMPERATURE, seed=RESAMPLE_SEED + 2, repetition_penalty=1.2
    )
    mine = resampling(Sampling(temperature=1.3, top_p=0.8, seed=99), attempt=1)
    assert mine == Sampling(temperature=1.3, top_p=0.8, seed=RESAMPLE_SEED + 1)


DECODING_COMMANDS = {
    "prompt": ["prompt", "hi"],
    "compare": ["compare", "--inputs", "in.txt", "--model", "smollm2-135m"],
    "eval": ["eval", "--inputs", "in.txt", "--model", "smollm2-135m"],
    "record": ["record", "--inputs", "in.txt", "--teacher", "offline:albums"],
    "ask": ["ask", "what?", "--index", "idx"],
}


@pytest.mark.parametrize("command", list(DECODING_COMMANDS))
def test_every_decoding_command_takes_the_sampling_flags(command):
    parse = build_parser().parse_args
    argv = DECODING_COMMANDS[command]
    assert sampling_from(parse(argv)) == GREEDY
    args = parse(
        [*argv, "--temperature", "0.8", "--top-p", "0.9", "--seed", "12",
         "--repetition-penalty", "1.1"]
    )  # fmt: skip
    assert sampling_from(args) == Sampling(
        temperature=0.8, top_p=0.9, seed=12, repetition_penalty=1.1
    )


def test_a_seed_past_32_bits_is_refused_before_any_model_loads():
    args = build_parser().parse_args(["prompt", "hi", "--seed", str(MAX_SEED + 1)])
    with pytest.raises(UserError, match="seed must be"):
        sampling_from(args)


def test_importing_sampling_imports_no_torch():
    code = "import structune; structune.Sampling(); import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir):
    return LocalLLM.load(str(tiny_model_dir), dtype="float32", batch_size=4)


SMALL = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("penalty", [0.05, 1.0, 5.0])
@pytest.mark.parametrize("temperature", [0.0, 2.0])
def test_no_option_lets_an_answer_leave_its_schema(tiny_llm, penalty, temperature):
    # A penalty below 1 pushes up every token of the prompt (braces, quotes, "true"), above
    # 1 pushes them down: applied before the grammar's mask, neither can undo it.
    prompts = [[{"role": "user", "content": f'{{"ok": true, "n": {i}}} {{ }} " , : ok'}]
               for i in range(4)]  # fmt: skip
    sampling = Sampling(temperature=temperature, seed=0, repetition_penalty=penalty)
    completions = tiny_llm.complete_many(
        prompts, max_tokens=32, sampling=sampling, json_schema=SMALL
    )
    finished = [c for c in completions if c.finish_reason == "stop"]
    assert finished, [c.text for c in completions]
    for completion in finished:
        jsonschema.validate(json.loads(completion.text), SMALL)


def test_a_seeded_call_repeats_and_leaves_the_callers_random_state_alone(tiny_llm):
    import torch

    prompts = [[{"role": "user", "content": word}] for word in ["tea", "sea"]]
    sampling = Sampling(temperature=1.0, seed=11)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = [c.text for c in tiny_llm.complete_many(prompts, max_tokens=8, sampling=sampling)]
    assert torch.equal(torch.random.get_rng_state(), state)
    again = [c.text for c in tiny_llm.complete_many(prompts, max_tokens=8, sampling=sampling)]
    assert again == first
    other = Sampling(temperature=1.0, seed=12)
    assert [c.text for c in tiny_llm.complete_many(prompts, max_tokens=8, sampling=other)] != first
