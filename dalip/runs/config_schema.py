"""A run's config schema: one dataclass per section (``model``, ``loss``, ``data``, ``optim``, ``run``, ``eval``).

Every field has a default. `dalip.runs.config_builder` fills these classes from nested dicts,
`dalip.runs.validate` checks their values and `dalip.runs.config` is the entry point.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dalip.models.head_spec import HeadSpec

__all__ = ["DataConfig", "DistributedConfig", "EvalConfig", "LossConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig"]


@dataclass
class ModelConfig:
    """The model: an open_clip architecture or dalip config with DALIP heads."""

    name: str = "effl0-minilm"
    pretrained: str | None = None  # towers: an open_clip hub tag of `name` (laion2b_s34b_b88k, openai) or a .pt/.safetensors file
    pretrained_strict: bool = True  # a pretrained file must fill every tower weight (false: load what matches)
    first_order: Any = "tower"  # "tower" | pooler name | {image: ..., text: ...}
    second_order: Any = "mbdc"  # pooler name | null | {image: ..., text: ...}
    second_options: dict = field(default_factory=dict)
    alpha: float = 0.5  # first-order weight of the combined embedding (and of the loss)
    separate_second_scale: bool = False
    alpha_learnable: bool = False  # learn alpha as sigmoid(logit), starting at `alpha` (head learning rate)
    lock_image: bool = False  # LiT-style: freeze the image tower ...
    unlocked_image_groups: int = 0  # ... except its last N layer groups (timm trunks, open_clip ViTs)
    lock_text: bool = False
    unlocked_text_layers: int = 0
    cache_frozen: bool = False  # both towers locked, no augmentation: compute their outputs once, reuse every epoch
    grad_checkpointing: bool = False
    compile: bool = False
    channels_last: bool = False  # NHWC conv weights: ~2x faster CNN towers on a CPU (no effect on ViTs' tokens)
    sync_batchnorm: bool = False  # BatchNorm statistics over all ranks (torch.nn.SyncBatchNorm), e.g. the mbdc_paper head
    open_clip: dict = field(default_factory=dict)  # extra open_clip.create_model kwargs

    @property
    def heads(self) -> HeadSpec:
        """The head options of this section (first/second order, options, alpha) as a `HeadSpec`."""
        return HeadSpec.from_mapping(dataclasses.asdict(self))


@dataclass
class LossConfig:
    """The training loss: a registered loss name and its options."""

    name: str = "distribution"
    options: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    """Data: dataset spec (passed to ``dalip.data.DatasetSpec``) and loader settings."""

    spec: dict = field(default_factory=dict)  # fields of dalip.data.DatasetSpec
    batch_size: int = 64
    workers: int = 2


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then a cosine, constant or constant-then-cooldown schedule; a separate
    rate for the new heads."""

    lr: float = 5e-5
    head_lr: float = 1e-3  # the new heads, and parameters matching head_patterns
    head_patterns: list = field(default_factory=list)  # e.g. ["clip.visual.head.*"]: a fresh projection
    weight_decay: float = 0.1
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 20
    steps: int = 300
    schedule: str = "cosine"  # cosine | const | const-cooldown (open_clip's --lr-scheduler)
    cooldown_steps: int = 0  # const-cooldown: the last N steps decay to lr_cooldown_end
    lr_cooldown_end: float = 0.0  # const-cooldown: the learning rate reached at the end (absolute, as open_clip's)
    cooldown_power: float = 1.0  # const-cooldown: 1 linear, 0.5 square-root decay
    # parameters without weight decay (fnmatch on names; plus every parameter with fewer than 2 dims)
    no_decay: list = field(default_factory=lambda: ["*bias", "*logit_scale", "*logit_bias", "*norm*", "*.bn*", "*.ln*"])
    accum_steps: int = 1
    # batch: the contrastive loss scores all accum_steps micro-batches together (open_clip's accum_freq);
    # micro: each micro-batch on its own (fewer negatives, no extra forward pass)
    accum_scope: str = "batch"
    grad_clip: float | None = 1.0


@dataclass
class RunConfig:
    """Run-level settings: seed, precision, logging and checkpoints."""

    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16 | fp16 (+ GradScaler) | pure_bf16
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2  # checkpoint.pt (newest) + checkpoint-step<N>.pt; resume falls back to an intact one
    tensorboard: bool = False
    wandb: bool = False  # also log to Weights & Biases (pip install 'dalip[wandb]'; WANDB_MODE=offline works)
    wandb_project: str = "dalip"
    wandb_name: str | None = None  # default: the run folder's name
    value_checks: bool = False  # data-dependent pooler input checks (sync the GPU)


@dataclass
class DistributedConfig:
    """Several processes (torchrun / srun): the process-group backend and how the model is replicated."""

    backend: str | None = None  # null: nccl on GPUs, gloo on CPUs; or any torch.distributed backend
    strategy: str = "ddp"  # ddp (DistributedDataParallel) | fsdp (FSDP2 fully_shard per block and per head)


@dataclass
class EvalConfig:
    """Evaluation at the end of training and in ``dalip eval``."""

    batch_size: int = 128
    embeddings: list | None = None  # default: first, second, combined (when available)
    every: int = 0  # also evaluate every N steps (0: only at the end)
    fusion: list | None = None  # weights a: also score a * s_first + (1 - a) * s_second (curve + plot)
    # zero-shot sets of labelled images: [{path: DIR_OR_CSV, name, classnames, templates, img_key, label_key, separator}]
    zero_shot: list = field(default_factory=list)


@dataclass
class TrainConfig:
    """The whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
