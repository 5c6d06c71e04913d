"""What holding list items distinct costs and gives: the album grammar with and without
`Distinct(by="title")` on the songs, same model, same held-out movies, greedy, in one run.

    .venv/bin/python benchmarks/distinct_items.py [--model ADAPTER_ID] [--prompts 8]

Prints, per row: valid answers, albums whose song titles are all distinct, generated
tokens/s and ms per generated token (the distinct ban's cost per token is the difference).
"""

from __future__ import annotations

import argparse
import json
from typing import Annotated, Any

from structune import Program
from structune.constrain.distinct import Distinct, same_item_key
from structune.evaluate.compare import compare
from structune.llms.base import Constrained
from structune.llms.local import LocalLLM
from structune.tasks.albums import Album, Song, album_program, heldout_movies


class DistinctAlbum(Album):
    songs: Annotated[list[Song], Distinct(by="title")]


def all_distinct(text: str) -> bool:
    titles = [same_item_key(s["title"]) for s in json.loads(text)["songs"]]
    return len(set(titles)) == len(titles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="a built-in base or adapter id")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=384)
    args = parser.parse_args()
    llm = (
        LocalLLM.load(args.model, batch_size=args.prompts)
        if args.model == "smollm2-135m"
        else LocalLLM.load(adapter=args.model, batch_size=args.prompts)
    )
    inputs = [{"movie_name": m} for m in heldout_movies()[: args.prompts]]
    distinct = Program(album_program.template, DistinctAlbum, name=album_program.name)
    rows: dict[str, Any] = {}
    for name, program in {"grammar": album_program, "grammar + distinct": distinct}.items():
        result = compare(program, {name: Constrained(llm)}, inputs, max_tokens=args.max_tokens)
        rows[name] = (result.scores[0], result.answers[name])

    print(f"model={args.model} prompts={args.prompts} max_tokens={args.max_tokens}")
    print(f"{'row':<22} {'valid':>7} {'all-distinct':>12} {'tokens/s':>9} {'ms/token':>9}")
    for name, (score, answers) in rows.items():
        parsed = [a for a in answers if a.parsed and not a.truncated]
        distinct_titles = sum(all_distinct(a.text) for a in parsed)
        ms = 1000 * score.wall_s / max(score.completion_tokens, 1)
        print(
            f"{name:<22} {score.valid:>4}/{score.answers:<2} "
            f"{distinct_titles:>8}/{len(parsed):<3} {score.tokens_per_s:>9.1f} {ms:>9.2f}"
        )


if __name__ == "__main__":
    main()
