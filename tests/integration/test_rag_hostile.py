"""Hostile PDFs against the real ingest: refused with a reason or ingested, never a crash,
memory bounded, and a refused file leaves the existing index byte for byte as it was.

The files are built in `hostile_pdfs` (corrupt structure, encryption, lying page trees,
decompression bombs of several GiB from a few MB). Each slow case ingests in a child
Python process, so a crash or a runaway allocation would show as the child's exit status or
peak memory instead of taking pytest down; the child reports its outcome, its time, its own
peak RSS and that of the PDF reader process it starts (run with `-s` to see the figures).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import hostile_pdfs as hostile
from papers import write_test_paper
from structune.errors import UserError
from structune.rag.ingest import MANIFEST_NAME, ingest, read_pdf
from structune.rag.pdf_text import MAX_PAGES, READ_TIMEOUT_S

GiB = hostile.GiB
MiB = hostile.MiB

MEMORY_BOUND = int(1.5 * GiB)  # the most a hostile PDF may add to an ingest, reader included
SHORT_TIME_BUDGET_S = 5.0  # READ_TIMEOUT_S for the time-bomb case, so that it ends quickly


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], Path]
    outcome: str  # "refused" or "ingested"
    words: tuple[str, ...] = ()  # what a refusal's message must say
    slow_to_read: bool = False  # takes more than a few seconds: slow tier only
    time_budget_s: float = READ_TIMEOUT_S


def _truncated_paper(path: Path, fraction: float) -> Path:
    """The test paper cut to `fraction` of its bytes, as a broken download leaves it."""
    paper = write_test_paper(path.with_name(f"whole-{path.name}"))
    return hostile.truncated(path, paper, fraction)


DAMAGED = ("damaged", "re-download")
BOMB = ("inflates to more than", "decompression bomb", "re-export")
MEMORY = ("needs more than 1.0 GiB of memory", "re-export")

CASES: dict[str, Case] = {
    # corrupt structure
    "truncated to a fifth": Case(
        lambda d: _truncated_paper(d / "fifth.pdf", 0.2),
        "refused",
        DAMAGED,
    ),
    "truncated to 95%": Case(lambda d: _truncated_paper(d / "most.pdf", 0.95), "ingested"),
    "garbage after a valid header": Case(
        lambda d: hostile.garbage_after_header(d / "garbage.pdf"), "refused", DAMAGED
    ),
    "junk xref table": Case(lambda d: hostile.junk_xref_table(d / "xref.pdf"), "ingested"),
    "startxref past the end": Case(
        lambda d: hostile.startxref_past_the_end(d / "startxref.pdf"), "ingested"
    ),
    # encryption
    "user password": Case(
        lambda d: hostile.encrypted(d / "locked.pdf", user_password="user"),
        "refused",
        ("password-protected", "qpdf --decrypt"),
    ),
    "owner password only": Case(
        lambda d: hostile.encrypted(d / "owner.pdf", user_password=""), "ingested"
    ),
    # page trees
    "a /Count of two billion": Case(
        lambda d: hostile.lying_page_count(d / "count.pdf"), "refused", DAMAGED
    ),
    "one page object listed 200,000 times": Case(
        lambda d: hostile.one_page_listed_many_times(d / "listed.pdf", 200_000), "refused", DAMAGED
    ),
    "a cycle in the page tree": Case(
        lambda d: hostile.cyclic_page_tree(d / "cycle.pdf"), "refused", DAMAGED
    ),
    f"{MAX_PAGES + 1:,} pages": Case(
        lambda d: hostile.many_pages(d / "long.pdf", MAX_PAGES + 1),
        "refused",
        (f"{MAX_PAGES + 1:,} pages", f"limit of {MAX_PAGES:,}", "split it"),
    ),
    # decompression bombs and dense pages
    "content stream inflating to 4 GiB": Case(
        lambda d: hostile.content_bomb(d / "content.pdf", 4 * GiB), "refused", BOMB
    ),
    "font file inflating to 4 GiB": Case(
        lambda d: hostile.font_bomb(d / "font.pdf", 4 * GiB), "refused", BOMB
    ),
    "form inflating to 1 GiB of text operators": Case(
        lambda d: hostile.text_operator_bomb(d / "form.pdf", GiB, in_form=True), "refused", BOMB
    ),
    "image inflating to 4 GiB": Case(
        lambda d: hostile.image_bomb(d / "image.pdf", 4 * GiB), "ingested"
    ),
    "a 16 MiB content stream drawn by 100 pages": Case(
        lambda d: hostile.shared_content(d / "shared.pdf", 100, 16 * MiB),
        "refused",
        ("content of its first", "pages inflates to more than", "decompression bomb"),
    ),
    "750,000 characters on one page": Case(
        lambda d: hostile.dense_page(d / "dense.pdf", 3000, 250),
        "refused",
        ("page 1 holds 753,000 characters", "limit of 200,000"),
    ),
    # bombs behind a filter that is not measured: the reader's limits hold them
    "font file inflating to 4 GiB behind ASCIIHex": Case(
        lambda d: hostile.font_bomb(d / "hexfont.pdf", 4 * GiB, hide_behind_hex=True),
        "refused",
        MEMORY,
        slow_to_read=True,
    ),
    "2 GiB of text operators behind ASCIIHex": Case(
        lambda d: hostile.text_operator_bomb(d / "hexops.pdf", 2 * GiB, hex_=True),
        "refused",
        MEMORY,
        slow_to_read=True,
    ),
    "512 MiB of spaces behind ASCIIHex drawn by 50 pages": Case(
        lambda d: hostile.shared_content(d / "slow.pdf", 50, 512 * MiB, hex_=True),
        "refused",
        (f"took over {SHORT_TIME_BUDGET_S:.0f} s", "stopped"),
        slow_to_read=True,
        time_budget_s=SHORT_TIME_BUDGET_S,
    ),
}

FAST_REFUSALS = [n for n, c in CASES.items() if c.outcome == "refused" and not c.slow_to_read]


@pytest.mark.parametrize("name", FAST_REFUSALS)
def test_read_pdf_refuses_a_hostile_pdf_saying_why(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    with pytest.raises(UserError) as caught:
        read_pdf(case.make(tmp_path))
    for word in case.words:
        assert word in str(caught.value)


# --- the whole ingest, in a child process -------------------------------------------------

_INGEST_IN_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from structune.errors import UserError
    from structune.rag import ingest as rag, pdf_text

    def status_bytes(field):
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    pdf_text.READ_TIMEOUT_S = float(sys.argv[3])
    baseline = status_bytes("VmRSS")
    started = time.perf_counter()
    try:
        summary = rag.ingest(sys.argv[1], sys.argv[2], progress=False)
        outcome = {"outcome": "ingested", "chunks": summary.chunks, "message": ""}
    except UserError as exc:
        outcome = {"outcome": "refused", "message": str(exc)}
    outcome["seconds"] = time.perf_counter() - started
    outcome["baseline"] = baseline
    # VmHWM, not RUSAGE_SELF: Linux carries the forking process's peak over into the
    # ru_maxrss of an exec'd child (here pytest's, model included). RUSAGE_CHILDREN (KiB):
    # the PDF reader, counted from before it was exec'd, so if anything an overestimate.
    outcome["peak"] = status_bytes("VmHWM")
    outcome["reader_peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps(outcome))
    """
)


def _ingest_in_child(pdf: Path, index_dir: Path, time_budget_s: float) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _INGEST_IN_CHILD, str(pdf), str(index_dir), str(time_budget_s)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"the ingest process died ({done.returncode}): {done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


@pytest.fixture(scope="module")
def existing_index(test_paper_pdf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of the test paper, as a user would have it before a hostile ingest."""
    folder = tmp_path_factory.mktemp("existing") / "index"
    ingest(test_paper_pdf, folder, chunk_size=256, chunk_overlap=20, progress=False)
    return folder


@pytest.mark.parametrize("name", CASES)
@pytest.mark.slow
def test_a_hostile_pdf_is_refused_or_ingested_within_bounds(
    name: str, existing_index: Path, tmp_path: Path
) -> None:
    case = CASES[name]
    pdf = case.make(tmp_path)
    index_dir = tmp_path / "index"
    shutil.copytree(existing_index, index_dir)
    before = _file_hashes(index_dir)

    report = _ingest_in_child(pdf, index_dir, case.time_budget_s)

    added = int(report["peak"]) - int(report["baseline"])  # type: ignore[call-overload]
    reader = int(report["reader_peak"])  # type: ignore[call-overload]
    print(
        f"\n{name}: {pdf.stat().st_size / MiB:.1f} MiB file, {report['outcome']} in "
        f"{report['seconds']:.1f} s; ingest process +{added / MiB:.0f} MiB over its "
        f"{int(report['baseline']) / MiB:.0f} MiB baseline, reader peak {reader / MiB:.0f} MiB"  # type: ignore[call-overload]
        f"\n  {report['message']}"
    )
    assert report["outcome"] == case.outcome, report["message"]
    for word in case.words:
        assert word in str(report["message"])
    # The reader runs while the ingest process waits: count both peaks together.
    assert added + reader < MEMORY_BOUND
    assert _leftovers(index_dir) == []
    if case.outcome == "refused":
        assert _file_hashes(index_dir) == before
    else:
        manifest = json.loads((index_dir / MANIFEST_NAME).read_text())
        assert manifest["key"]["pdf_sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
