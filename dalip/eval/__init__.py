"""Evaluation: zero-shot classification, image-text retrieval, reports.

```python
from dalip.eval import evaluate, format_results, save_results

results = evaluate(model, tokenizer, {"val": eval_set})  # {embedding: {subset: {metric: value}}}
print(format_results(results))
save_results(results, "results.json")
```
"""

from .encode import default_image_transform, encode_images, encode_texts, to_float_images
from .run import EvalSetLike, Results, TaskLike, evaluate, evaluate_set
from .report import format_results, save_results
from .retrieval import recall_at_k, retrieval_recall
from .zero_shot import class_embeddings, topk_accuracy, zero_shot_accuracy, zero_shot_classifier

__all__ = [
    "EvalSetLike",
    "Results",
    "TaskLike",
    "class_embeddings",
    "default_image_transform",
    "encode_images",
    "encode_texts",
    "evaluate",
    "evaluate_set",
    "format_results",
    "recall_at_k",
    "retrieval_recall",
    "save_results",
    "to_float_images",
    "topk_accuracy",
    "zero_shot_accuracy",
    "zero_shot_classifier",
]
