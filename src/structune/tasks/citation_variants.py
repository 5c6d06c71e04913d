"""More citing contexts from the same text: each cited surname and year swapped for others.

A 135M student tuned on a paper's few dozen citing chunks learns those chunks, not the
skill: it answered their citations back, and `[]` to every chunk it had not seen. In a
variant of a chunk, every surname the rules cite is replaced, wherever it stands, by
another surname from the same papers, and every cited year by a random one; the teacher
then labels the variant as it would any chunk. The words around the citations stay, so
what stays the same across variants is where a citation stands and what it looks like:
what the student has to learn, instead of which names a given paragraph cites.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from structune.tasks.citations import extract_citations

# One-word capitalized surnames swap cleanly; "van der Berg" or "Allen-Zhu" are left as
# they are in the text, and only one-word names are drawn as replacements.
_PLAIN_SURNAME = re.compile(r"[A-Z][a-z]+")
YEARS = (1990, 2023)


def citation_variants(
    inputs: Sequence[dict[str, str]], *, per_input: int, seed: int = 0
) -> list[dict[str, str]]:
    """`per_input` variants of each input whose `context_str` cites something (inputs
    without citations have none), in order; other keys are kept as they are."""
    rng = random.Random(seed)
    cited = [(i, extract_citations(i["context_str"]).citations) for i in inputs]
    pool = sorted(
        {c.author for _, found in cited for c in found if _PLAIN_SURNAME.fullmatch(c.author)}
    )
    variants = []
    for given, found in cited:
        names = sorted({c.author for c in found if _PLAIN_SURNAME.fullmatch(c.author)})
        years = sorted({c.year for c in found})
        if not found or len(pool) < 2:
            continue
        for _ in range(per_input):
            # All at once: one by one, a name swapped in could be swapped again.
            new_names = {name: rng.choice([p for p in pool if p != name]) for name in names}
            new_years = {str(year): str(rng.randint(*YEARS)) for year in years}
            text = given["context_str"]
            if new_names:
                text = _swap(text, new_names, r"(?<![\w-])(?:{})(?![\w-])")
            text = _swap(text, new_years, r"(?<!\d)(?:{})(?=[a-z]?(?!\d))")
            variants.append({**given, "context_str": text})
    return variants


def _swap(text: str, replacements: dict[str, str], pattern: str) -> str:
    words = "|".join(map(re.escape, sorted(replacements, key=len, reverse=True)))
    return re.sub(pattern.format(words), lambda m: replacements[m.group(0)], text)
