"""dalip: distribution-aligned language-image pre-training.

Registered, swappable statistics poolers and alignment losses for CLIP models:

```python
import dalip
dalip.list_poolers()                       # ['bdc', 'cls', 'cov', ...]
pool = dalip.create_pooler("mbdc", dim=768)
vec = pool(tokens, mask=mask, guide=cls)   # (B, pool.out_dim)

model = dalip.create_model("effl0-minilm", second_order="mbdc")
out = model(images, texts)                 # image_features, text_features, image_second, ...
```
"""

from dalip.interop import load_for_benchmark
from dalip.losses import AlignmentLoss, create_loss, list_losses, register_loss
from dalip.models import DALIPModel, create_model, get_tokenizer, list_models
from dalip.pooling import Pooler, create_pooler, list_poolers, register_pooler
from dalip.registry import Registry, UnknownComponentError

__version__ = "0.1.0"

__all__ = [
    "AlignmentLoss", "create_loss", "list_losses", "register_loss",
    "DALIPModel", "Pooler", "Registry", "UnknownComponentError", "__version__", "create_model",
    "create_pooler", "get_tokenizer", "list_models", "list_poolers", "load_for_benchmark", "register_pooler",
]
