"""Caption templates and readable phrases for Twemoji names and subcategories.

Subcategory ids of emoji.json (``"animal-mammal"``) become a fine phrase (the
class of the subcategory zero-shot task, ``"mammal"``) and a coarse phrase
(``"animal"``). The one-concept ``animal-amphibian`` (frog face) is merged into
``animal-reptile`` as ``"reptile or amphibian"`` so that every domain class has
enough concepts for a held-out split.
"""

from __future__ import annotations

import re

__all__ = [
    "CAPTION_TEMPLATES",
    "CONCEPT_TEMPLATES",
    "SUBCATEGORY_TEMPLATES",
    "caption",
    "category_phrase",
    "mentions",
    "subcategory_phrase",
    "template_texts",
    "with_article",
    "words",
]

#: fine phrase per subcategory; the rest fall back to ``"a-b" -> "a b"``
_FINE = {
    # domain: biological groups
    "animal-mammal": "mammal", "animal-bird": "bird", "animal-reptile": "reptile or amphibian",
    "animal-amphibian": "reptile or amphibian", "animal-marine": "sea animal", "animal-bug": "bug",
    "plant-flower": "flower", "plant-other": "plant", "food-fruit": "fruit", "food-vegetable": "vegetable",
    # general ("cat face" and "monkey" are domain concepts: keep them out of these phrases)
    "cat-face": "animal smiley", "monkey-face": "animal smiley",
    "face-smiling": "smiling face", "face-affection": "affectionate face", "face-tongue": "face with tongue",
    "face-hand": "face with hand", "face-neutral-skeptical": "neutral or skeptical face",
    "face-sleepy": "sleepy face", "face-unwell": "unwell face", "face-hat": "face with hat",
    "face-glasses": "face with glasses", "face-concerned": "concerned face", "face-negative": "angry face",
    "face-costume": "costume face", "emotion": "emotion symbol",
    "hand-fingers-open": "open hand", "hand-fingers-partial": "hand sign", "hand-single-finger": "pointing hand",
    "hand-fingers-closed": "closed hand", "hands": "pair of hands", "hand-prop": "hand holding something",
    "body-parts": "body part", "person-gesture": "person gesturing", "person-role": "person at work",
    "person-fantasy": "fantasy character", "person-activity": "person doing something",
    "person-sport": "person doing sport", "person-resting": "resting person", "family": "family or couple",
    "person-symbol": "person symbol", "skin-tone": "skin tone swatch",
    "place-map": "map", "place-geographic": "landscape", "place-building": "building",
    "place-religious": "religious building", "place-other": "place", "transport-ground": "ground vehicle",
    "transport-water": "boat", "transport-air": "aircraft", "transport-sign": "transport sign",
    "time": "clock or timer", "sky & weather": "sky or weather",
    "food-prepared": "prepared food", "food-asian": "asian food", "food-marine": "seafood",
    "food-sweet": "sweet food", "event": "celebration", "award-medal": "award",
    "arts & crafts": "arts and crafts", "light & video": "light or video", "book-paper": "book or paper",
    "writing": "writing tool", "office": "office item", "science": "science item", "medical": "medical item",
    "household": "household item", "other-object": "object", "av-symbol": "audio or video symbol",
    "warning": "warning sign", "religion": "religious symbol", "zodiac": "zodiac sign",
    "punctuation": "punctuation mark", "currency": "currency symbol", "gender": "gender symbol",
    "math": "math symbol", "other-symbol": "symbol", "geometric": "geometric shape",
    "alphanum": "letter or number", "music": "music symbol", "country-flag": "country flag",
    "subdivision-flag": "regional flag",
}

_COARSE = {
    "animal": "animal", "plant": "plant", "food": "food",  # domain: the prefix of the id
    "Smileys & Emotion": "smiley", "People & Body": "person or body part", "Component": "component",
    "Animals & Nature": "animal or plant", "Food & Drink": "food or drink",
    "Travel & Places": "travel or place", "Activities": "activity", "Objects": "object",
    "Symbols": "symbol", "Flags": "flag",
}

#: training caption templates: ``name`` (with article), ``fine``/``coarse`` (with article), ``bare`` name
CAPTION_TEMPLATES = (
    "an emoji of {name}.",
    "{name}.",
    "the {bare} emoji.",
    "{name}, a kind of {fine_bare}.",
    "an emoji of {name}, a kind of {fine_bare}.",
    "{coarse} emoji: {bare}.",
    "a cartoon picture of {name}.",
)

#: zero-shot prompts for the held-out concepts task (class = emoji name)
CONCEPT_TEMPLATES = ["an emoji of a {}.", "{}.", "the {} emoji.", "a cartoon picture of a {}."]
#: zero-shot prompts for the subcategory task (class = fine phrase)
SUBCATEGORY_TEMPLATES = ["an emoji of a {}.", "a kind of {}.", "the {} emoji.", "{}."]

_PLURAL_EXCEPTIONS = ("ss", "us", "is", "os")


def words(text: str) -> tuple[str, ...]:
    """Lower-case alphanumeric words: ``"T-Rex, baby!" -> ("t", "rex", "baby")``."""
    return tuple(re.findall(r"[a-z0-9]+", text.lower()))


def mentions(text: str, name: str) -> bool:
    """Whether ``name`` occurs in ``text`` as whole words (``"dog"`` in ``"hot dog"``, not in ``"dogs"``)."""
    haystack, needle = words(text), words(name)
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def with_article(phrase: str) -> str:
    """``"dog" -> "a dog"``, ``"owl" -> "an owl"``, ``"grapes" -> "grapes"`` (a plural takes none)."""
    first = phrase.split(" ")[0]
    if first.endswith("s") and not first.endswith(_PLURAL_EXCEPTIONS) and " " not in phrase:
        return phrase
    vowel = phrase[:1] in "aeiou" and not phrase.startswith(("uni", "use", "u.s", "one", "eu"))
    return ("an " if vowel or phrase.startswith("hour") else "a ") + phrase


def subcategory_phrase(subcategory: str) -> str:
    """The fine, readable class phrase of an emoji.json subcategory id (``"animal-mammal" -> "mammal"``)."""
    return _FINE.get(subcategory, subcategory.replace("-", " ").replace(" & ", " and "))


def category_phrase(subcategory: str, category: str) -> str:
    """The coarse phrase: ``"animal"``, ``"plant"`` or ``"food"`` for nature ids, else the category's."""
    prefix = subcategory.split("-")[0]
    if prefix in ("animal", "plant") or subcategory in ("food-fruit", "food-vegetable"):
        return _COARSE[prefix]
    return _COARSE.get(category, category.lower())


def caption(name: str, subcategory: str, category: str, template: int = 0) -> str:
    """Caption ``template`` (an index into `CAPTION_TEMPLATES`) of one emoji."""
    fine = subcategory_phrase(subcategory)
    text = CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)].format(
        name=with_article(name), bare=name, fine_bare=fine,
        coarse=with_article(category_phrase(subcategory, category)),
    )
    return text


def template_texts() -> list[str]:
    """The fixed words of the templates (no placeholders): a concept they mention cannot be held out."""
    return [re.sub(r"\{[a-z_]*\}", " ", t) for t in CAPTION_TEMPLATES]
