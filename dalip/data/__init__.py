"""Data: registered dataset kinds (Twemoji, caption CSVs, webdataset shards, labelled folders), mixing, robust batching.

Twemoji art (c) Twitter, Inc. and contributors, CC-BY 4.0 (https://github.com/twitter/twemoji).
"""

from dalip.data.batch import Batch, collate, decode_image
from dalip.data.cache import TwemojiArrays, default_cache_dir, load_twemoji
from dalip.data.captions import CAPTION_TEMPLATES, CONCEPT_TEMPLATES, SUBCATEGORY_TEMPLATES, caption, mentions, subcategory_phrase
from dalip.data.csv_dataset import CsvCaptions, CsvSpec, read_caption_csv
from dalip.data.datasets import DATASETS, DatasetSpec, build_eval_sets, build_train_dataset, create_dataset, list_datasets, register_dataset, source_kind
from dalip.data.eval_sets import EvalSet, ZeroShotTask
from dalip.data.labelled import TEMPLATE_SETS, LabelledImages, load_templates, read_classnames, read_image_folder, read_labelled, read_labelled_csv
from dalip.data.labelled_dataset import FolderSpec, LabelledCaptions
from dalip.data.mixing import MapAsIterable, MixedDataset, MixedIterableDataset
from dalip.data.splits import DOMAIN_SUBCATEGORIES, SUBSETS, concept_split, stable_fraction, subset_of
from dalip.data.transforms import image_transform
from dalip.data.twemoji import NATURE_SUBCATEGORIES, EmojiRecord, load_emoji_image, twemoji_index
from dalip.data.twemoji_dataset import TwemojiCaptions, TwemojiSpec, TwemojiSplit, twemoji_eval_sets, twemoji_split
from dalip.data.wds import WdsSpec, WebDatasetShards, expand_shards

__all__ = [
    "CAPTION_TEMPLATES",
    "CONCEPT_TEMPLATES",
    "DOMAIN_SUBCATEGORIES",
    "NATURE_SUBCATEGORIES",
    "SUBCATEGORY_TEMPLATES",
    "SUBSETS",
    "TEMPLATE_SETS",
    "Batch",
    "CsvCaptions",
    "CsvSpec",
    "DATASETS",
    "DatasetSpec",
    "EmojiRecord",
    "EvalSet",
    "FolderSpec",
    "LabelledCaptions",
    "LabelledImages",
    "MapAsIterable",
    "MixedDataset",
    "MixedIterableDataset",
    "TwemojiArrays",
    "TwemojiCaptions",
    "TwemojiSpec",
    "TwemojiSplit",
    "WdsSpec",
    "WebDatasetShards",
    "ZeroShotTask",
    "build_eval_sets",
    "build_train_dataset",
    "caption",
    "collate",
    "concept_split",
    "create_dataset",
    "decode_image",
    "default_cache_dir",
    "expand_shards",
    "image_transform",
    "list_datasets",
    "load_emoji_image",
    "load_templates",
    "load_twemoji",
    "mentions",
    "read_caption_csv",
    "read_classnames",
    "read_image_folder",
    "read_labelled",
    "read_labelled_csv",
    "register_dataset",
    "source_kind",
    "stable_fraction",
    "subcategory_phrase",
    "subset_of",
    "twemoji_eval_sets",
    "twemoji_index",
    "twemoji_split",
]
