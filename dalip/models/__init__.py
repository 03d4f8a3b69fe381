"""Models: token extraction from open_clip towers, the DALIP wrapper, configs, checkpoints."""

from dalip.models.checkpoint import LoadReport, load_checkpoint, read_state_dict
from dalip.models.configs import MODEL_CONFIGS, NamedModel
from dalip.models.dalip_model import DALIPModel
from dalip.models.export import export_model, push_export
from dalip.models.export_loading import load_export
from dalip.models.factory import create_model, get_tokenizer, list_models
from dalip.models.head_spec import HeadSpec
from dalip.models.heads import PooledHead
from dalip.models.pretrained import efficientnet_lite0_weights, load_efficientnet_lite0
from dalip.models.tokens import TowerOutput, extract_image_tokens, extract_text_tokens

__all__ = [
    "DALIPModel", "HeadSpec", "LoadReport", "MODEL_CONFIGS", "NamedModel", "PooledHead", "TowerOutput",
    "create_model", "efficientnet_lite0_weights", "extract_image_tokens", "extract_text_tokens",
    "export_model", "get_tokenizer", "list_models", "load_checkpoint", "load_efficientnet_lite0",
    "load_export", "push_export", "read_state_dict",
]
