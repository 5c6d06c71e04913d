"""RAG ingest of real papers: pages, chunks and seconds per stage, then a second run that reuses.

    .venv/bin/python benchmarks/rag_ingest.py [--chunk-size 1024] (--papers DIR | PDF ...)

Each ingest runs in a fresh Python process, as `structune ingest` would, so the first
stages carry their imports: `read` imports PyMuPDF and LlamaIndex, `split` loads the
tiktoken tokenizer, `model` imports sentence-transformers and loads all-MiniLM-L6-v2.
`process` is what a user waits for, interpreter start included. The second run ingests the
same PDF into the same folder: it should find the manifest and return without the model.
`--papers DIR` ingests DIR/instructgpt.pdf (68 pages) and DIR/lora.pdf (26 pages); this
workplace keeps them in ../shared/data/papers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import check_papers

PAPERS = ("instructgpt.pdf", "lora.pdf")  # what --papers DIR ingests

_CHILD = """
import json, sys
from structune.rag.ingest import ingest
s = ingest(sys.argv[1], sys.argv[2], chunk_size=int(sys.argv[3]), chunk_overlap=int(sys.argv[4]),
           progress=False)
print(json.dumps({"pages": s.pages, "chunks": s.chunks, "seconds": s.seconds,
                  "reused": s.reused, "stages": s.stage_seconds}))
"""


def ingest_in_fresh_process(
    pdf: Path, index_dir: Path, chunk_size: int, chunk_overlap: int
) -> dict[str, Any]:
    """Run one ingest in a new interpreter; its summary plus the process's wall time."""
    began = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(pdf),
            str(index_dir),
            str(chunk_size),
            str(chunk_overlap),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"ingest of {pdf.name} failed:\n{done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    summary["process"] = time.perf_counter() - began
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="*", type=Path, metavar="PDF")
    parser.add_argument(
        "--papers", type=Path, metavar="DIR", help=f"also ingest {' and '.join(PAPERS)} from DIR"
    )
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--chunk-overlap", type=int, default=200)
    args = parser.parse_args()
    if not args.pdfs and args.papers is None:
        parser.error(f"give PDFs to ingest, or --papers DIR (a folder holding {', '.join(PAPERS)})")
    for pdf in args.pdfs:
        if not pdf.is_file():
            parser.error(f"no PDF at {pdf}")
    pdfs = list(args.pdfs)
    if args.papers is not None:
        pdfs += [args.papers / name for name in PAPERS]
        check_papers(parser, args.papers, PAPERS)
    print(f"chunk_size={args.chunk_size} chunk_overlap={args.chunk_overlap}")

    header = (
        f"{'paper':<18} {'pages':>5} {'chunks':>6} {'read':>6} {'split':>6} {'model':>6} "
        f"{'embed':>6} {'index':>6} {'ingest':>7} {'process':>8} {'reuse':>7} {'reuse proc':>10}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for pdf in pdfs:
            index_dir = Path(tmp) / pdf.stem
            first = ingest_in_fresh_process(pdf, index_dir, args.chunk_size, args.chunk_overlap)
            again = ingest_in_fresh_process(pdf, index_dir, args.chunk_size, args.chunk_overlap)
            if first["reused"] or not again["reused"]:
                sys.exit(f"{pdf.name}: expected a build then a reuse, got {first} then {again}")
            s = first["stages"]
            print(
                f"{pdf.name:<18} {first['pages']:>5} {first['chunks']:>6} {s['read']:>6.2f} "
                f"{s['split']:>6.2f} {s['load model']:>6.2f} {s['embed']:>6.2f} "
                f"{s['index']:>6.2f} {first['seconds']:>7.2f} {first['process']:>8.2f} "
                f"{again['seconds']:>7.3f} {again['process']:>10.2f}"
            )
    print("seconds; ingest = read + split + model + embed + index; process adds interpreter start")


if __name__ == "__main__":
    main()
