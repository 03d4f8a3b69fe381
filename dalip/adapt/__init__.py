"""Few-shot domain adaptation of a frozen model (DAC-style) and its baselines.

Features of the frozen model are cached once; every method trains on them only.

```python
from dalip.adapt import benchmark, load_frozen_model, twemoji_domain_task

frozen = load_frozen_model("quickstart", checkpoint="runs/quickstart/checkpoint.pt")
rows = benchmark(frozen, twemoji_domain_task(), "runs/few-shot", shots=(1, 4, 16), seeds=(0, 1))
```

Lower level: `cache_features` -> `sample_support` / `support_set` -> ``method.fit(support)``
-> a classifier ``(N, D) -> (N, C)``.
"""

from dalip.adapt.base import LOGIT_SCALE, Classifier, FewShotMethod, text_logits
from dalip.adapt.baselines import (
    ALPHAS,
    BETAS,
    LinearProbe,
    TipAdapter,
    TipAdapterF,
    ZeroShot,
    fit_logistic,
    leave_one_out_accuracy,
    tip_logits,
)
from dalip.adapt.dac import DACAdapter, DACConfig, ResidualAdapter, TextModulation
from dalip.adapt.features import FewShotFeatures, FewShotImages, cache_features, model_input_size
from dalip.adapt.frozen import FrozenModel, freeze, load_frozen_model
from dalip.adapt.harness import METHODS, ResultRow, default_methods, run_few_shot
from dalip.adapt.report import few_shot_markdown, plot_results, summarise_few_shot, write_results
from dalip.adapt.run import benchmark
from dalip.adapt.sampling import SupportSample, SupportSet, sample_support, support_set
from dalip.adapt.tasks import csv_task, twemoji_domain_task

__all__ = [
    "ALPHAS",
    "BETAS",
    "LOGIT_SCALE",
    "METHODS",
    "Classifier",
    "DACAdapter",
    "DACConfig",
    "FewShotFeatures",
    "FewShotImages",
    "FewShotMethod",
    "FrozenModel",
    "LinearProbe",
    "ResidualAdapter",
    "ResultRow",
    "SupportSample",
    "SupportSet",
    "TextModulation",
    "TipAdapter",
    "TipAdapterF",
    "ZeroShot",
    "benchmark",
    "cache_features",
    "csv_task",
    "default_methods",
    "few_shot_markdown",
    "fit_logistic",
    "freeze",
    "leave_one_out_accuracy",
    "load_frozen_model",
    "model_input_size",
    "plot_results",
    "run_few_shot",
    "sample_support",
    "summarise_few_shot",
    "support_set",
    "text_logits",
    "tip_logits",
    "twemoji_domain_task",
    "write_results",
]
