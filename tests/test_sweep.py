"""`dalip sweep` (smoke size, tiny model): sweep files, runs, restart, tables, plot; `dalip interpolate`."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from dalip.cli import main
from dalip.errors import ConfigError
from dalip.runs import load_config
from dalip.sweep import load_sweep, plan_runs, run_sweep
from dalip.sweep.interpolate import blend, initial_state
from dalip.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
VARIANTS = {"plain_clip": ["model.second_order=null", "model.alpha=1"], "cls_mbdc": []}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def write_sweep(folder: Path, **content) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": TINY, "seeds": [0, 1], "variants": VARIANTS, **content}))
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """Two variants x two seeds in smoke size, through the command line."""
    folder = tmp_path_factory.mktemp("sweep")
    assert main(["sweep", "--sweep", str(write_sweep(folder)), "--output", str(folder / "out"), "--smoke"]) == 0
    return folder


def test_sweep_writes_runs_tables_and_plot(swept):
    out = swept / "out"
    for variant in VARIANTS:
        for seed in (0, 1):
            run = out / variant / f"seed{seed}"
            assert (run / "eval.json").is_file()
            config = yaml.safe_load((run / "config.yaml").read_text())
            assert config["run"]["seed"] == seed and config["optim"]["steps"] == 2  # smoke size
    assert yaml.safe_load((out / "plain_clip/seed0/config.yaml").read_text())["model"]["second_order"] is None
    assert (out / "results.png").stat().st_size > 10_000
    md = (out / "results.md").read_text()
    assert "## twemoji-domain" in md and "## twemoji-general" in md and "| cls_mbdc | combined | 2 |" in md
    rows = read_csv(out / "results.csv")
    keys = {(r["variant"], r["embedding"], r["subset"]) for r in rows}
    subsets = ("twemoji-domain", "twemoji-general")
    assert keys == {("plain_clip", "first", s) for s in subsets} | {
        ("cls_mbdc", e, s) for e in ("first", "second", "combined") for s in subsets}
    assert not any(k.startswith("chance_R@") for k in rows[0])  # chance levels are not metrics


def test_table_is_mean_and_std_over_seeds(swept):
    out = swept / "out"
    values = [json.loads((out / f"cls_mbdc/seed{s}/eval.json").read_text())["second"]["twemoji-general"]
              ["subcategories/top1"] for s in (0, 1)]
    row = next(r for r in read_csv(out / "results.csv")
               if (r["variant"], r["embedding"], r["subset"]) == ("cls_mbdc", "second", "twemoji-general"))
    assert float(row["subcategories/top1_mean"]) == pytest.approx(statistics.mean(values))
    assert float(row["subcategories/top1_std"]) == pytest.approx(statistics.stdev(values))
    assert float(row["subcategories/top1_chance"]) == pytest.approx(1 / 80)
    assert row["n_seeds"] == "2"


def test_restart_skips_finished_runs(swept, capsys):
    out = swept / "out"
    stamp = (out / "cls_mbdc/seed1/eval.json").stat().st_mtime_ns
    assert main(["sweep", "--sweep", str(swept / "sweep.yaml"), "--output", str(out), "--smoke"]) == 0
    assert capsys.readouterr().out.count("finished earlier (eval.json exists), skipped") == 4
    assert (out / "cls_mbdc/seed1/eval.json").stat().st_mtime_ns == stamp


def test_unfinished_run_resumes(tmp_path, capsys):
    spec = load_sweep(write_sweep(tmp_path))
    (run,) = plan_runs(spec, tmp_path / "out", seeds=[3], smoke=True, variants=["cls_mbdc"])
    train(run.config, run.folder, stop_after=1)  # killed after step 1
    assert run_sweep([run]) == []
    assert "resuming from its checkpoint" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (run.folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and run.finished


def test_changed_config_in_an_existing_folder_is_an_error(swept):
    with pytest.raises(ConfigError, match="different config"):
        plan_runs(load_sweep(swept / "sweep.yaml"), swept / "out", smoke=False)


def test_one_run_per_gpu_as_subprocesses(tmp_path):
    """The multi-GPU path (subprocesses with CUDA_VISIBLE_DEVICES), exercised on the CPU."""
    spec = load_sweep(write_sweep(tmp_path))
    runs = plan_runs(spec, tmp_path / "out", smoke=True, variants=["plain_clip"])
    assert run_sweep(runs, gpus=["0", "1"]) == []
    assert all(r.finished and (r.folder / "train.log").is_file() for r in runs)


def test_dict_variants_and_order_of_overrides(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, overrides=["optim.steps=5"], variants={
        "as_dict": {"model.second_options": {"heads": 1, "reduced_dim": 4}, "optim.steps": 7},
        "as_list": ["model.second_options={heads: 1, reduced_dim: 4}"],
    }))
    a, b = spec.config("as_dict", seed=4), spec.config("as_list", seed=4, extra=["optim.lr=0.5"])
    assert a.model.second_options == b.model.second_options == {"heads": 1, "reduced_dim": 4}
    assert (a.optim.steps, b.optim.steps, b.optim.lr) == (7, 5, 0.5)  # variant beats shared overrides
    assert a.run.seed == 4 and a.data.spec["seed"] == 4


@pytest.mark.parametrize("content, message", [
    ({"variants": {"bad": ["optim.stepz=3"]}}, "variant 'bad': unknown config key 'optim.stepz'"),
    ({"variants": {"bad": ["model.second_order=nope"]}}, "unknown pooler 'nope'"),
    ({"variants": {}}, "'variants' must be a non-empty mapping"),
    ({"variants": {"a/b": []}}, "plain folder name"),
    ({"variants": {"v": "optim.steps=3"}}, "must be a list of 'section.key=value'"),
    ({"seeds": "zero"}, "seeds must be a non-empty list of integers"),
    ({"sedes": [1]}, "unknown sweep keys ['sedes']"),
    ({"base": None}, "'base'"),
])
def test_malformed_sweep_files(tmp_path, content, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(write_sweep(tmp_path, **content))
    assert message in str(err.value)


def test_missing_or_unparsable_sweep_file(tmp_path, capsys):
    assert main(["sweep", "--sweep", str(tmp_path / "none.yaml"), "--output", str(tmp_path)]) == 2
    assert "sweep file not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("variants: [unclosed")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_sweep(tmp_path / "bad.yaml")


def test_every_shipped_ablation_validates():
    files = sorted((ROOT / "examples" / "ablations").glob("*.yaml"))
    sweeps = [f for f in files if "variants" in yaml.safe_load(f.read_text())]
    assert len(sweeps) >= 9
    for path in sweeps:
        spec = load_sweep(path)
        assert spec.seeds == [0, 1, 2] and spec.variants
    for path in set(files) - set(sweeps):  # the shared bases are configs
        assert load_config(path).model.name == "effl0-minilm"
    base = load_config(ROOT / "examples" / "ablations" / "base.yaml")
    assert base.model.name == "effl0-minilm" and base.optim.steps < load_config("quickstart").optim.steps


def test_blend_is_linear_on_floats_and_exact_at_the_ends():
    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.tensor([1.0, 2.0, 4.0]), "n": torch.tensor(9)}
    assert torch.equal(blend(a, b, 0.0)["w"], a["w"]) and torch.equal(blend(a, b, 1.0)["w"], b["w"])
    torch.testing.assert_close(blend(a, b, 0.25)["w"], torch.tensor([0.25, 0.5, 1.0]))
    assert blend(a, b, 0.5)["n"].item() == 9  # integer buffers come from the end model


def test_interpolate_ends_reproduce_start_and_end(swept, tmp_path):
    end = swept / "out" / "cls_mbdc" / "seed0"
    start = swept / "out" / "plain_clip" / "seed0" / "checkpoint.pt"  # no second-order heads
    out = tmp_path / "interp"
    assert main(["interpolate", "--start", str(start), "--end", str(end / "checkpoint.pt"),
                 "--ratios", "0", "1", "--output", str(out)]) == 0
    at_end, original = (json.loads(p.read_text()) for p in (out / "ratio_1" / "eval.json", end / "eval.json"))
    for emb in original:
        for subset, metrics in original[emb].items():
            assert at_end[emb][subset] == pytest.approx(metrics, abs=1e-6)
    at_start = json.loads((out / "ratio_0" / "eval.json").read_text())
    plain = json.loads((start.parent / "eval.json").read_text())
    for subset, metrics in plain["first"].items():  # tower weights and first order: the start's
        assert at_start["first"][subset] == pytest.approx(metrics, abs=1e-6)
    assert (out / "interpolation.png").is_file() and "t=0.5" not in (out / "interpolation.md").read_text()
    assert {r["variant"] for r in read_csv(out / "interpolation.csv")} == {"t=0", "t=1"}


def test_init_start_is_the_runs_step_zero_weights(tmp_path):
    """With zero learning rates a trained step changes no parameter: its checkpoint holds the step-0
    parameters (batch-norm running statistics of the heads do move)."""
    config = load_config(TINY, ["run.seed=5", "optim.lr=0", "optim.head_lr=0", "optim.steps=2"])
    train(config, tmp_path, stop_after=1)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    rebuilt = initial_state(config)
    assert set(rebuilt) == set(saved)
    for key, value in rebuilt.items():
        if "running_" not in key and "num_batches_tracked" not in key:
            assert torch.equal(value, saved[key]), key
    other = initial_state(load_config(TINY, ["run.seed=6"]))
    assert any(not torch.equal(other[k], rebuilt[k]) for k in rebuilt)  # the seed matters (fresh heads)


def test_interpolate_rejects_bad_ratios(swept, tmp_path):
    with pytest.raises(ValueError, match="ratios must be in"):
        from dalip.sweep.interpolate import interpolate_and_evaluate

        interpolate_and_evaluate("init", swept / "out/cls_mbdc/seed0/checkpoint.pt", [1.5], tmp_path)


def test_duplicate_variant_names_are_an_error(tmp_path):
    """YAML keeps the last of two equal keys: two variants of one name would silently collapse into one."""
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {TINY}\nvariants:\n  a: [optim.steps=3]\n  b: []\n  a: [optim.steps=4]\n")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_sweep(path)


def test_every_variant_is_validated_before_the_first_run(tmp_path):
    """A variant whose pooler does not take the base's options fails at load time, naming it."""
    path = write_sweep(tmp_path, variants={"ok": [], "cov": ["model.second_order=cov"]})
    with pytest.raises(ConfigError, match="variant 'cov': model.second_options: pooler 'cov' .* does not take heads"):
        load_sweep(path)


def test_learning_towers_study_runs_at_smoke_size_with_fusion_curves(tmp_path):
    """The issue-15 study file (partly unlocked towers, 192 px, fusion curves) at smoke size on the tiny model."""
    out = tmp_path / "study"
    tiny = str(ROOT / "tests" / "assets" / "tiny-clip.json")
    assert main(["sweep", "--sweep", str(ROOT / "examples" / "ablations" / "learning_towers.yaml"),
                 "--output", str(out), "--smoke", f"model.name={tiny}", "data.spec.image_size=64",
                 "--seeds", "0", "--variants", "plain_clip", "cls_mbdc_learned_alpha"]) == 0
    assert "fusion@" not in (out / "results.md").read_text()
    fusion = (out / "fusion.md").read_text()
    assert "| cls_mbdc_learned_alpha | fusion@0.75 |" in fusion and "plain_clip" not in fusion
    assert (out / "fusion.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (out / "cls_mbdc_learned_alpha" / "seed0" / "metrics.jsonl").open()]
    assert all(0 < r["alpha"] < 1 for r in rows)
    config = yaml.safe_load((out / "cls_mbdc_learned_alpha" / "seed0" / "config.yaml").read_text())
    assert config["model"]["unlocked_text_layers"] == 2 and config["model"]["unlocked_image_groups"] == 3


def test_in_process_runs_on_the_same_frozen_towers_build_one_cache(tmp_path, capsys):
    """Two head variants over the same locked towers and data: the second run reuses the first's cache."""
    frozen = ["model.lock_text=true", "data.spec.augment=false", "model.cache_frozen=true",
              "data.spec.subsets=[domain]", "data.spec.eval_subsets=[domain]"]
    path = write_sweep(tmp_path, seeds=[0], variants={"alpha_0.5": frozen, "alpha_0.75": [*frozen, "model.alpha=0.75"]})
    runs = plan_runs(load_sweep(path), tmp_path / "out", smoke=True)
    assert run_sweep(runs, gpus=[]) == []
    out = capsys.readouterr().out
    assert out.count("frozen cache:") >= 2 and out.count("built in") == 1
    assert out.count("reused from an earlier run of this process") == 1
