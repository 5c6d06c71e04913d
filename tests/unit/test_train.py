"""Training on a tiny Llama built from a config, with the real tokenizer and template."""

import io
import json
import logging
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from structune import StructuneError, TrainConfig, UserError, finetune, list_adapters
from structune.adapters import load_manifest
from structune.models.chat import render_chat
from structune.tasks.albums import album_program
from structune.train.data import IGNORE_INDEX, tokenize_conversation, training_batches
from structune.train.lora import learning_rate_at
from training_data import conversations


def test_loss_falls_only_on_the_answer_and_matches_inference_tokens(tokenizer):
    conversation = conversations(1)[0]
    example = tokenize_conversation(tokenizer, conversation, max_length=2048)
    prompt = render_chat(tokenizer, conversation[:-1], add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # The prompt is tokenized exactly as LocalLLM tokenizes it at inference.
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in example.labels[: len(prompt_ids)])
    answer = [t for t in example.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(answer) == conversation[-1]["content"] + tokenizer.eos_token


def test_padding_a_batch_changes_no_examples_loss(tiny_model_dir, tokenizer):
    # answer_loss runs without an attention mask: right padding must not reach real tokens
    from structune.models.loading import load_model
    from structune.train.data import collate
    from structune.train.lora import answer_loss, with_lora

    model, _ = load_model(str(tiny_model_dir), dtype="float32")
    model = with_lora(model, TrainConfig(lora_r=4, lora_alpha=8))
    examples = [tokenize_conversation(tokenizer, c, max_length=2048) for c in conversations(3)]
    assert len({len(e.input_ids) for e in examples}) > 1  # so the batch pads
    with torch.no_grad():
        alone = [
            answer_loss(model, collate([e], pad_token_id=0), reduction="sum") for e in examples
        ]
        padded = answer_loss(model, collate(examples, pad_token_id=0), reduction="sum")
    assert float(padded) == pytest.approx(float(sum(alone)), rel=1e-5)


def test_gradient_checkpointing_recomputes_each_layer_and_gives_the_same_gradients(
    tiny_model_dir, tokenizer
):
    from structune.models.loading import load_model
    from structune.train.data import collate
    from structune.train.lora import _recompute_activations, answer_loss, with_lora

    examples = [tokenize_conversation(tokenizer, c, max_length=2048) for c in conversations(2)]
    batch = collate(examples, pad_token_id=0)
    gradients, calls = [], []
    for recompute in (False, True):
        torch.manual_seed(0)
        model, _ = load_model(str(tiny_model_dir), dtype="float32")
        model = with_lora(model, TrainConfig(lora_r=4, lora_alpha=8))
        if recompute:
            _recompute_activations(model)
        model.train()
        mlp = model.get_base_model().get_decoder().layers[0].mlp
        mlp.register_forward_pre_hook(lambda *_, run=recompute: calls.append(run))
        answer_loss(model, batch).backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert calls == [False, True, True]  # run once, or run and recomputed in the backward
    plain, recomputed = gradients
    assert plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-7)


def test_prompt_longer_than_max_length_is_a_clear_error(tokenizer):
    with pytest.raises(UserError, match="max_length"):
        tokenize_conversation(tokenizer, conversations(1)[0], max_length=16)


@pytest.mark.parametrize("grouped", [False, True])
def test_batches_cover_every_example_each_epoch(grouped):
    from structune.train.data import TokenizedExample

    examples = [TokenizedExample([i] * (i + 1), [i] * (i + 1)) for i in range(10)]
    batches = training_batches(examples, batch_size=3, seed=1, group_by_length=grouped)
    epoch = [next(batches) for _ in range(4)]  # 3 + 3 + 3 + 1
    assert sorted(e.input_ids[0] for batch in epoch for e in batch) == list(range(10))


def test_grouped_batches_pad_less_than_shuffled_ones():
    from structune.train.data import TokenizedExample

    examples = [TokenizedExample([0] * n, [0] * n) for n in range(1, 65)]

    def padding(grouped: bool) -> int:
        batches = training_batches(examples, batch_size=4, seed=0, group_by_length=grouped)
        epoch = [next(batches) for _ in range(16)]
        lengths = [[len(e.input_ids) for e in batch] for batch in epoch]
        return sum(max(n) * len(n) - sum(n) for n in lengths)

    assert padding(grouped=True) < padding(grouped=False) / 4


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [learning_rate_at(s, total=10, peak=1.0, warmup_ratio=0.2) for s in range(10)]
    assert rates[0] == 0.5 and rates[1] == 1.0
    assert rates[2:] == sorted(rates[2:], reverse=True) and rates[-1] < 0.2


def test_finetune_changes_the_adapter_not_the_base_and_continues(tiny_model_dir):
    base_before = load_file(tiny_model_dir / "model.safetensors")
    config = TrainConfig(max_steps=4, batch_size=2, learning_rate=1e-2, lora_r=4, lora_alpha=8)
    manifest = finetune(
        conversations(), base=str(tiny_model_dir), config=config, task="album", progress=False
    )

    assert manifest.steps == 4 and len(manifest.loss_history) == 4
    assert manifest.dataset_size == 6 and manifest.parent is None
    weights = load_file(manifest.path / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # lora_B starts at zero
    base_after = load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    saved = json.loads((manifest.path / "structune.json").read_text())
    assert saved["config"]["lora_r"] == 4 and saved["versions"]["peft"]

    child = finetune(
        conversations(), config=config, parent=manifest.id, task="album", progress=False
    )
    assert child.parent == manifest.id and child.base_model == str(tiny_model_dir)
    child_weights = load_file(child.path / "adapter_model.safetensors")
    assert any(not torch.equal(weights[k], child_weights[k]) for k in weights)
    assert {m.id for m in list_adapters()} >= {manifest.id, child.id}
    assert load_manifest(child.id) == child


def sgd_step_length(model_dir, tokenizer, *, tokens_per_batch, max_grad_norm):
    """How far one `_train_step` of plain SGD at lr 1 moves the LoRA weights: the norm of
    the (clipped) gradient it applied."""
    from structune.models.loading import load_model
    from structune.train.distributed import Ranks
    from structune.train.lora import _summed_answer_loss, _train_step, with_lora

    torch.manual_seed(0)
    model, _ = load_model(str(model_dir), dtype="float32")
    model = with_lora(model, TrainConfig(lora_r=4, lora_alpha=8))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    batch = [tokenize_conversation(tokenizer, c, max_length=2048) for c in conversations(2)]
    ranks = Ranks()
    _train_step(
        _summed_answer_loss(model, ranks),
        torch.optim.SGD(trainable, lr=1.0),
        batch,
        ranks,
        lr=1.0,
        tokens_per_batch=tokens_per_batch,
        max_grad_norm=max_grad_norm,
        bf16=False,
        pad=tokenizer.pad_token_id,
    )
    steps = [(p.detach() - b).flatten() for p, b in zip(trainable, before, strict=True)]
    return float(torch.linalg.vector_norm(torch.cat(steps)))


def test_a_step_clips_the_gradients_global_norm(tiny_model_dir, tokenizer):
    unclipped = sgd_step_length(tiny_model_dir, tokenizer, tokens_per_batch=100, max_grad_norm=None)
    clipped = sgd_step_length(tiny_model_dir, tokenizer, tokens_per_batch=100, max_grad_norm=1e-3)
    assert unclipped > 1e-2  # so the clip is not a no-op
    assert clipped == pytest.approx(1e-3, rel=1e-3)


def test_a_batch_weighs_by_its_answer_tokens_not_as_a_mean(tiny_model_dir, tokenizer):
    # The same batch in a dataset of twice the answer tokens per batch moves the weights
    # half as far: its summed loss is divided by the dataset's mean, not its own count.
    small = sgd_step_length(tiny_model_dir, tokenizer, tokens_per_batch=100, max_grad_norm=None)
    large = sgd_step_length(tiny_model_dir, tokenizer, tokens_per_batch=200, max_grad_norm=None)
    assert small == pytest.approx(2 * large, rel=1e-4)


def test_a_non_positive_max_grad_norm_is_refused():
    with pytest.raises(UserError, match="max_grad_norm must be positive"):
        TrainConfig(max_grad_norm=0.0).validate()


def test_lora_dropout_reaches_the_saved_adapter_and_an_out_of_range_one_is_refused(
    tiny_model_dir, tmp_path, capsys
):
    from structune.cli import main

    jsonl = tmp_path / "dropped.jsonl"
    jsonl.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations(2)))
    argv = ["-q", "train", "--jsonl", str(jsonl), "--base", str(tiny_model_dir)]
    argv += ["--max-steps", "1", "--lora-r", "4"]
    assert main([*argv, "--lora-dropout", "0.2"]) == 0
    (manifest,) = [m for m in list_adapters() if m.id.startswith("dropped-")]
    assert manifest.config["lora_dropout"] == 0.2
    peft_config = json.loads((manifest.path / "adapter_config.json").read_text())
    assert peft_config["lora_dropout"] == 0.2

    with pytest.raises(SystemExit) as refused:  # argparse: before anything loads
        main([*argv, "--lora-dropout", "1"])
    assert refused.value.code == 2
    assert "--lora-dropout: must be in [0, 1), got 1" in capsys.readouterr().err


def test_training_on_no_examples_is_refused():
    with pytest.raises(UserError, match="no training examples"):
        finetune([], progress=False)


def test_non_finite_loss_stops_and_saves_nothing(tiny_model_dir):
    before = {m.id for m in list_adapters()}
    config = TrainConfig(max_steps=20, batch_size=2, learning_rate=1e30, lora_r=4)
    with pytest.raises(StructuneError, match="loss is"):
        finetune(conversations(), base=str(tiny_model_dir), config=config, progress=False)
    assert {m.id for m in list_adapters()} == before


def test_training_logs_its_progress_where_no_bar_can_show(tiny_model_dir, caplog, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # no terminal, as under nohup
    config = TrainConfig(max_steps=3, batch_size=2, lora_r=4)
    with caplog.at_level(logging.INFO, logger="structune.train.lora"):
        finetune(conversations(2), base=str(tiny_model_dir), config=config)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training")]
    assert [line.split(",")[0] for line in lines] == [f"training step {n}/3" for n in (1, 2, 3)]
    assert lines[-1].endswith("about 0.0 min left")
    assert "training" not in sys.stderr.getvalue()  # and no bar written to the log


def test_finetune_trains_on_the_examples_its_tokenize_hook_makes(tiny_model_dir):
    made = []

    def every_token_twice(tokenizer, messages, *, max_length):
        example = tokenize_conversation(tokenizer, messages, max_length=max_length)
        made.append(example)
        return replace(example, weights=[2.0] * len(example.input_ids))

    config = TrainConfig(max_steps=1, batch_size=2, lora_r=4, lora_alpha=8, checkpoint_every=0)
    train = {"base": str(tiny_model_dir), "config": config, "progress": False}
    plain = finetune(conversations(2), **train)
    weighted = finetune(conversations(2), **train, tokenize=every_token_twice)
    assert len(made) == 2  # one example per conversation, the hook's own
    # the same first step (same seed, same initial LoRA), every token's loss weighed twice
    assert weighted.loss_history[0] == pytest.approx(2 * plain.loss_history[0], rel=1e-3)


def test_unknown_adapter_lists_the_known_ones(tiny_model_dir):
    with pytest.raises(UserError, match=r"adapter 'nope' not found.*known adapters"):
        load_manifest("nope")


def test_invalid_config_is_refused():
    with pytest.raises(UserError, match="batch_size must be a positive number"):
        finetune(conversations(), config=TrainConfig(batch_size=0), progress=False)
    with pytest.raises(UserError, match="unlikelihood must be 0"):
        finetune(conversations(), config=TrainConfig(unlikelihood=-1), progress=False)


def test_corrupt_adapter_file_is_a_clear_error(tiny_model_dir):
    from structune import BackendError
    from structune.llms.local import LocalLLM

    config = TrainConfig(max_steps=1, batch_size=2, lora_r=4)
    manifest = finetune(conversations(2), base=str(tiny_model_dir), config=config, progress=False)
    weights = manifest.path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BackendError, match="corrupt or truncated"):
        LocalLLM.load(adapter=manifest.id)


def test_merged_export_answers_exactly_like_the_adapter(tiny_model_dir, tmp_path):
    from structune.export.merged import export_merged
    from structune.llms.local import LocalLLM

    config = TrainConfig(max_steps=3, batch_size=2, learning_rate=1e-2, lora_r=4)
    manifest = finetune(conversations(4), base=str(tiny_model_dir), config=config, progress=False)
    out = export_merged(manifest.id, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "structune.json").is_file()

    with_adapter = LocalLLM.load(adapter=manifest.id, dtype="float32")
    merged = LocalLLM.load(str(out), dtype="float32")
    assert merged.tokenizer.chat_template == with_adapter.tokenizer.chat_template
    assert merged.model.generation_config.eos_token_id == merged.tokenizer.eos_token_id
    prompts = [album_program.messages({"movie_name": m}) for m in ["Heat", "Alien"]]
    expected = [c.text for c in with_adapter.complete_many(prompts, max_tokens=12)]
    assert [c.text for c in merged.complete_many(prompts, max_tokens=12)] == expected


def test_export_adapter_cli_and_half_written_adapters_are_not_listed(tiny_model_dir, tmp_path):
    import shutil

    from structune.cli import main

    config = TrainConfig(max_steps=1, batch_size=2, lora_r=4)
    manifest = finetune(
        conversations(2), base=str(tiny_model_dir), config=config, task="my/task", progress=False
    )
    assert "/" not in manifest.id and manifest.id in {m.id for m in list_adapters()}
    assert (
        main(["-q", "export-adapter", manifest.id, str(tmp_path / "m"), "--format", "merged"]) == 0
    )
    assert (tmp_path / "m" / "model.safetensors").is_file()

    staging = manifest.path.with_name(f".{manifest.id}.partial-1")
    shutil.copytree(manifest.path, staging)
    assert staging.name not in {m.id for m in list_adapters()}
    assert all(not m.id.startswith(".") for m in list_adapters())


def test_continuing_records_the_parents_lora_shape(tiny_model_dir):
    parent = finetune(
        conversations(2),
        base=str(tiny_model_dir),
        progress=False,
        config=TrainConfig(max_steps=1, batch_size=2, lora_r=4, lora_alpha=8),
    )
    child = finetune(
        conversations(2),
        parent=parent.id,
        progress=False,
        config=TrainConfig(max_steps=1, batch_size=2),
    )
    assert (child.config["lora_r"], child.config["lora_alpha"]) == (4, 8)


def test_a_jsonl_adapter_records_its_program_only_when_told(tiny_model_dir, tmp_path, caplog):
    from structune.cli import main
    from structune.evaluate.report import check_setup

    jsonl = tmp_path / "movies_structured.jsonl"
    lines = [{"messages": c} for c in conversations(4)]
    lines[0]["messages"][-1]["content"] = '{"name": "no artist, no songs"}'  # not an Album
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    argv = ["-q", "train", "--jsonl", str(jsonl), "--base", str(tiny_model_dir)]
    argv += ["--max-steps", "1", "--lora-r", "4"]

    def trained_by(command: list[str]):
        before = {m.id for m in list_adapters()}
        assert main(command) == 0
        (new,) = [m for m in list_adapters() if m.id not in before]
        return new

    told = trained_by([*argv, "--program", "album"])
    assert told.id.startswith("movies_structured-") and told.task == "album"
    assert told.dataset_size == 3  # the answer that is not an Album was left out
    check_setup(album_program, [{"movie_name": "Heat"}], adapters=[told])

    untold = trained_by(argv)
    assert untold.id.startswith("movies_structured-") and untold.task is None
    assert untold.dataset_size == 4
    check_setup(album_program, [{"movie_name": "Heat"}], adapters=[untold])  # warns only
    assert "does not record its task" in caplog.text

    assert main(["-q", "train", "--task", "album", "--program", "album"]) == 1


def test_unlikelihood_sums_each_earlier_distinct_word_other_than_the_target():
    from structune.train.lora import repetition_unlikelihood

    torch.manual_seed(0)
    answers = [torch.tensor([5, 6, 5, 7, 6, 6, 3, 8]), torch.tensor([1, 1, 2])]
    logits = torch.randn(11, 10)
    words = torch.tensor([i != 3 for i in range(10)])  # token 3 (a digit, say) may repeat
    expected = []
    offset = 0
    for answer in answers:
        for i, target in enumerate(answer.tolist()):
            p = logits[offset + i].softmax(-1)
            candidates = set(answer[:i].tolist()) - {target, 3}
            expected.append(sum(-torch.log(1 - p[c]) for c in candidates) + 0.0)
        offset += len(answer)
    torch.testing.assert_close(
        repetition_unlikelihood(logits, answers, words),
        torch.tensor(expected, dtype=torch.float32),
    )


def test_answer_loss_adds_each_answers_own_unlikelihood_term(tiny_model_dir, tokenizer):
    # two answers of different lengths in one padded batch: each token's candidates come
    # from its own answer only
    from structune.models.loading import load_model
    from structune.train.data import collate
    from structune.train.lora import answer_loss, repetition_unlikelihood, with_lora, word_tokens

    examples = [tokenize_conversation(tokenizer, c, max_length=2048) for c in conversations(2)]
    words = word_tokens(tokenizer)
    assert all(words[i] for i in tokenizer(" Room I'll", add_special_tokens=False).input_ids)
    assert not any(words[i] for i in tokenizer(' 237 "},', add_special_tokens=False).input_ids)
    model, _ = load_model(str(tiny_model_dir), dtype="float32")
    model = with_lora(model, TrainConfig(lora_r=4, lora_alpha=8))
    batch = collate(examples, pad_token_id=0)
    alone = []
    with torch.no_grad():
        for example in examples:
            single = collate([example], pad_token_id=0)
            keep = single["labels"][:, 1:] != IGNORE_INDEX
            hidden = model.get_base_model().get_decoder()(input_ids=single["input_ids"])
            logits = model.get_base_model().get_output_embeddings()(
                hidden.last_hidden_state[:, :-1][keep]
            )
            answer = single["labels"][:, 1:][keep]
            alone.append(repetition_unlikelihood(logits, [answer], words).sum())
        plain = answer_loss(model, batch, reduction="sum")
        with_term = answer_loss(model, batch, reduction="sum", unlikelihood=2.0, words=words)
    assert float(sum(alone)) > 0
    # the sums are ~10^3 in float32: their difference carries ~10^-4 of rounding
    assert float(with_term - plain) == pytest.approx(2.0 * float(sum(alone)), abs=2e-3)
