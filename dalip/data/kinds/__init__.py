"""The generic dataset kinds, registered on import: ``csv`` (caption CSV/TSV), ``wds`` (webdataset shards), ``folder`` (labelled images)."""

from dalip.data.kinds.csv import CsvCaptions, CsvSpec, read_caption_csv
from dalip.data.kinds.folder import FolderSpec, LabelledCaptions
from dalip.data.kinds.wds import WdsSpec, WebDatasetShards, expand_shards

__all__ = ["CsvCaptions", "CsvSpec", "FolderSpec", "LabelledCaptions", "WdsSpec", "WebDatasetShards", "expand_shards",
           "read_caption_csv"]
