"""Data: the embedded Twemoji dataset, caption CSVs, webdataset shards, mixing, robust batching.

Twemoji art (c) Twitter, Inc. and contributors, CC-BY 4.0 (https://github.com/twitter/twemoji).
"""

from .batch import Batch, collate, decode_image
from .cache import TwemojiArrays, default_cache_dir, load_twemoji
from .captions import (
    CAPTION_TEMPLATES,
    CONCEPT_TEMPLATES,
    SUBCATEGORY_TEMPLATES,
    caption,
    mentions,
    subcategory_phrase,
)
from .csv_dataset import CsvCaptions, read_caption_csv
from .eval_sets import EvalSet, ZeroShotTask
from .mixing import MapAsIterable, MixedDataset, MixedIterableDataset
from .spec import DataSpec, build_eval_sets, build_train_dataset
from .splits import DOMAIN_SUBCATEGORIES, SUBSETS, concept_split, stable_fraction, subset_of
from .transforms import image_transform
from .twemoji import NATURE_SUBCATEGORIES, EmojiRecord, load_emoji_image, twemoji_index
from .twemoji_dataset import TwemojiCaptions, TwemojiSplit, twemoji_eval_sets, twemoji_split
from .wds import WebDatasetShards, expand_shards

__all__ = [
    "CAPTION_TEMPLATES",
    "CONCEPT_TEMPLATES",
    "DOMAIN_SUBCATEGORIES",
    "NATURE_SUBCATEGORIES",
    "SUBCATEGORY_TEMPLATES",
    "SUBSETS",
    "Batch",
    "CsvCaptions",
    "DataSpec",
    "EmojiRecord",
    "EvalSet",
    "MapAsIterable",
    "MixedDataset",
    "MixedIterableDataset",
    "TwemojiArrays",
    "TwemojiCaptions",
    "TwemojiSplit",
    "WebDatasetShards",
    "ZeroShotTask",
    "build_eval_sets",
    "build_train_dataset",
    "caption",
    "collate",
    "concept_split",
    "decode_image",
    "default_cache_dir",
    "expand_shards",
    "image_transform",
    "load_emoji_image",
    "load_twemoji",
    "mentions",
    "read_caption_csv",
    "stable_fraction",
    "subcategory_phrase",
    "subset_of",
    "twemoji_eval_sets",
    "twemoji_index",
    "twemoji_split",
]
