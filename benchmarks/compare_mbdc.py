"""mbdc_paper vs the published-code baseline vs the matrix-multiply floor, in one run.

Measures forward + backward (``output.sum().backward()``) of every pooler, the
baseline (:mod:`reference_mbdc`) and the floor (:mod:`floor_mbdc`) at ViT-B/16
shapes (N = 196 patch tokens + the guide, C = 768):

* time: median (and min) over ``--repeats`` steps after ``--warmup`` steps; the three
  MBDC variants are timed round-robin (one step each, in turn) so that load from
  other processes hits them alike;
* peak memory, CPU: the peak of the bytes live in PyTorch's CPU allocator during one
  warmed-up step, counted from the step's start (so parameters and inputs are not
  in it; the parameter gradients are). Read from the ``Total Allocated`` field of
  the ``[memory]`` events of ``torch.profiler.profile(profile_memory=True)``, which
  the CPU allocator updates on every allocation and free. ``tracemalloc`` cannot
  see these allocations. Each variant is measured in a fresh subprocess. As a
  cross-check the same subprocess reports the rise of its peak RSS
  (``VmHWM``) over its very first step (no warm-up there, so it also
  includes one-off allocator / oneDNN set-up and glibc heap slack);
* peak memory, CUDA (when available): ``torch.cuda.max_memory_allocated()`` over
  one step minus the memory allocated before it, at ``--cuda-batch`` (256), in
  float32 and under bf16 autocast.

A second section times the train-mode case of a frozen backbone (issue 20, item 10):
``mbdc_paper`` and the baseline on inputs without gradients, ``x[:, 1:]`` as the tokens and
``x[:, 0]`` as the guide of one ``(B, 1 + N, C)`` tensor, forward + backward in train mode,
``--frozen-repeats`` (11) interleaved rounds; ``--frozen-only`` runs that section alone
(report ``results/mbdc_train_mode_{device}.md``).

With ``--compile`` the main variants include ``mbdc_paper+compile``: the same pooler
under ``torch.compile`` (compiled during the warm-up steps, which the times leave out).

Writes a markdown report per device (``--out``, default
``benchmarks/results/pooling_{device}.md``) and prints it.

    python benchmarks/compare_mbdc.py              # CPU (+ CUDA if present)
    python benchmarks/compare_mbdc.py --repeats 21 --no-memory
    python benchmarks/compare_mbdc.py --device cuda --compile --out results/pooling_{device}_compile.md
    python benchmarks/compare_mbdc.py --frozen-only --device cpu    # inputs without gradients only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import _common as C  # also puts the repo root on sys.path
import torch

#: issue 8's goals for mbdc_paper: at least `speedup` x faster than the baseline, within `floor` x of the
#: dense-layer floor, peak memory at most `memory` x the baseline's (CPU: below it)
GOALS = {
    "cpu": {"speedup": 1.4, "floor": 1.5, "memory": 1.0},
    "cuda": {"speedup": 3.0, "floor": 1.3, "memory": 0.5},
}


# ----------------------------------------------------------------------------- timing
def time_variants(variants, repeats: int, warmup: int, device: str, autocast: torch.dtype | None = None):
    """Round-robin timing; returns {name: [seconds per step]}."""
    ctx = (lambda: torch.autocast(device_type=device, dtype=autocast)) if autocast else None
    times = {v.name: [] for v in variants}
    for i in range(warmup + repeats):
        for v in variants:
            v.zero_grad()
            C.sync(device)
            t0 = time.perf_counter()
            if ctx:
                with ctx():
                    out = v.run()
                out.float().sum().backward()
            else:
                v.step()
            C.sync(device)
            if i >= warmup:
                times[v.name].append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------------------- frozen inputs
#: the variants of the frozen-input section: dalip's head against the published formulation
FROZEN_VARIANTS = ("mbdc_paper", "baseline")


def frozen_variants(batch: int, device: str) -> list[C.Variant]:
    """The train-mode variants on inputs without gradients, as a frozen backbone hands them over.

    One ``(B, 1 + N, C)`` tensor: ``x[:, 1:]`` are the tokens (a strided view, not a copy) and
    ``x[:, 0]`` the guide; nothing upstream needs a gradient, so only the heads' parameters get one.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 197, C.DIM, generator=gen).to(device)
    built = (C.build_variant(name, x[:, 1:], x[:, 0]) for name in FROZEN_VARIANTS)
    return [C.Variant(v.name, v.module, v.run) for v in built]  # no input grads to reset


def frozen_section(device: str, batch: int, args) -> list[str]:
    """Markdown lines: time and ops of the frozen-input variants, and the speedup with its goal."""
    variants = frozen_variants(batch, device)
    ops = {v.name: v.count_ops() for v in variants}
    print(f"[{device}] frozen inputs: {args.frozen_repeats} interleaved rounds ...", file=sys.stderr)
    times = time_variants(variants, args.frozen_repeats, args.warmup, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup, goal = med["baseline"] / med["mbdc_paper"], GOALS[device]["speedup"]
    by_min = min(times["baseline"]) / min(times["mbdc_paper"])
    return [
        f"### {device}, B={batch}, train mode, inputs without gradients (`x[:, 1:]` tokens, `x[:, 0]` guide)",
        "",
        *table(FROZEN_VARIANTS, times, None, None, ops),
        "",
        (f"- speedup = baseline / mbdc_paper: **{speedup:.2f}** (goal >= {goal}:"
         f" {'met' if speedup >= goal else 'MISSED'}); by minima {by_min:.2f}"),
        f"- medians over {args.frozen_repeats} interleaved rounds after {args.warmup} warm-up",
        "",
    ]


# ----------------------------------------------------------------------------- memory
def _trace_peak(prof) -> int:
    """Peak of the allocator's live bytes over a profiled region, from the region's start.

    ``Total Allocated`` is a process-wide counter that only sees frees of blocks
    allocated while profiling, so it is taken relative to its value just before the
    first event of the region (this is why each variant is measured in a fresh process).
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        with open(f.name) as fh:
            trace = json.load(fh)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    mem = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    if not mem:
        return 0
    base = mem[0]["args"]["Total Allocated"] - mem[0]["args"]["Bytes"]
    return max(e["args"]["Total Allocated"] for e in mem) - base


def _hwm() -> int:
    """Peak resident set (bytes) of this process: ``VmHWM`` from /proc (Linux), else ``ru_maxrss``.

    (``ru_maxrss`` is inherited from the parent across fork + exec on Linux, so a
    child spawned by a large parent would see no rise; ``VmHWM`` is per address space.)
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_worker(name: str, batch: int) -> None:
    """Subprocess entry: print {"rss_rise", "peak"} (bytes) for one variant.

    ``rss_rise``: rise of the peak RSS over the very first step (:func:`_hwm`). ``peak``: allocator peak over a later, warmed-up step (:func:`_trace_peak`).
    """
    from torch.profiler import ProfilerActivity, profile

    x, g = C.make_inputs(batch)
    v = C.build_variant(name, x, g)
    before = _hwm()
    v.step()
    rss = _hwm() - before
    v.step()
    v.zero_grad()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        v.step()
    print(json.dumps({"rss_rise": rss, "peak": _trace_peak(prof)}))


def cpu_memory(name: str, batch: int) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-worker", name, "--batch", str(batch)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def cuda_peak_bytes(v: C.Variant, autocast: torch.dtype | None) -> int:
    v.step()  # warm-up
    v.zero_grad()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if autocast is None:
        v.step()
    else:
        with torch.autocast(device_type="cuda", dtype=autocast):
            out = v.run()
        out.float().sum().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


# ----------------------------------------------------------------------------- report
def fmt_ms(ts) -> tuple[str, str]:
    return f"{1e3 * statistics.median(ts):.1f}", f"{1e3 * min(ts):.1f}"


def ratios(times, peaks, note: str, device: str) -> list[str]:
    med = {k: statistics.median(v) for k, v in times.items()}
    goals = GOALS[device]
    lines = []

    def line(label, value, goal, ok):
        lines.append(f"- {label}: **{value:.2f}** (goal {goal}: {'met' if ok else 'MISSED'})")

    s = med["baseline"] / med["mbdc_paper"]
    line("speedup = baseline / mbdc_paper", s, f">= {goals['speedup']}", s >= goals["speedup"])
    f = med["mbdc_paper"] / med["floor"]
    line("floor ratio = mbdc_paper / floor", f, f"<= {goals['floor']}", f <= goals["floor"])
    if peaks and peaks.get("baseline"):
        m, goal = peaks["mbdc_paper"] / peaks["baseline"], goals["memory"]
        strict = device == "cpu"  # CPU: below the baseline's; GPU: at most half of it
        line("memory ratio = mbdc_paper peak / baseline peak", m, f"{'<' if strict else '<='} {goal:g}",
             m < goal if strict else m <= goal)
    compiled = "mbdc_paper" + C.COMPILED
    if compiled in med:
        lines.append(f"- torch.compile: mbdc_paper / mbdc_paper{C.COMPILED} = **{med['mbdc_paper'] / med[compiled]:.2f}**"
                     f"; compiled vs baseline {med['baseline'] / med[compiled]:.2f}, vs floor {med[compiled] / med['floor']:.2f}"
                     + (f", peak memory {peaks[compiled] / peaks['baseline']:.2f} of the baseline's"
                        if peaks and peaks.get(compiled) and peaks.get("baseline") else ""))
    lines.append(f"- ratios use medians{note}")
    return lines


def table(names, times, peaks, rss=None, ops=None) -> list[str]:
    head = "| variant | fwd+bwd median (ms) | min (ms) | peak memory (MiB) |"
    sep = "|---|---:|---:|---:|"
    if rss:
        head += " max-RSS rise, fresh process (MiB) |"
        sep += "---:|"
    if ops:
        head += " ops / step |"
        sep += "---:|"
    rows = [head, sep]
    for n in names:
        if n not in times:
            continue
        med, mn = fmt_ms(times[n])
        pk = f"{peaks[n] / 2**20:.1f}" if peaks and n in peaks else "-"
        row = f"| {n} | {med} | {mn} | {pk} |"
        if rss:
            row += f" {rss[n] / 2**20:.1f} |" if n in rss else " - |"
        if ops:
            row += f" {ops[n]} |" if n in ops else " - |"
        rows.append(row)
    return rows


def run_device(device: str, args) -> list[str]:
    batch = args.batch if device == "cpu" else args.cuda_batch
    x, g = C.make_inputs(batch, device=device)
    names = C.all_variant_names()
    main_names = list(C.MAIN_VARIANTS) + (["mbdc_paper" + C.COMPILED] if args.compile else [])
    variants = {n: C.build_variant(n, x, g) for n in dict.fromkeys([*main_names, *names])}
    order = main_names + [n for n in names if n not in main_names]
    main = [variants[n] for n in main_names]
    rest = [variants[n] for n in order[len(main_names):]]
    # dispatched aten ops of one eager step (not for compiled variants: their fused kernels bypass the dispatcher)
    ops = {n: v.count_ops() for n, v in variants.items() if not n.endswith(C.COMPILED)}
    lines = []
    modes = [(None, "float32")] + ([(torch.bfloat16, "bf16 autocast")] if device == "cuda" else [])
    for autocast, label in modes:
        print(f"[{device} {label}] timing {len(main)} MBDC variants x {args.repeats} ...", file=sys.stderr)
        times = time_variants(main, args.repeats, args.warmup, device, autocast)
        print(f"[{device} {label}] timing {len(rest)} other poolers ...", file=sys.stderr)
        times.update(time_variants(rest, max(3, args.repeats // 2), 1, device, autocast))
        peaks, rss = {}, {}
        if not args.no_memory:
            measured = main_names if args.memory == "main" else order
            print(f"[{device} {label}] memory of {len(measured)} variants ...", file=sys.stderr)
            for n in measured:
                if device == "cpu":
                    mem = cpu_memory(n, batch)
                    peaks[n], rss[n] = mem["peak"], mem["rss_rise"]
                else:
                    peaks[n] = cuda_peak_bytes(variants[n], autocast)
        lines += [f"### {device}, B={batch}, N=196 (+ guide), C=768, {label}", ""]
        lines += table(order, times, peaks, rss, ops) + [""]
        lines += ratios(times, peaks, f" over {args.repeats} round-robin steps after {args.warmup} warm-up", device)
        lines += [""]
    return lines


def header(device: str, args) -> list[str]:
    return [
        f"# Pooling benchmark: mbdc_paper vs baseline vs floor ({device})",
        "",
        *C.machine_lines(device),
        ("- step = forward + `output.sum().backward()`; tokens and guide require grad; parameter grads reset to None"
        " before each step; modules in train mode (dropout 0.5 and batch statistics active)"),
        ("- variants: `baseline` = benchmarks/reference_mbdc.py (published formulation: loop over heads, all-ones"
        " centring, CPU-built triu index, no count factor); `floor` = benchmarks/floor_mbdc.py: the head's dense"
        " layers alone (in-projection, shared reduction linear, LayerNorm + square Linear + out Linear). By design"
        " the floor leaves out what is not a dense layer but every implementation must still pay: guide weighting,"
        " BatchNorm, ReLU, dropout, the BDC (Gram product, distances, centring) and the upper triangle"),
        ("- ops / step: aten operators dispatched by one float32 step (forward + backward), views left out;"
        " on a GPU each is at least one kernel launch (a few microseconds), the cost that does not shrink with size"),
        "- peak memory: " + (
            "peak bytes live in the PyTorch CPU allocator during one warmed-up step, from its start"
            " (profiler `[memory]` events, `Total Allocated`), parameter gradients included"
            if device == "cpu" else "`torch.cuda.max_memory_allocated()` during one step minus allocated before it"
        ),
        "",
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32, help="CPU batch size (default 32)")
    ap.add_argument("--cuda-batch", type=int, default=256, help="CUDA batch size (default 256)")
    ap.add_argument("--repeats", type=int, default=15, help="timed steps per MBDC variant (default 15)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: CPU, and CUDA too when available")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    ap.add_argument("--memory", choices=("all", "main"), default="all",
                    help="peak memory of every variant (all) or of the MBDC variants only (main)")
    ap.add_argument("--compile", action="store_true",
                    help=f"also time mbdc_paper under torch.compile (mbdc_paper{C.COMPILED}; compiled during warm-up)")
    ap.add_argument("--frozen-repeats", type=int, default=11,
                    help="interleaved rounds of the frozen-input (no input gradient) section (default 11)")
    ap.add_argument("--frozen-only", action="store_true",
                    help="only the frozen-input section (default report results/mbdc_train_mode_{device}.md)")
    ap.add_argument("--out", default=None,
                    help="report file; {device} becomes cpu or cuda (default results/pooling_{device}.md)")
    ap.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_worker:
        memory_worker(args.memory_worker, args.batch)
        return
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    report = "mbdc_train_mode_{device}.md" if args.frozen_only else "pooling_{device}.md"
    out = args.out or os.path.join(C.RESULTS, report)
    for device in devices:
        batch = args.batch if device == "cpu" else args.cuda_batch
        if args.frozen_only:
            lines = [f"# mbdc_paper vs baseline, train mode, inputs without gradients ({device})", "",
                     *C.machine_lines(device), ""]
        else:
            lines = header(device, args) + run_device(device, args)
        lines += frozen_section(device, batch, args)
        lines.append(f"- load average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
        C.write_report("\n".join(lines) + "\n", out.format(device=device))


if __name__ == "__main__":
    main()
