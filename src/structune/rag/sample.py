"""Papers written here as PDFs: the demo's sample paper, and any text laid out as a paper.

The sample paper (`write_sample_pdf`), for the demo's RAG part when no PDF is given:
numbered sections of plain prose that cite well-known works in the author-year styles real
papers use ("(Vaswani et al., 2017)", "Hu et al. (2021)", "(Brown et al., 2020; Ouyang et
al., 2022)"). The text is assembled from fixed sentences, so the PDF, its chunks and its
citations are the same on every run; PyMuPDF writes it, so the demo reads a real PDF.

`write_paper_pdf` lays out given text the way typeset papers are: body text flowing over
one or two columns, shaped by MuPDF's layout engine (so "fi" and "ffi" become ligature
glyphs, as in LaTeX output), then a bibliography with hanging indents. The suite writes its
test papers with it, so no test needs a PDF from outside the repository.
"""

from __future__ import annotations

import html
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

WORKS = [
    ("Vaswani et al.", 2017, "the Transformer architecture"),
    ("Devlin et al.", 2019, "bidirectional pre-training of language representations"),
    ("Radford et al.", 2019, "unsupervised multitask language models"),
    ("Brown et al.", 2020, "few-shot learning with very large language models"),
    ("Raffel et al.", 2020, "a unified text-to-text transformer"),
    ("Hu et al.", 2021, "low-rank adaptation of large language models"),
    ("Houlsby et al.", 2019, "parameter-efficient transfer learning with adapters"),
    ("Li and Liang", 2021, "prefix-tuning of generation tasks"),
    ("Lester et al.", 2021, "prompt tuning at scale"),
    ("Ouyang et al.", 2022, "training language models to follow instructions"),
    ("Christiano et al.", 2017, "reinforcement learning from human preferences"),
    ("Stiennon et al.", 2020, "learning to summarize from human feedback"),
    ("Schulman et al.", 2017, "proximal policy optimization"),
    ("Wei et al.", 2022, "chain-of-thought prompting"),
    ("Kaplan et al.", 2020, "scaling laws for neural language models"),
    ("Hoffmann et al.", 2022, "compute-optimal training of large models"),
    ("Touvron et al.", 2023, "open foundation language models"),
    ("Dettmers et al.", 2023, "efficient fine-tuning of quantized models"),
    ("Lewis et al.", 2020, "retrieval-augmented generation"),
    ("Karpukhin et al.", 2020, "dense passage retrieval"),
    ("Reimers and Gurevych", 2019, "sentence embeddings with siamese networks"),
    ("Willard and Louf", 2023, "efficient guided generation for language models"),
    ("Scholak et al.", 2021, "constrained decoding for text-to-SQL"),
    ("Geng et al.", 2023, "grammar-constrained decoding for structured prediction"),
]
SECTIONS = [
    "Introduction",
    "Related Work",
    "Parameter-Efficient Fine-Tuning",
    "Learning from Human Feedback",
    "Retrieval and Grounding",
    "Structured Outputs",
    "Method",
    "Datasets",
    "Experiments",
    "Limitations",
    "Discussion",
    "Conclusion",
]
PLAIN = [
    "We keep the experimental setup deliberately small so that every result can be reproduced "
    "on a laptop.",
    "The models we study have between one hundred million and one billion parameters.",
    "Each configuration is trained three times and we report the mean.",
    "Table 2 lists the hyper-parameters; Figure 3 shows the learning curves.",
    "The remaining differences are within the variance between runs.",
]


def _sentence(rng: random.Random) -> str:
    (a1, y1, t1), (a2, y2, t2) = rng.sample(WORKS, 2)
    return rng.choice(
        [
            f"Our approach builds on {t1} ({a1}, {y1}).",
            f"{a1} ({y1}) introduced {t1}, which we adopt as a baseline.",
            f"Prior work studied {t1} and {t2} ({a1}, {y1}; {a2}, {y2}).",
            f"As shown by {a1} ({y1}), {t1} transfers well to small models.",
            f"We compare against {t1} [{a1}, {y1}] under the same budget.",
            f"Unlike {t2} ({a2}, {y2}), our method needs no additional parameters.",
        ]
    )


def sample_paper_text(seed: int = 0) -> list[tuple[str, str]]:
    """(section title, body) pairs of the sample paper."""
    rng = random.Random(seed)
    sections = []
    for title in SECTIONS:
        paragraphs = []
        for _ in range(3):
            sentences = [_sentence(rng) for _ in range(4)] + [rng.choice(PLAIN)]
            rng.shuffle(sentences)
            paragraphs.append(" ".join(sentences))
        sections.append((title, "\n\n".join(paragraphs)))
    return sections


def write_sample_pdf(path: str | Path) -> Path:
    """Write the sample paper to `path` as a PDF with a text layer; return the path."""
    import pymupdf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = pymupdf.open()
    for number, (title, body) in enumerate(sample_paper_text(), start=1):
        page = doc.new_page()  # a section a page: each fits on one
        box = pymupdf.Rect(72, 72, page.rect.width - 72, page.rect.height - 72)
        page.insert_textbox(box, f"{number}\n{title}\n\n{body}", fontsize=10, fontname="helv")
    doc.set_metadata({"title": "A Sample Paper on Adapting Small Language Models"})
    doc.save(path)
    return path


_PAPER_CSS = """
body {font-family: serif; font-size: 10pt; text-align: justify}
h1 {font-size: 15pt; text-align: center}
h2 {font-size: 11pt; margin-top: 8pt; text-align: left}
p {margin-top: 3pt; margin-bottom: 3pt}
p.entry {margin-left: 18pt; text-indent: -18pt; text-align: left}
"""


def write_paper_pdf(
    path: str | Path,
    *,
    title: str,
    sections: Sequence[tuple[str, str]],
    references: Sequence[str] = (),
    references_heading: str = "References",
    columns: Literal[1, 2] = 2,
) -> Path:
    """Write text laid out as a paper (US letter) to `path`; return the path.

    Args:
        title: the title, centred above the body on the first page.
        sections: (heading, body) pairs; a heading that starts with a section number
            ("2.1 Pretraining Data") is written with the number on a line of its own, as
            PDF text of LaTeX papers reads; paragraphs are separated by blank lines.
        references: bibliography entries, on a new page under `references_heading`, one
            column wide, each with a hanging indent (its first line at the heading's margin,
            the others further right).
        columns: how many columns the body flows over.
    """
    import pymupdf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = pymupdf.paper_rect("letter")
    writer = pymupdf.DocumentWriter(str(path))
    body = f"<h1>{html.escape(title)}</h1>" + "".join(_section_html(h, b) for h, b in sections)
    _place(writer, pymupdf.Story(body, user_css=_PAPER_CSS), page, _column_rects(page, columns))
    if references:
        entries = "".join(f'<p class="entry">{html.escape(e)}</p>' for e in references)
        bibliography = f"<h2>{html.escape(references_heading)}</h2>{entries}"
        story = pymupdf.Story(bibliography, user_css=_PAPER_CSS)
        _place(writer, story, page, _column_rects(page, 1))
    writer.close()
    return path


def _section_html(heading: str, body: str) -> str:
    number, _, name = heading.partition(" ")
    if name and number.rstrip(".").replace(".", "").isdigit():
        heading_html = f"{html.escape(number)}<br/>{html.escape(name)}"
    else:
        heading_html = html.escape(heading)
    paragraphs = (p for p in body.split("\n\n") if p.strip())
    return f"<h2>{heading_html}</h2>" + "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _column_rects(page: Any, columns: int) -> list[Any]:
    import pymupdf

    margin, gutter = 54.0, 18.0
    width = (page.width - 2 * margin - gutter * (columns - 1)) / columns
    bottom = page.height - margin
    return [
        pymupdf.Rect(
            margin + i * (width + gutter), 72, margin + i * (width + gutter) + width, bottom
        )
        for i in range(columns)
    ]


def _place(writer: Any, story: Any, page: Any, columns: Sequence[Any]) -> None:
    """Flow `story` over as many pages of `columns` as it takes."""
    more = True
    while more:
        device = writer.begin_page(page)
        for column in columns:
            more, _ = story.place(column)
            story.draw(device)
            if not more:
                break
        writer.end_page()
