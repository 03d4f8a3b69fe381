"""How the processes of a run hold the model: DDP or FSDP2, SyncBatchNorm, and full state dicts of either.

```python
net = wrap_model(model, config, dist_info)   # build the optimizer AFTER this (FSDP: DTensor parameters)
optimizer = build_optimizer(model, config)
...
state = {"model": model_state(model), "optimizer": optimizer_state(model, optimizer)}  # every rank calls
```

- ``distributed.strategy=ddp``: `DistributedDataParallel` over several processes.
- ``distributed.strategy=fsdp``: FSDP2 (`torch.distributed.fsdp.fully_shard`) per repeated
  block of the towers (`block_modules`: open_clip's ``resblocks``, Hugging Face's ``layer``,
  timm's ``blocks`` / ``stages``), per DALIP head, then the model. ``fully_shard`` replaces
  the parameters by DTensor shards in place, so the optimizer must be built after
  `wrap_model` (one built before holds the replaced tensors and updates nothing). FSDP2
  shards no 0-dim parameter (the temperatures, ``logit_bias``, ``alpha_logit``): those stay
  plain replicated tensors whose gradients are averaged over the ranks as they are
  accumulated (one small all-reduce each).
- ``model.sync_batchnorm``: BatchNorm statistics over the whole global batch. The heads'
  `MaskedBatchNorm` becomes `SyncMaskedBatchNorm` on any device; on GPUs the towers'
  trainable BatchNorm layers become torch's ``SyncBatchNorm`` too (timm's converter, which
  keeps the activation of ``BatchNormAct2d``); torch's has no CPU implementation, so on a
  CPU those stay per process.

`model_state` / `optimizer_state` give the state dicts of the unwrapped model and of its
optimizer (full tensors, the same keys and shapes), so a checkpoint of an FSDP run loads into
one process unchanged (`dalip.runs.load.load_run`, export, a DDP resume); `load_optimizer_state`
loads one into a sharded optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.nn.functional import all_gather as all_gather_with_grad
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel

from dalip.errors import ConfigError
from dalip.models import DALIPModel
from dalip.pooling import MaskedBatchNorm
from dalip.runs.config import TrainConfig
from dalip.runs.model import build_model
from dalip.train.distributed import DistInfo

__all__ = [
    "SyncMaskedBatchNorm", "block_modules", "convert_sync_batchnorm", "is_sharded", "load_optimizer_state",
    "model_state", "optimizer_state", "shard_model", "unsharded_model", "wrap_model",
]


class SyncMaskedBatchNorm(MaskedBatchNorm):
    """`MaskedBatchNorm` whose training statistics cover the real tokens of every rank's batch.

    Each rank gathers the inputs (and masks) of all ranks, normalises the global batch
    exactly as one process would (finite-row and padding rules included) and keeps its
    own rows; the all-gather's backward returns to each rank the gradient of every rank's
    loss with respect to its rows, as torch's ``SyncBatchNorm`` does. The running
    statistics are then the same on every rank. It costs one all-gather of the layer's
    input (``world`` times its memory, on the reduced ``(b, n, g, r)`` tokens) and works
    with any backend, gloo included. Outside training, or in one process, it is `MaskedBatchNorm`.

    Shapes: ``x: (b, n, g, d)``, ``mask: (b, n) | None`` -> ``(b, n, g, d)``; ``b``, ``n``
    and whether there is a mask must be equal on every rank (dalip's batches are).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x, mask)
        rank, b = dist.get_rank(), x.shape[0]
        xs = torch.cat(all_gather_with_grad(x.contiguous()))  # (world b, n, g, d)
        masks = None
        if mask is not None:  # gloo has no bool collectives: gather bytes
            parts = [torch.empty_like(mask, dtype=torch.uint8) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, mask.to(torch.uint8))
            masks = torch.cat(parts).bool()
        return super().forward(xs, masks)[rank * b:(rank + 1) * b]


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model.sync_batchnorm``: BatchNorm over all ranks (in place; returns ``model``).

    Every `MaskedBatchNorm` (the heads') becomes a `SyncMaskedBatchNorm` (the same
    parameters, buffers and state-dict keys); off a CPU, the other BatchNorm layers
    become ``SyncBatchNorm`` through timm's converter (torch's would drop the activation
    of timm's ``BatchNormAct2d``).
    """
    for module in model.modules():
        if type(module) is MaskedBatchNorm:
            module.__class__ = SyncMaskedBatchNorm  # a subclass with no state of its own
    if device.type == "cpu":
        return model
    from timm.layers import convert_sync_batchnorm as timm_convert  # heavy third-party

    return timm_convert(model)  # replaces the children; returns the same root (not a BatchNorm)


def block_modules(root: nn.Module) -> list[nn.Module]:
    """The repeated blocks under ``root``: the children of every outermost ``nn.ModuleList``, and of
    every ``nn.Sequential`` of two or more modules of one class (timm's ``blocks`` / ``stages``).

    Only blocks with parameters are returned; nothing inside a block is searched, so the
    blocks do not nest (open_clip ViT: ``transformer.resblocks.<i>``; Hugging Face BERT:
    ``encoder.layer.<i>``; timm EfficientNet: ``blocks.<stage>``).
    """
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        children = list(module.children())
        repeated = isinstance(module, nn.ModuleList) or (
            isinstance(module, nn.Sequential) and len(children) > 1 and len({type(c) for c in children}) == 1)
        if repeated:
            found.extend(c for c in children if any(True for _ in c.parameters()))
            return
        for child in children:
            visit(child)

    visit(root)
    return found


def _average_gradient(param: Tensor) -> None:
    """Post-accumulate-grad hook of a replicated parameter under FSDP: its gradient, averaged over the ranks.

    Run after every backward, including those of accumulated micro-batches: the sum over ranks
    of (the average so far + a rank's new part), divided by the world size, is again the average.
    """
    dist.all_reduce(param.grad)
    param.grad.div_(dist.get_world_size())


def shard_model(model: DALIPModel, dist_info: DistInfo) -> DALIPModel:
    """FSDP2 ``fully_shard`` per tower block (`block_modules`), per head, then the whole model (in place).

    0-dim parameters stay plain replicated tensors (FSDP2 refuses them) whose gradients
    `_average_gradient` averages over the ranks. Needs an initialised process group.
    """
    if not isinstance(model, DALIPModel):
        raise ConfigError(f"distributed.strategy=fsdp shards a DALIPModel, got {type(model).__name__} "
                          "(model.cache_frozen is not supported with fsdp); set distributed.strategy=ddp")
    mesh = init_device_mesh(dist_info.device.type, (dist_info.world_size,))
    replicated = {p for p in model.parameters() if p.ndim == 0}
    units = [*block_modules(model.clip), *model.first_heads.values(), *model.second_heads.values()]
    for unit in units:
        fully_shard(unit, mesh=mesh, ignored_params=replicated)
    fully_shard(model, mesh=mesh, ignored_params=replicated)
    for param in replicated:
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(_average_gradient)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` (or a module in it) is sharded by FSDP2."""
    return any(isinstance(m, FSDPModule) for m in model.modules())


def wrap_model(model: nn.Module, config: TrainConfig, dist_info: DistInfo) -> nn.Module:
    """The module the training step calls: ``model`` after ``model.sync_batchnorm``, then
    ``distributed.strategy`` (FSDP2 when a process group runs, even of one process; DDP over
    several processes), then ``torch.compile`` when ``model.compile``.

    ``model`` may be a `DALIPModel` or, for ``ddp``, `dalip.train.frozen_cache.CachedTowersForward`.
    FSDP shards ``model`` in place: build the optimizer after this call.
    """
    if config.model.sync_batchnorm:
        convert_sync_batchnorm(model, dist_info.device)
    net: nn.Module = model
    if config.distributed.strategy == "fsdp":
        if dist.is_available() and dist.is_initialized():
            net = shard_model(model, dist_info)  # type: ignore[arg-type]
    elif dist_info.world_size > 1:
        device_ids = [dist_info.device] if dist_info.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=device_ids)
    return torch.compile(net) if config.model.compile else net


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile`` and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of the unwrapped model: full, plain tensors with its keys and shapes.

    Under FSDP every rank must call it (it all-gathers every shard) and every rank gets
    the whole state on the model's device; otherwise it is ``model.state_dict()`` of the
    module inside any DDP / ``torch.compile`` wrapper.
    """
    if is_sharded(model):
        return get_model_state_dict(_unwrap(model), options=StateDictOptions(full_state_dict=True))
    return _unwrap(model).state_dict()


def _map_tensors(value: Any, fn: Any) -> Any:
    """``fn`` applied to every tensor in a nested dict / list of an optimizer state, in its order.

    ``fn`` may be a collective: the order is the optimizer's, the same on every rank.
    """
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``optimizer.state_dict()`` with full tensors: what the optimizer of the unwrapped model would hold.

    Under FSDP every rank must call it (each sharded moment is all-gathered); parameters
    are numbered in the optimizer's order, which `wrap_model` leaves as it was.
    """
    state = optimizer.state_dict()
    if not is_sharded(model):
        return state
    return {**state, "state": _map_tensors(state["state"], lambda t: t.full_tensor() if isinstance(t, DTensor) else t)}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimizer state (`optimizer_state`, or a one-process checkpoint's) into ``optimizer``.

    Under FSDP each rank keeps its shard of the moments of a sharded parameter (no communication).
    """
    if is_sharded(model):
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def shard_like(param: Tensor) -> Any:
            def shard(value: Tensor) -> Tensor:
                if not isinstance(param, DTensor) or value.shape != param.shape:
                    return value  # e.g. Adam's step count
                return distribute_tensor(value.to(param.device), param.device_mesh, param.placements,
                                         src_data_rank=None)
            return shard

        state = {**state, "state": {i: _map_tensors(v, shard_like(params[int(i)])) for i, v in state["state"].items()}}
    optimizer.load_state_dict(state)


def unsharded_model(model: nn.Module, config: TrainConfig) -> nn.Module:
    """``model`` itself, or under FSDP a plain copy with its full weights (for evaluation in one process).

    Under FSDP every rank must call it (see `model_state`); the copy is built without
    pretrained weights (`build_model` with ``load_weights=False``) on the model's device.
    """
    if not is_sharded(model):
        return _unwrap(model)
    state = model_state(model)
    device = next(iter(state.values())).device
    copy = build_model(config, load_weights=False).to(device)
    copy.load_state_dict(state)
    return copy
