"""Data: registered dataset kinds, building and mixing them, sharding, robust batching, the one image pipeline, eval sets.

The generic modules here know no dataset kind by name; the kinds live in `dalip.data.kinds`
(csv, wds, folder) and `dalip.data.twemoji.index` (the embedded quickstart data).

Twemoji art (c) Twitter, Inc. and contributors, CC-BY 4.0 (https://github.com/twitter/twemoji).
"""

from dalip.data.batch import Batch, collate, decode_image
from dalip.data.build import build_eval_sets, build_train_dataset, source_kind
from dalip.data.eval_sets import EvalSet, LabelledTask, ZeroShotSet, ZeroShotTask, zero_shot_eval_set
from dalip.data.kinds import (  # registers csv, wds, folder
    CsvCaptions,
    CsvSpec,
    FolderSpec,
    LabelledCaptions,
    WdsSpec,
    WebDatasetShards,
    expand_shards,
    read_caption_csv,
)
from dalip.data.labelled import (
    TEMPLATE_SETS,
    LabelledImages,
    load_templates,
    read_classnames,
    read_image_folder,
    read_labelled,
    read_labelled_csv,
)
from dalip.data.mixing import MapAsIterable, MixedDataset, MixedIterableDataset
from dalip.data.spec import DATASETS, DatasetSpec, create_dataset, list_datasets, register_dataset
from dalip.data.streamed import StreamedImages
from dalip.data.transforms import PilTransform, image_transform, model_transform
from dalip.data.twemoji import (  # registers twemoji
    CAPTION_TEMPLATES,
    CONCEPT_TEMPLATES,
    DOMAIN_SUBCATEGORIES,
    NATURE_SUBCATEGORIES,
    SUBCATEGORY_TEMPLATES,
    SUBSETS,
    EmojiRecord,
    TwemojiArrays,
    TwemojiCaptions,
    TwemojiSpec,
    TwemojiSplit,
    caption,
    concept_split,
    default_cache_dir,
    load_emoji_image,
    load_twemoji,
    mentions,
    stable_fraction,
    subcategory_phrase,
    subset_of,
    twemoji_eval_sets,
    twemoji_index,
    twemoji_split,
)

__all__ = [
    "model_transform",
    "PilTransform",
    "StreamedImages",
    "zero_shot_eval_set",
    "ZeroShotSet",
    "LabelledTask",
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
