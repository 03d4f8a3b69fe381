"""How ``bdc`` and ``mbdc`` grow with tokens M, reduced dimension r, heads h and batch B.

Times forward+backward (median of a few repeats) and the peak allocator memory of
one step, for the functional BDC core on ``z (B h, r, M)`` and for the whole
``mbdc`` pooler (C = 768, no square projection), varying one size at a time
around B=32, M=196, r=32, h=4. Expected growth: linear in M and B, quadratic in r
(Gram products ``r^2 M`` and ``r x r`` distances), linear in h for the core.

    python benchmarks/scaling.py [--repeats 5] [--device cpu|cuda] [--threads 1]

Writes ``benchmarks/results/scaling_<device>.md`` and ``.png`` (log-log, with the
fitted slope of every curve).
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import time
from pathlib import Path

import torch

import _common as C  # noqa: N812  (also puts the repo root on sys.path)
import dalip
from compare_mbdc import _trace_peak
from dalip.pooling.functional import bdc

BASE = {"B": 32, "M": 196, "r": 32, "h": 4}
SWEEP = {"M": [16, 49, 196, 576, 1024], "r": [8, 16, 32, 64, 96], "h": [1, 2, 4, 8, 16], "B": [4, 8, 16, 32, 64]}
DIM = 768
RESULTS = Path(C.RESULTS)


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
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.mean(lx), statistics.mean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (1: growth curves unaffected by other processes' load)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, curves = [], {}
    for kind in ("bdc core", "mbdc"):
        for axis, values in SWEEP.items():
            ts, ms = [], []
            for value in values:
                sizes = {**BASE, axis: value}
                t, m = measure(make_step(kind, sizes, args.device), args.device, args.repeats)
                ts.append(t)
                ms.append(m)
                rows.append(f"| {kind} | {axis} | {value} | {1e3 * t:.2f} | {m:.1f} |")
                print(rows[-1], flush=True)
            curves[(kind, axis)] = (values, ts, ms)
    device = torch.cuda.get_device_name() if args.device == "cuda" else C.cpu_name()
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    lines = [
        f"# Scaling of bdc and mbdc ({args.device})",
        "",
        f"- device: {device}; torch {torch.__version__}; {torch.get_num_threads()} threads; {when}",
        f"- command: `python benchmarks/scaling.py --repeats {args.repeats} --device {args.device} --threads {args.threads}`",
        f"- one size varied at a time around {BASE}; mbdc at C={DIM}, no square projection; fwd+bwd, float32",
        "",
        "| module | varied | value | fwd+bwd (ms) | peak memory (MiB) |",
        "|---|---|---:|---:|---:|",
        *rows,
        "",
        "Fitted log-log slopes (1 = linear, 2 = quadratic):",
        "",
        "| module | varied | time slope | memory slope |",
        "|---|---|---:|---:|",
    ]
    for (kind, axis), (xs, ts, ms) in curves.items():
        lines.append(f"| {kind} | {axis} | {slope(xs, ts):.2f} | {slope(xs, [max(m, 1e-3) for m in ms]):.2f} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scaling_{args.device}.md"
    out.write_text("\n".join(lines) + "\n")
    plot(curves, RESULTS / f"scaling_{args.device}.png", device)
    print(f"written: {out}")


def plot(curves: dict, path: Path, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5))
    for col, axis in enumerate(SWEEP):
        for row, (label, index) in enumerate((("fwd+bwd time (ms)", 1), ("peak memory (MiB)", 2))):
            ax = axes[row][col]
            for kind in ("bdc core", "mbdc"):
                xs, *values = curves[(kind, axis)]
                ys = [v * (1e3 if index == 1 else 1) for v in values[index - 1]]
                ax.loglog(xs, ys, "o-", label=f"{kind} (slope {slope(xs, [max(y, 1e-3) for y in ys]):.2f})")
            ax.set(xlabel=axis, ylabel=label)
            ax.legend(fontsize=7)
    fig.suptitle(f"bdc / mbdc scaling, one size varied around {BASE} ({device})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
