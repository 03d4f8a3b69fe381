"""The embedded Twemoji data (the quickstart's dataset kind ``twemoji``): index, images cache, captions, splits.

Everything that knows about Twemoji lives in this package; the generic data code
only sees a registered `DatasetSpec` kind.

Twemoji art (c) Twitter, Inc. and contributors, CC-BY 4.0 (https://github.com/twitter/twemoji).
"""

from dalip.data.twemoji.cache import TwemojiArrays, default_cache_dir, load_twemoji
from dalip.data.twemoji.captions import (
    CAPTION_TEMPLATES,
    CONCEPT_TEMPLATES,
    SUBCATEGORY_TEMPLATES,
    caption,
    mentions,
    subcategory_phrase,
)
from dalip.data.twemoji.dataset import (
    TwemojiCaptions,
    TwemojiSpec,
    TwemojiSplit,
    twemoji_eval_sets,
    twemoji_split,
)
from dalip.data.twemoji.index import NATURE_SUBCATEGORIES, EmojiRecord, load_emoji_image, twemoji_index
from dalip.data.twemoji.splits import DOMAIN_SUBCATEGORIES, SUBSETS, concept_split, stable_fraction, subset_of

__all__ = [
    "CAPTION_TEMPLATES", "CONCEPT_TEMPLATES", "DOMAIN_SUBCATEGORIES", "NATURE_SUBCATEGORIES", "SUBCATEGORY_TEMPLATES",
    "SUBSETS", "EmojiRecord", "TwemojiArrays", "TwemojiCaptions", "TwemojiSpec", "TwemojiSplit", "caption",
    "concept_split", "default_cache_dir", "load_emoji_image", "load_twemoji", "mentions", "stable_fraction",
    "subcategory_phrase", "subset_of", "twemoji_eval_sets", "twemoji_index", "twemoji_split",
]
