"""The benchmark harness: every method x shots x seed x embedding on cached features."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from dalip.adapt.base import FewShotMethod
from dalip.adapt.baselines import LinearProbe, TipAdapter, TipAdapterF, ZeroShot
from dalip.adapt.dac import DACAdapter, DACConfig
from dalip.adapt.features import FewShotFeatures
from dalip.adapt.sampling import sample_support, support_set
from dalip.eval.zero_shot import topk_accuracy
from dalip.registry import Registry

__all__ = ["METHODS", "ResultRow", "default_methods", "run_few_shot"]


@dataclass(frozen=True)
class ResultRow:
    """One fitted method on one support set; accuracies in %."""

    dataset: str
    embedding: str
    method: str
    shots: int
    seed: int
    top1: float  # on the test set
    support_top1: float  # on the plain support images it was fitted on
    support_size: int
    short_classes: str  # "class:taken" for classes with fewer than K pool images
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


METHODS: Registry[FewShotMethod] = Registry("few-shot method")
"""The few-shot methods by name; every factory takes ``steps`` (the training steps of those that train)."""


@METHODS.register("zero-shot", description="class-name prompts only, no support images")
def _zero_shot(steps: int = 200) -> FewShotMethod:
    return ZeroShot()


@METHODS.register("linear-probe", description="logistic regression on the support features")
def _linear_probe(steps: int = 200) -> FewShotMethod:
    return LinearProbe()


@METHODS.register("tip-adapter", description="training-free cache model over the support features")
def _tip_adapter(steps: int = 200) -> FewShotMethod:
    return TipAdapter()


@METHODS.register("tip-adapter-f", description="Tip-Adapter with its cache keys fine-tuned")
def _tip_adapter_f(steps: int = 200) -> FewShotMethod:
    return TipAdapterF(steps=steps)


@METHODS.register("dac", description="distribution-aligned adapter: image adapter, text modulation, intra-modal loss")
def _dac(steps: int = 200) -> FewShotMethod:
    return DACAdapter(DACConfig(steps=steps), "dac")


@METHODS.register("dac-image-only", description="DAC ablation: no text modulation")
def _dac_image_only(steps: int = 200) -> FewShotMethod:
    return DACAdapter(DACConfig(steps=steps, text_modulation=False), "dac-image-only")


@METHODS.register("dac-text-only", description="DAC ablation: no image adapter, no intra-modal loss")
def _dac_text_only(steps: int = 200) -> FewShotMethod:
    return DACAdapter(DACConfig(steps=steps, adapter=False, intra_weight=0.0), "dac-text-only")


@METHODS.register("dac-no-intra", description="DAC ablation: no intra-modal loss")
def _dac_no_intra(steps: int = 200) -> FewShotMethod:
    return DACAdapter(DACConfig(steps=steps, intra_weight=0.0), "dac-no-intra")


_MAIN = ("zero-shot", "linear-probe", "tip-adapter", "tip-adapter-f", "dac")  # the table's order
_ABLATIONS = ("dac-image-only", "dac-text-only", "dac-no-intra")


def default_methods(steps: int = 200, ablations: bool = True) -> dict[str, FewShotMethod]:
    """Zero-shot, linear probe, Tip-Adapter(-F), DAC and (``ablations``) DAC with one part off, from `METHODS`."""
    names = _MAIN + (_ABLATIONS if ablations else ())
    return {name: METHODS.create(name, steps=steps) for name in names}


def run_few_shot(
    features: Mapping[str, FewShotFeatures],
    methods: Mapping[str, FewShotMethod],
    shots: Sequence[int],
    seeds: Sequence[int],
    dataset: str = "",
    progress: bool = True,
) -> list[ResultRow]:
    """Fit every method on the same K-shot support sets (one per shots x seed, shared by
    all embeddings and methods) and score it on the test features.

    Raises:
        ValueError: no features / methods / shots / seeds, shots < 1, an empty class.
    """
    if not features or not methods or not shots or not seeds:
        raise ValueError("run_few_shot needs features, methods, shots and seeds")
    first = next(iter(features.values()))
    num_classes = len(first.classnames)
    samples = {(k, s): sample_support(first.pool_labels, k, s, num_classes) for k in shots for s in seeds}
    jobs = [(k, s, e, m) for k in shots for s in seeds for e in features for m in methods]
    rows = []
    for k, s, e, m in tqdm(jobs, desc="few-shot fits", unit="fit", disable=not progress):
        sample, feats = samples[(k, s)], features[e]
        support = support_set(feats, sample)
        start = time.perf_counter()
        classify = methods[m].fit(support, seed=s * 1_000 + k)
        seconds = time.perf_counter() - start
        names = feats.classnames
        rows.append(ResultRow(
            dataset=dataset, embedding=e, method=m, shots=k, seed=s,
            top1=100 * topk_accuracy(classify(feats.test), feats.test_labels, (1,))["top1"],
            support_top1=100 * topk_accuracy(classify(support.features), support.labels, (1,))["top1"],
            support_size=len(support.labels),
            short_classes=" ".join(f"{names[c]}:{n}" for c, n in sample.short.items()),
            seconds=round(seconds, 3),
        ))
    return rows
