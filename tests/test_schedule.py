"""Learning-rate schedules (optim.schedule) against open_clip_train's, and the weight-decay exclusions (optim.no_decay)."""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import pytest
import torch

from dalip.runs import load_config
from dalip.runs.model import build_model
from dalip.runs.validate import SCHEDULES
from dalip.train import build_optimizer, build_scheduler
from dalip.train.builders import no_decay
from dalip.train.schedule import SHAPES, lr_multiplier

TINY = str(Path(__file__).parent / "assets" / "tiny-train.yaml")


def written_out(schedule: str, step: int, warmup: int, steps: int, cooldown: int, end: float, power: float,
                base: float) -> float:
    """open_clip_train/scheduler.py's rates, written out (the reference when open_clip_train is absent)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup))) * base
    if schedule == "const" or step < steps - cooldown:
        return base
    return (1 - (step - (steps - cooldown)) / cooldown) ** power * (base - end) + end


def open_clip_rates(schedule: str, warmup: int, steps: int, cooldown: int, end: float, power: float,
                    base: float) -> list[float]:
    """The rate of every step from open_clip_train's own scheduler functions, else from `written_out`."""
    try:
        from open_clip_train import scheduler
    except ImportError:
        return [written_out(schedule, s, warmup, steps, cooldown, end, power, base) for s in range(steps)]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    adjust = {"cosine": lambda: scheduler.cosine_lr(optimizer, base, warmup, steps),
              "const": lambda: scheduler.const_lr(optimizer, base, warmup, steps),
              "const-cooldown": lambda: scheduler.const_lr_cooldown(optimizer, base, warmup, steps, cooldown,
                                                                   power, end)}[schedule]()
    return [adjust(s) for s in range(steps)]


def test_shapes_are_the_validated_names() -> None:
    assert set(SHAPES) == set(SCHEDULES)
    with pytest.raises(ValueError, match="optim.schedule"):
        lr_multiplier("linear", 0, 1, 10)


@pytest.mark.parametrize(("schedule", "cooldown", "end", "power"), [
    ("cosine", 0, 0.0, 1.0), ("const", 0, 0.0, 1.0), ("const-cooldown", 7, 0.0, 1.0),
    ("const-cooldown", 10, 1e-5, 0.5), ("const-cooldown", 4, 2e-5, 2.0),
])
def test_schedules_match_open_clip_train(schedule: str, cooldown: int, end: float, power: float) -> None:
    base, warmup, steps = 1e-4, 5, 30
    config = load_config(TINY, [f"optim.lr={base}", f"optim.warmup_steps={warmup}", f"optim.steps={steps}",
                                f"optim.schedule={schedule}", f"optim.cooldown_steps={cooldown}",
                                f"optim.lr_cooldown_end={end}", f"optim.cooldown_power={power}"])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = build_scheduler(optimizer, config)
    ours = []
    for _ in range(steps):
        ours.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    expected = open_clip_rates(schedule, warmup, steps, cooldown, end, power, base)
    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-15)
    if schedule == "const-cooldown":  # one step past the run: exactly the end rate
        assert optimizer.param_groups[0]["lr"] == pytest.approx(end, abs=1e-15)


def test_written_out_reference_agrees_with_open_clip_train() -> None:
    pytest.importorskip("open_clip_train.scheduler")
    for schedule, cooldown in (("cosine", 0), ("const", 0), ("const-cooldown", 6)):
        rates = open_clip_rates(schedule, 3, 20, cooldown, 1e-6, 0.5, 1e-3)
        mine = [written_out(schedule, s, 3, 20, cooldown, 1e-6, 0.5, 1e-3) for s in range(20)]
        assert rates == pytest.approx(mine, rel=1e-12)


def test_cosine_default_gives_todays_rates_in_every_group() -> None:
    """The quickstart's schedule: warmup (s+1)/20 then half a cosine to zero at step 250, at lr and head_lr."""
    config = load_config("quickstart")
    assert config.optim.schedule == "cosine"
    params = [torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2, 2))]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": 1e-4}, {"params": [params[1]], "lr": 1e-3}])
    sched = build_scheduler(optimizer, config)
    for step in range(260):
        today = (step + 1) / 20 if step < 20 else 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 20) / 230)))
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4 * today, 1e-3 * today], rel=1e-12)
        optimizer.step()
        sched.step()


def test_const_cooldown_ends_every_group_at_the_absolute_end_rate() -> None:
    """lr_cooldown_end is a learning rate (open_clip's --lr-cooldown-end): towers and heads both reach it."""
    config = load_config(TINY, ["optim.schedule=const-cooldown", "optim.cooldown_steps=4", "optim.lr_cooldown_end=1e-5",
                                "optim.steps=10", "optim.warmup_steps=2"])
    optimizer = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": config.optim.lr},
                                   {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": config.optim.head_lr}])
    sched = build_scheduler(optimizer, config)
    rates = []
    for _ in range(11):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        sched.step()
    assert rates[5] == pytest.approx([config.optim.lr, config.optim.head_lr])  # the constant part
    assert rates[10] == pytest.approx([1e-5, 1e-5])
    assert rates[8][1] == pytest.approx((1 - 2 / 4) * (config.optim.head_lr - 1e-5) + 1e-5)


def test_scheduler_state_resumes_with_the_same_rates() -> None:
    config = load_config(TINY, ["optim.schedule=const-cooldown", "optim.cooldown_steps=3"])
    first = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=config.optim.lr)
    sched = build_scheduler(first, config)
    for _ in range(6):
        first.step()
        sched.step()
    second = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=config.optim.lr)
    resumed = build_scheduler(second, config)  # the trainer's order: build both, then load both states
    second.load_state_dict(first.state_dict())
    resumed.load_state_dict(sched.state_dict())
    for _ in range(3):
        assert second.param_groups[0]["lr"] == pytest.approx(first.param_groups[0]["lr"], rel=1e-12)
        for opt, s in ((first, sched), (second, resumed)):
            opt.step()
            s.step()


# --------------------------------------------------------------------------- weight decay
def decay_groups(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[set[str], set[str]]:
    """(names with decay, names without) of the trainable parameters."""
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    exempt = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    return decayed, exempt


def test_no_decay_defaults_match_open_clip_on_the_tiny_model() -> None:
    """Default exclusions = open_clip_train's rule (ndim < 2 or bn / ln / bias / logit_scale in the name)."""
    config = load_config(TINY, ["model.second_order=mbdc_paper"])  # the head with BatchNorm
    model = build_model(config, load_weights=False)
    decayed, exempt = decay_groups(model, build_optimizer(model, config))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert decayed | exempt == set(trainable) and not decayed & exempt
    open_clip_rule = {n for n, p in trainable.items()
                      if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n}
    assert exempt == open_clip_rule
    head_norms = {n for n in trainable if n.startswith("second_heads") and ".norm." in n}  # mbdc_paper's BatchNorm
    assert head_norms and head_norms <= exempt
    assert all(trainable[n].ndim >= 2 for n in decayed) and decayed


def test_no_decay_patterns_exclude_matrices_by_name() -> None:
    config = load_config(TINY, ["optim.no_decay=['*token_embedding*']"])
    model = build_model(config, load_weights=False)
    decayed, exempt = decay_groups(model, build_optimizer(model, config))
    matrices = {n for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2}
    named = {n for n in matrices if fnmatch.fnmatchcase(n, "*token_embedding*")}
    assert named and named <= exempt
    assert decayed == matrices - named  # the patterns replace the defaults: the other matrices keep their decay
    # parameters with fewer than 2 dims stay exempt whatever the patterns say
    assert no_decay("any.weight", torch.nn.Parameter(torch.zeros(3)), [])
    assert not no_decay("any.weight", torch.nn.Parameter(torch.zeros(3, 3)), ["*bias"])


def test_quickstart_groups_are_unchanged() -> None:
    """The quickstart model: no parameter changes group against the rule before optim.no_decay existed."""
    config = load_config("quickstart")
    model = build_model(config, load_weights=False)
    _, exempt = decay_groups(model, build_optimizer(model, config))
    before = {n for n, p in model.named_parameters()
              if p.requires_grad and (p.ndim < 2 or "logit_scale" in n or "logit_bias" in n)}
    assert exempt == before
