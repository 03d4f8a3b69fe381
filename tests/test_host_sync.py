"""The training step never waits for the host: checked on the CPU at the dispatcher.

On a GPU, reading a value on the host (``.item()``, ``bool(t)``, ``.tolist()``) or an
op whose output size depends on the data (``nonzero``, boolean indexing,
``masked_select``, ``unique``) makes the CPU wait for the GPU stream, which serialises
the step. These all go through a handful of aten ops, so a ``TorchDispatchMode`` that
records them finds the same syncs on a CPU as on a GPU; `tests/test_gpu.py` checks
the poolers and this same step with CUDA's own sync debug mode where a GPU exists.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dalip.data import Batch
from dalip.losses import create_loss
from dalip.models import get_tokenizer
from dalip.pooling import value_checks
from dalip.runs.config import load_config
from dalip.runs.model import build_model
from dalip.train.builders import set_train_mode
from dalip.train.distributed import DistInfo
from dalip.train.precision import build_scaler
from dalip.train.step import train_step

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
#: aten ops that copy a device value to the host or size their output by the data
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
            "unique_consecutive", "equal", "is_nonzero", "bincount", "histc"}


class HostSyncs(TorchDispatchMode):
    """Records every dispatched op that would synchronise a GPU stream with the host."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.seen: set[str] = set()  # every op name, to show that backward and the optimizer ran inside

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.seen.add(name)
        if name in SYNC_OPS:
            self.calls.append(name)
        elif name in ("index", "index_put", "index_put_"):  # boolean-mask indexing runs nonzero inside
            indices = args[1] if len(args) > 1 else []
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices):
                self.calls.append(f"{name} (boolean mask)")
        return func(*args, **(kwargs or {}))


def test_detector_sees_the_syncs_it_is_meant_to_see():
    t = torch.tensor([0.0, 1.0, 2.0])
    with HostSyncs() as mode:
        t.sum().item()
        bool(t.any())
        t[t > 0]
        t.nonzero()
        t * 2  # not a sync
    assert mode.calls == ["_local_scalar_dense", "_local_scalar_dense", "index (boolean mask)", "nonzero"]


def make_dalip_step(device: torch.device, precision: str = "bf16", accum_steps: int = 1):
    """The recipe's step on the tiny DALIP model: mbdc_paper-style heads on both towers (text masked).

    Returns ``step(checks)``, which runs one optimizer step with the poolers' value checks
    on or off; the batch is already on ``device`` and one warm-up step has run. With
    ``accum_steps`` > 1 the loss scores the whole accumulated batch (``optim.accum_scope=batch``);
    fp16 steps through a GradScaler.
    """
    torch.manual_seed(0)
    options = "{heads: 2, reduced_dim: 4, norm: batch, dropout: 0.5, square_proj: true}"
    config = load_config(TINY, ["model.second_order=mbdc", f"model.second_options={options}",
                                f"run.precision={precision}", f"optim.accum_steps={accum_steps}"])
    model = build_model(config).to(device)
    # fused AdamW (as the recipe uses on CUDA) keeps its step counts on the device; the CPU default
    # (foreach) reads them on the host, which on a GPU it does not (its counts live on the CPU there)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    loss_fn = create_loss("distribution", alpha=config.model.alpha)
    captions = ["a red heart", "a dog", "a smiling face with sunglasses and a long tail", "two cats"] * 2
    tokens = get_tokenizer(config.model.name)(captions).to(device)
    batches = itertools.repeat(Batch(torch.randn(8, 3, 64, 64, device=device), captions, tokens=tokens))
    dist_info = DistInfo(rank=0, local_rank=0, world_size=1, device=device)
    scaler = build_scaler(config, device)

    def step(checks: bool):
        set_train_mode(model, config)
        with value_checks(checks):
            return train_step(model, model, loss_fn, None, batches, optimizer, scheduler, config, dist_info,
                              scaler=scaler)

    step(False)  # first step: optimizer state created
    return step


@pytest.fixture(scope="module")
def dalip_step():
    return make_dalip_step(torch.device("cpu"))


def test_training_step_has_no_host_sync(dalip_step):
    with HostSyncs() as mode:
        stats = dalip_step(False)
    assert mode.calls == [], f"host syncs in the training step: {mode.calls}"
    # the mode saw the whole step: forward, backward and fused AdamW
    # (MBDC's masked BatchNorm, LayerNorm, the unlocked text tower's embedding, the optimizer)
    assert {"rsqrt", "native_layer_norm_backward", "embedding_dense_backward",
            "_fused_adamw_"} <= mode.seen
    assert torch.isfinite(stats.loss)


@pytest.mark.parametrize(("precision", "accum_steps"), [("bf16", 2), ("fp16", 1), ("fp16", 2)])
def test_accumulated_and_fp16_steps_have_no_host_sync(precision, accum_steps):
    """The cached passes, RNG replay and merged loss of ``accum_scope=batch``; the GradScaler's unscale,
    skipped-step check and update (all on the device with fused AdamW)."""
    step = make_dalip_step(torch.device("cpu"), precision, accum_steps)
    with HostSyncs() as mode:
        stats = step(False)
    assert mode.calls == [], f"host syncs in the training step: {mode.calls}"
    assert "_fused_adamw_" in mode.seen and torch.isfinite(stats.loss)
    if precision == "fp16":
        assert {"_amp_foreach_non_finite_check_and_unscale_", "_amp_update_scale_"} <= mode.seen


def test_value_checks_are_the_only_sync_and_are_off_in_the_recipe(dalip_step):
    with HostSyncs() as mode:
        dalip_step(True)  # the all-padded-row check of the masked text pooler reads the mask
    assert mode.calls and set(mode.calls) <= {"_local_scalar_dense", "nonzero"}
    assert load_config(TINY).run.value_checks is False
