"""The evaluation report: numbers worked out by hand, JSON, and an HTML page that a real
headless browser renders (Debian's chromium; scripts/setup installs it).

Four inputs, each reference album with two songs (6 leaves, 24 in all):
- "tuned" answers as the teacher, except one wrong song title on D:
  tp 23, fp 1, fn 1: precision = recall = F1 = 23/24 = 0.958;
- "base" is cut off on A (no JSON: 6 missed), right on B (6 matched), has a wrong
  artist and a wrong length on C (4 matched, 2 extra, 2 missed) and only the first song
  on D (4 matched, 2 missed): tp 14, fp 2, fn 10: precision 0.875, recall 0.583, F1 0.700.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from structune.adapters import AdapterManifest
from structune.errors import UserError
from structune.evaluate.report import EvalReport, evaluate
from structune.llms.base import LLM
from structune.llms.sampling import GREEDY, Sampling
from structune.messages import Completion, Message
from structune.tasks.albums import album_program

MOVIES = ["A", "B", "C", "D"]
REFERENCE = {
    m: {
        "name": f"{m} Suite",
        "artist": f"The {m}s",
        "songs": [
            {"title": f"{m} one", "length_seconds": 100},
            {"title": f"{m} two", "length_seconds": 200},
        ],
    }
    for m in MOVIES
}
BAR_BLUE = (0x4C, 0x78, 0xA8)  # the bars' colour in the report's plots


class Scripted(LLM):
    """Answers each movie with a scripted text; an answer given as (text, "length") was
    cut off at max_tokens. Reports 10 completion tokens per answer."""

    def __init__(self, model_id: str, answers: Mapping[str, Any]):
        self.model_id = model_id
        self.answers = answers

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 512,
        sampling: Sampling = GREEDY,
        json_schema: Mapping[str, Any] | None = None,
    ) -> Completion:
        movie = re.search(r"the movie (\w+) as", messages[-1]["content"]).group(1)
        answer = self.answers[movie]
        text, finish = answer if isinstance(answer, tuple) else (json.dumps(answer), "stop")
        return Completion(text, finish_reason=finish, completion_tokens=10)


def changed(movie: str, **fields: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(REFERENCE[movie])), **fields}


def scripted_models() -> dict[str, LLM]:
    d_songs = REFERENCE["D"]["songs"]
    return {
        "teacher": Scripted("teacher", REFERENCE),
        "tuned": Scripted(
            "tuned",
            {
                **REFERENCE,
                "D": changed("D", songs=[{**d_songs[0], "title": "wrong"}, d_songs[1]]),
            },
        ),
        "base": Scripted(
            "base",
            {
                # untrusted model output: must reach the page as text, never as markup
                "A": ('Sure! <script>document.title="pwned"</script> {"name": "A Su', "length"),
                "B": REFERENCE["B"],
                "C": changed(
                    "C",
                    artist="Somebody",
                    songs=[REFERENCE["C"]["songs"][0], {"title": "C two", "length_seconds": 201}],
                ),
                "D": changed("D", songs=d_songs[:1]),
            },
        ),
    }


ADAPTER = AdapterManifest(
    id="album-tiny01",
    base_model="smollm2-135m",
    task="album",
    dataset_hash="0" * 16,
    dataset_size=4,
    config={"max_steps": 6},
    loss_history=[2.4, 1.9, 1.5, 1.2, 1.05, 0.98],
    steps=6,
    tokens_trained=1200,
    train_seconds=3.0,
)


@pytest.fixture(scope="module")
def report() -> EvalReport:
    return evaluate(
        album_program,
        scripted_models(),
        [{"movie_name": m} for m in MOVIES],
        reference="teacher",
        adapters=[ADAPTER],
    )


def test_rates_and_agreement_match_the_hand_count(report):
    tuned, base = report.agreement("tuned").total, report.agreement("base").total
    assert (tuned.tp, tuned.fp, tuned.fn) == (23, 1, 1)
    assert (base.tp, base.fp, base.fn) == (14, 2, 10)
    assert report.agreement("teacher") is None  # the reference has no agreement row
    assert [line.split()[:4] for line in report.table().splitlines()[3:]] == [
        ["teacher", "4/4", "4/4", "0/4"],
        ["tuned", "4/4", "4/4", "0/4"],
        ["base", "3/4", "3/4", "1/4"],
    ]
    assert "0.958   0.958  0.958" in report.table()
    # valid but wrong: tuned's D; base's C and D (A is cut off, B right); none for the reference
    assert (report.content("tuned").wrong, report.content("tuned").judged) == (1, 4)
    assert (report.content("base").wrong, report.content("base").judged) == (2, 3)
    assert report.content("teacher").judged is None
    assert "0.875   0.583  0.700" in report.table()
    # base's worst first: the cut-off answer, then C (F1 4/6), then D (F1 0.8)
    assert [i for i, _ in report.worst("base")] == [0, 2, 3]
    assert [i for i, _ in report.worst("tuned")] == [3]


def test_json_carries_the_numbers_and_the_settings(report):
    data = json.loads(report.to_json())
    scores = {s["model"]: s for s in data["scores"]}
    assert scores["base"]["agreement"]["f1"] == pytest.approx(0.7)
    # artist: missed on A, right on B and D, wrong on C: tp 2, fp 1, fn 2
    artist = scores["base"]["agreement"]["paths"]["artist"]
    assert (artist["tp"], artist["fp"], artist["fn"]) == (2, 1, 2)
    assert artist["f1"] == pytest.approx(4 / 7)  # precision 2/3, recall 1/2
    assert scores["teacher"]["agreement"] is None
    assert data["answers"]["base"][0]["data"] is None and data["answers"]["base"][0]["truncated"]
    assert data["reference"]["name"] == "teacher" and data["reference"]["scored_inputs"] == 4
    greedy = {"temperature": 0.0, "top_p": 1.0, "seed": None, "repetition_penalty": 1.0}
    assert data["settings"] == {"rel_tol": 1e-6, "max_tokens": 512, "sampling": greedy}
    assert data["schema_hash"] == album_program.schema_hash
    assert data["adapters"][0]["loss_history"] == ADAPTER.loss_history


def test_html_is_self_contained_and_escapes_model_output(report, tmp_path):
    page = tmp_path / "report.html"
    report.write_html(page)
    text = page.read_text()
    assert "<script" not in text.lower()  # the model's <script> arrives as text
    assert "&lt;script&gt;" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|<link|@import|url\(http""", text)
    assert text.count("<svg") == 3  # the bars of rates and of content, the loss curves


def test_a_reference_invalid_on_an_input_leaves_it_out_of_agreement():
    teacher = Scripted("teacher", {**REFERENCE, "B": ("I cannot answer that.", "stop")})
    models = {"teacher": teacher, "same": Scripted("same", REFERENCE)}
    found = evaluate(
        album_program, models, [{"movie_name": m} for m in MOVIES], reference="teacher"
    )
    assert found.scored_inputs == 3
    assert found.agreement("same").total.tp == 18
    assert "over 3 inputs with a valid reference" in found.table()


def test_bad_setups_are_refused_before_any_model_runs():
    models = scripted_models()
    inputs = [{"movie_name": m} for m in MOVIES]
    with pytest.raises(UserError, match="no held-out inputs"):
        evaluate(album_program, models, [], reference="teacher")
    with pytest.raises(UserError, match="not among the models"):
        evaluate(album_program, models, inputs, reference="gpt")
    with pytest.raises(UserError, match="not both"):
        evaluate(album_program, models, inputs, reference="teacher", gold=list(REFERENCE.values()))
    other = ADAPTER.model_copy(update={"id": "cites-1", "task": "citations"})
    with pytest.raises(UserError, match="adapter cites-1 was trained for task 'citations'"):
        evaluate(album_program, models, inputs, reference="teacher", adapters=[other])


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium is not installed; the HTML report is checked in a real headless browser. "
            "Install it with `apt-get install -y chromium` (Debian), or run scripts/setup as root"
        )
    return found


def test_the_report_renders_in_a_headless_browser_with_its_numbers(report, tmp_path):
    from PIL import Image  # pillow comes with matplotlib, in the `report` extra

    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    report.write_html(page)
    run = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1000",
            f"--screenshot={shot}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    # the page as the browser built it: tables, plots, cases, with the hand-counted numbers
    assert "<title>structune eval: album</title>" in dom
    for model in ("teacher", "tuned", "base", "album-tiny01"):
        assert f"<td>{model}</td>" in dom
    for number in ("3/4", "1/4", "0.875", "0.583", "0.700", "0.958"):
        assert f"<td>{number}</td>" in dom
    assert dom.count("<svg") == 3 and "training step" in dom and "agreement F1" in dom
    assert "distinct list items" in dom and "valid but wrong" in dom
    assert "0.70" in dom and "0.96" in dom  # the F1 bars' labels
    assert "&lt;script&gt;" in dom and "pwned" not in run.stderr
    # and what it painted: a full page, with the bars drawn
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1000)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 100, "the screenshot is (nearly) blank"
    assert any(
        sum(abs(a - b) for a, b in zip(rgb, BAR_BLUE, strict=True)) < 12 for _, rgb in colours
    )
