"""Evaluation: zero-shot classification, image-text retrieval, reports.

```python
from dalip.eval import evaluate, format_results, save_results

results = evaluate(model, tokenizer, {"val": eval_set})  # {embedding: {subset: {metric: value}}}
print(format_results(results))
save_results(results, "results.json")

# inference-time fusion: every metric at a * s_first + (1 - a) * s_second, one pass of the towers
results = evaluate(model, tokenizer, {"val": eval_set}, fusion=[0, 0.25, 0.5, 0.75, 1])
plot_fusion(results, "fusion.png", alpha=model.alpha)

# zero-shot on your own labelled images (folder/<class>/*.jpg or a CSV), the model's own transform
results = evaluate_zero_shot(model, tokenizer, "leaves/", templates="openai_imagenet")
```
"""

from dalip.data.eval_sets import ZeroShotSet, ZeroShotTask, zero_shot_eval_set
from dalip.data.streamed import StreamedImages
from dalip.data.transforms import PilTransform, model_transform
from dalip.errors import NonFiniteEmbeddingError
from dalip.eval.encode import default_image_transform, encode_images, encode_texts, to_float_images
from dalip.eval.evaluation import EvalSetLike, Results, TaskLike, evaluate, evaluate_set, evaluate_zero_shot
from dalip.eval.fusion import best_fusion_weights, format_fusion, fusion_curves, plot_fusion
from dalip.eval.report import format_results, save_results
from dalip.eval.retrieval import recall_at_k, retrieval_recall
from dalip.eval.zero_shot import (
    balanced_accuracy,
    class_embeddings,
    per_class_recall,
    topk_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
)

__all__ = [
    "EvalSetLike",
    "NonFiniteEmbeddingError",
    "PilTransform",
    "Results",
    "StreamedImages",
    "TaskLike",
    "ZeroShotSet",
    "ZeroShotTask",
    "balanced_accuracy",
    "best_fusion_weights",
    "class_embeddings",
    "default_image_transform",
    "encode_images",
    "encode_texts",
    "evaluate",
    "evaluate_set",
    "evaluate_zero_shot",
    "format_fusion",
    "format_results",
    "fusion_curves",
    "model_transform",
    "per_class_recall",
    "plot_fusion",
    "recall_at_k",
    "retrieval_recall",
    "save_results",
    "to_float_images",
    "topk_accuracy",
    "zero_shot_accuracy",
    "zero_shot_classifier",
    "zero_shot_eval_set",
]
