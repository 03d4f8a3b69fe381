"""How ``bdc`` and ``mbdc`` grow with tokens M, reduced dimension r, heads h and batch B.

Times forward+backward (median of a few repeats), the peak allocator memory and the
FLOPs of matrix products (``FlopCounterMode``, forward and backward) of one step, for
the functional BDC core on ``z (B h, r, M)`` and for the whole ``mbdc`` pooler
(C = 768, no square projection), varying one size at a time around B=32, M=196,
r=32, h=4.

Expected growth, from the arithmetic:

* **bdc core**: the Gram products ``z z^T`` cost ``6 B h r^2 M`` FLOPs per step
  (forward + both backward products), the distances, centring and upper triangle
  ``O(B h r^2)``: linear in M, B and h, quadratic in r. Memory: the ``(B h, r, M)``
  input, its gradient and float32 copy plus ``(B h, r, r)`` matrices: linear in
  M, B, h and in r while ``r < M``.
* **mbdc**: the dense layers dominate: the ``C x C`` in-projection on every token
  (``6 B M C^2``), the reduction (``6 B M C r``), the BDC (``6 B h r^2 M``) and the
  output Linear on ``S = h r (r + 1) / 2`` values (``6 B S C``). At C = 768 the first
  term is the largest, so the module is linear in M and B and nearly flat in r and
  h while ``h r^2`` and ``h r^2 C / M`` stay small against ``C^2``.

The report gives each curve's log-log slope over the whole range and over its two
largest sizes (the asymptotic growth, once fixed per-call costs no longer dominate),
next to the slope of its FLOP count, and says where time departs from the FLOPs.

    python benchmarks/scaling.py [--repeats 5] [--device cpu|cuda] [--threads 1] [--quick]

Writes ``scaling_<device>.md`` and ``.png`` (log-log, each curve with its FLOP-
proportional expectation dashed) in ``--out-dir`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import _common as C  # noqa: N812  (also puts the repo root on sys.path)
import torch
from compare_mbdc import _trace_peak

import dalip
from dalip.pooling.functional import bdc

BASE = {"B": 32, "M": 196, "r": 32, "h": 4}
SWEEP = {"M": [16, 49, 196, 576, 1024], "r": [8, 16, 32, 64, 96, 128], "h": [1, 2, 4, 8, 16], "B": [4, 8, 16, 32, 64]}
#: --quick: a toy sweep for smoke runs (the numbers mean nothing)
QUICK_BASE = {"B": 2, "M": 8, "r": 4, "h": 2}
QUICK_SWEEP = {"M": [4, 8], "r": [2, 4], "h": [1, 2], "B": [1, 2]}
KINDS = ("bdc core", "mbdc")
#: how the arithmetic grows (log-log slope) for each kind and axis, see the module docstring
EXPECTED = {"bdc core": {"M": 1, "r": 2, "h": 1, "B": 1}, "mbdc": {"M": 1, "r": 0, "h": 0, "B": 1}}
DIM = 768


@dataclass
class Point:
    value: int
    seconds: float
    mib: float
    flops: int


def make_step(kind: str, sizes: dict, device: str):
    """A closure running one forward+backward of ``kind`` at ``sizes``."""
    B, M, r, h = sizes["B"], sizes["M"], sizes["r"], sizes["h"]
    g = torch.Generator(device="cpu").manual_seed(0)
    if kind == "bdc core":
        z = torch.randn(B * h, r, M, generator=g).to(device).requires_grad_(True)
        return lambda: bdc(z).sum().backward()
    pool = dalip.create_pooler("mbdc", dim=DIM, heads=h, reduced_dim=r).to(device).train()
    x = torch.randn(B, M, DIM, generator=g).to(device).requires_grad_(True)
    guide = torch.randn(B, DIM, generator=g).to(device)
    return lambda: pool(x, guide=guide).sum().backward()


def measure(step, device: str, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MiB) of one step."""
    step()  # warm-up
    times = []
    for _ in range(repeats):
        C.sync(device)
        t0 = time.perf_counter()
        step()
        C.sync(device)
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with torch.profiler.profile(profile_memory=True) as prof:
            step()
        peak = _trace_peak(prof)
    return statistics.median(times), peak / 2**20


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (1 = linear, 2 = quadratic growth)."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-12)) for y in ys]
    mx, my = statistics.mean(lx), statistics.mean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


TOP = 3  # the "top" slope is fitted over this many largest sizes


def slopes(points: list[Point]) -> dict[str, float]:
    """Whole-range and top-of-range (the ``TOP`` largest sizes) slopes of time, memory and FLOPs."""
    xs = [p.value for p in points]
    out = {}
    for key, ys in (("time", [p.seconds for p in points]), ("memory", [p.mib for p in points]),
                    ("flops", [p.flops for p in points])):
        out[key] = slope(xs, ys)
        out[f"{key}_top"] = slope(xs[-TOP:], ys[-TOP:])
    return out


#: why measured time departs from the FLOP count; the generated lines refer to these by number
DEPARTURES = [
    "**fixed per-step cost**: a step runs the same few dozen operators whatever the size (Python dispatch"
    " on a CPU, kernel launches of a few microseconds each on a GPU); at small sizes they, not the"
    " arithmetic, set the time, so the curve starts flat and its whole-range slope is below the FLOPs'.",
    "**memory-bound products**: the Gram product of an `(r, M)` block does `2 r^2 M` FLOPs on `4 r M`"
    " bytes of float32, r / 2 FLOP per byte. Below the machine's balance point (about 10-20 FLOP/byte on"
    " CPUs and on a GPU's float32 units) the time follows the bytes, which grow like `r M` (slope 1 in r),"
    " and the element-wise work on the `(r, M)` input and its gradient grows the same way; only at large r"
    " does the quadratic term take over.",
    "**not in the FLOP count**: element-wise work (softmax, norms, ReLU/dropout, the `r x r` distances and"
    " centring) and memory traffic are not matrix products; where they grow faster than the products, or"
    " caches overflow at the largest sizes, time grows faster than the FLOPs.",
    "**memory** holds `(B h, r, M)`-sized tensors (input copy, gradient; linear in M, B, h and r) plus parts"
    " that do not grow with the varied size: the parameter gradients (mbdc's `C x C` in-projection) and, for"
    " the core, the `(B h, r, r)` matrices, which outweigh the `(r, M)` ones while M < r. So memory slopes"
    " start below 1 in M and reach 1 at the top; mbdc's memory grows with `S = h r (r + 1) / 2` (the `(B, S)`"
    " statistics, their LayerNorm and the `S x C` output weight and gradient), up to slope 2 in r once S is large.",
]


def reading(kind: str, axis: str, s: dict[str, float]) -> str:
    """One line on how a curve compares with its arithmetic (departures numbered as in ``DEPARTURES``)."""
    gap = s["time_top"] - s["flops_top"]
    if abs(gap) <= 0.25:
        verdict = "time follows the FLOPs at the large sizes" + (
            ", below them over the whole range (1, 2)" if s["time"] < s["flops"] - 0.25 else "")
    elif gap < 0:
        verdict = "time grows slower than the FLOPs even at the large sizes (1, 2)"
    else:
        verdict = "time grows faster than the FLOPs at the large sizes (3)"
    return (f"- **{kind}, {axis}**: expected {EXPECTED[kind][axis]}; FLOPs {s['flops']:.2f} (top {s['flops_top']:.2f});"
            f" time {s['time']:.2f} (top {s['time_top']:.2f}): {verdict}; memory {s['memory']:.2f}"
            f" (top {s['memory_top']:.2f}{', 4' if abs(s['memory'] - s['memory_top']) > 0.25 else ''}).")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (1: growth curves unaffected by other processes' load)")
    ap.add_argument("--quick", action="store_true", help="a toy sweep (smoke runs; the numbers mean nothing)")
    ap.add_argument("--out-dir", default=C.RESULTS)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    base, sweep = (QUICK_BASE, QUICK_SWEEP) if args.quick else (BASE, SWEEP)
    rows, curves = [], {}
    for kind in KINDS:
        for axis, values in sweep.items():
            points = []
            for value in values:
                step = make_step(kind, {**base, axis: value}, args.device)
                t, m = measure(step, args.device, args.repeats)
                points.append(Point(value, t, m, C.step_flops(step)))
                rows.append(f"| {kind} | {axis} | {value} | {1e3 * t:.2f} | {m:.1f} | {points[-1].flops / 1e9:.3g} |")
                print(rows[-1], flush=True)
            curves[(kind, axis)] = points
    device = torch.cuda.get_device_name() if args.device == "cuda" else C.cpu_name()
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    fitted = {key: slopes(points) for key, points in curves.items()}
    command = f"python benchmarks/scaling.py --repeats {args.repeats} --device {args.device}" + (
        f" --threads {args.threads}" if args.device == "cpu" else "") + (" --quick" if args.quick else "")
    lines = [
        f"# Scaling of bdc and mbdc ({args.device})",
        "",
        f"- device: {device}; torch {torch.__version__}; "
        + (f"{torch.get_num_threads()} threads; " if args.device == "cpu" else "") + when,
        f"- command: `{command}`",
        f"- one size varied at a time around {base}; mbdc at C={DIM}, no square projection; fwd+bwd, float32;"
        " GFLOP = matrix products and convolutions of one step, forward and backward (`FlopCounterMode`)",
        "",
        "| module | varied | value | fwd+bwd (ms) | peak memory (MiB) | GFLOP |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Fitted log-log slopes (1 = linear, 2 = quadratic); *top* = over the {TOP} largest sizes:",
        "",
        "| module | varied | expected | FLOPs | time | time, top | memory | memory, top |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (kind, axis), s in fitted.items():
        lines.append(f"| {kind} | {axis} | {EXPECTED[kind][axis]} | {s['flops']:.2f} | {s['time']:.2f} |"
                     f" {s['time_top']:.2f} | {s['memory']:.2f} | {s['memory_top']:.2f} |")
    lines += [
        "",
        "## Reading (generated from the slopes above)",
        "",
        "Expected: the bdc core's Gram products cost `6 B h r^2 M` FLOPs (linear in M, B, h; quadratic in r);"
        " the mbdc pooler is dominated by its `C x C` in-projection (`6 B M C^2`), so it is linear in M and B"
        " and nearly flat in r and h at C = 768. The dashed lines of the plot are time proportional to the"
        " FLOP count, anchored at the largest size. Time departs from the FLOPs for three reasons, memory"
        " from linear growth for a fourth:",
        "",
        *(f"{i}. {text}" for i, text in enumerate(DEPARTURES, 1)),
        "",
        *(reading(kind, axis, s) for (kind, axis), s in fitted.items()),
    ]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"scaling_{args.device}.md"
    out.write_text("\n".join(lines) + "\n")
    plot(curves, out_dir / f"scaling_{args.device}.png", device, base)
    print("\n".join(lines[-len(fitted) - 1:]))
    print(f"written: {out}")


def plot(curves: dict, path: Path, device: str, base: dict) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(axis for _, axis in curves))
    fig, axes = plt.subplots(2, len(axes_names), figsize=(4 * len(axes_names), 7), squeeze=False)
    colours = dict(zip(KINDS, ("tab:blue", "tab:orange")))
    for col, axis in enumerate(axes_names):
        for row, label in enumerate(("fwd+bwd time (ms)", "peak memory (MiB)")):
            ax = axes[row][col]
            for kind in KINDS:
                points = curves[(kind, axis)]
                xs = [p.value for p in points]
                ys = [1e3 * p.seconds if row == 0 else p.mib for p in points]
                ax.loglog(xs, ys, "o-", color=colours[kind], label=f"{kind} (slope {slope(xs, ys):.2f})")
                if row == 0:  # expectation: time proportional to the FLOPs, through the largest size
                    last = points[-1]
                    ax.loglog(xs, [ys[-1] * p.flops / last.flops for p in points], "--", color=colours[kind],
                              alpha=0.6, label=f"{kind}: ∝ FLOPs (slope {slope(xs, [p.flops for p in points]):.2f})")
                else:  # reference: linear growth through the largest size
                    ax.loglog(xs, [ys[-1] * x / xs[-1] for x in xs], ":", color=colours[kind], alpha=0.6,
                              label=f"{kind}: linear (slope 1)")
            ax.set(xlabel=axis, ylabel=label)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.legend(fontsize=7)
    fig.suptitle(f"bdc / mbdc scaling, one size varied around {base} ({device});"
                 " dashed: time ∝ FLOPs, dotted: linear memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
