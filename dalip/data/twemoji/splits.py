"""Domain / general subsets of Twemoji and the held-out split by concept.

A concept is an emoji name; all its images (skin-tone variants included) go
to the same side. A concept goes to validation when a stable hash of its name
(SHA-256, not Python's salted ``hash()``) falls below ``val_fraction`` and no
training caption can mention it: concepts named inside the fixed template
words or a subcategory phrase (``"bird"``, ``"plant"``) stay in training, and a
concept named inside another concept's name (``"dog"`` in ``"hot dog"``) is
held out only when that other concept is held out too. Every domain class with
at least 3 concepts is guaranteed validation concepts.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from dalip.data.twemoji.captions import category_phrase, subcategory_phrase, template_texts, words
from dalip.data.twemoji.index import NATURE_SUBCATEGORIES

__all__ = ["DOMAIN_SUBCATEGORIES", "SUBSETS", "concept_split", "stable_fraction", "subset_of"]

#: the domain subset; fungi are in it already: "mushroom" (plant-other), "brown mushroom" (food-vegetable)
DOMAIN_SUBCATEGORIES = NATURE_SUBCATEGORIES
SUBSETS = ("domain", "general")
_MIN_CLASS_CONCEPTS = 3


def subset_of(subcategory: str) -> str:
    """``"domain"`` for the nature subcategories, ``"general"`` for the rest."""
    return "domain" if subcategory in DOMAIN_SUBCATEGORIES else "general"


def stable_fraction(text: str, salt: str = "dalip-twemoji-split-v1") -> float:
    """A number in [0, 1) from SHA-256: the same on every machine and Python run."""
    digest = hashlib.sha256(f"{salt}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def concept_split(
    names: Sequence[str],
    subcategories: Sequence[str],
    categories: Sequence[str],
    val_fraction: float = 0.25,
) -> dict[str, str]:
    """``{name: "train" | "val"}`` for every concept (see the module docstring).

    Args:
        names: concept name of every image (repeats are fine).
        subcategories: emoji subcategory of every image.
        categories: emoji category of every image.
        val_fraction: the hash threshold; the held-out share ends a little lower
            because of the mention rules.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    concept_sub = dict(zip(names, subcategories))
    fixed = template_texts() + sorted(
        {subcategory_phrase(s) for s in subcategories} | {category_phrase(s, c) for s, c in zip(subcategories, categories)}
    )
    # every contiguous word n-gram of a text -> the concepts / fixed texts containing it
    containers: dict[tuple[str, ...], set[str]] = defaultdict(set)
    fixed_ngrams: set[tuple[str, ...]] = set()
    for text, is_fixed in [(n, False) for n in concept_sub] + [(t, True) for t in fixed]:
        w = words(text)
        for i in range(len(w)):
            for j in range(i + 1, len(w) + 1):
                (fixed_ngrams.add(w[i:j]) if is_fixed else containers[w[i:j]].add(text))
    candidate = {n: stable_fraction(n) < val_fraction for n in concept_sub}
    # mention is transitive, so checking the hash of every container is enough
    eligible = {n: words(n) not in fixed_ngrams and all(candidate[c] for c in containers[words(n)] - {n}) for n in concept_sub}
    side = {n: "val" if candidate[n] and eligible[n] else "train" for n in concept_sub}

    # each domain class with enough concepts gets held-out ones: the lowest-hash concept nobody mentions
    by_class: dict[str, list[str]] = defaultdict(list)
    for n, s in concept_sub.items():
        if subset_of(s) == "domain":
            by_class[subcategory_phrase(s)].append(n)
    for members in by_class.values():
        if len(members) >= _MIN_CLASS_CONCEPTS and all(side[n] == "train" for n in members):
            free = [n for n in members if words(n) not in fixed_ngrams and containers[words(n)] == {n}]
            if free:
                side[min(free, key=stable_fraction)] = "val"
    return side
