"""Shared set-up for the pooling benchmarks: variants, inputs and one fwd+bwd step.

A *variant* is a module plus a closure running one forward + backward
(``output.sum().backward()``) on fixed inputs. Tokens and guide require grad
(in training they come from the backbone), parameter gradients are reset to
``None`` before every step (as ``optimizer.zero_grad()`` does), so no variant pays
for gradient accumulation.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
for _p in (_ROOT, _HERE):  # dalip need not be installed; benchmarks/ modules import as top-level
    if _p not in sys.path:
        sys.path.insert(0, _p)

from floor_mbdc import FloorMBDC  # noqa: E402
from reference_mbdc import ReferenceMBDC  # noqa: E402

import dalip  # noqa: E402

DIM, HEADS, REDUCED = 768, 4, 46
#: the three variants the goals are about
MAIN_VARIANTS = ("mbdc_paper", "baseline", "floor")
#: a registered pooler's name plus this suffix: the same pooler under ``torch.compile``
COMPILED = "+compile"


@dataclass
class Variant:
    name: str
    module: nn.Module
    run: Callable[[], torch.Tensor]  # forward only; returns the output
    inputs: tuple[torch.Tensor, ...] = ()  # leaves whose .grad is reset too

    def zero_grad(self) -> None:
        for p in self.module.parameters():
            p.grad = None
        for t in self.inputs:
            t.grad = None

    def step(self) -> None:
        """One forward + backward, parameter and input grads reset (to None) first."""
        self.zero_grad()
        self.run().float().sum().backward()

    def count_ops(self) -> int:
        """Aten operators one step dispatches, views left out: on a GPU each is at least one kernel launch."""
        from torch.utils._python_dispatch import TorchDispatchMode

        class Counter(TorchDispatchMode):
            def __init__(self) -> None:
                super().__init__()
                self.count = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                self.count += not func.is_view
                return func(*args, **(kwargs or {}))

        with Counter() as counter:
            self.step()
        return counter.count


def step_flops(step: Callable[[], object]) -> int:
    """FLOPs of the matrix products and convolutions of one call of ``step`` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def make_inputs(batch: int, tokens: int = 196, dim: int = DIM, device: str = "cpu", seed: int = 0):
    """``tokens (B, N, C)`` and ``guide (B, C)``, both requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, dim, generator=gen).to(device).requires_grad_()
    g = torch.randn(batch, dim, generator=gen).to(device).requires_grad_()
    return x, g


def build_variant(name: str, x: torch.Tensor, g: torch.Tensor, seed: int = 0) -> Variant:
    """``name`` is a registered pooler (``+compile`` appended: under ``torch.compile``), or ``baseline`` / ``floor``."""
    torch.manual_seed(seed)
    device = x.device
    if name == "baseline":
        mod = ReferenceMBDC(DIM, HEADS, REDUCED, dropout=0.5).to(device).train()
        return Variant(name, mod, lambda: mod(x, guide=g), (x, g))
    if name == "floor":
        mod = FloorMBDC(DIM, HEADS, REDUCED).to(device).train()
        stats = mod.make_stats(x)
        return Variant(name, mod, lambda: mod(x, g, stats), (x, g, stats))
    mod = dalip.create_pooler(name.removesuffix(COMPILED), dim=DIM).to(device).train()
    # a compiled variant is compiled (forward and backward) by its first step, a warm-up one
    call = torch.compile(mod) if name.endswith(COMPILED) else mod
    guide = g if mod.requires_guide else None
    return Variant(name, mod, lambda: call(x, guide=guide), (x, g))


def all_variant_names() -> list[str]:
    """Every registered pooler, then the baseline and the floor."""
    return list(dalip.list_poolers()) + ["baseline", "floor"]


# ----------------------------------------------------------------------------- machine facts
def cpu_name() -> str:
    """The CPU model from ``lscpu`` (else ``platform``)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def sync(device: str | torch.device) -> None:
    """Wait for the device (CUDA) so that host timers measure its work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def machine_lines(device: str) -> list[str]:
    """Markdown bullet lines: device, software, date, command and load, for a results file."""
    name = cpu_name() if device == "cpu" else torch.cuda.get_device_name()
    load = os.getloadavg()
    return [
        f"- device: {name} ({os.cpu_count()} logical CPUs visible)" + ("" if device == "cpu" else f", host CPU {cpu_name()}"),
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads (torch default), Python {platform.python_version()}",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{' '.join(shlex.quote(a) for a in [os.path.relpath(sys.executable), *sys.argv])}`",
        f"- load average at start (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        " (other processes on the machine inflate and scatter the times; compare the ratios)",
    ]


RESULTS = os.path.join(_HERE, "results")


def write_report(text: str, out: str) -> None:
    """Write a markdown report to ``out`` and print it."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        fh.write(text)
    print(text)
    print(f"written: {out}", file=sys.stderr)
