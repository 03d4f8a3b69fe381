"""Fault injection (issue 21, cases 5, 7 and 8): resumes that name their run, one-line config errors, interpolate outputs.

Each test is a bad input and the outcome dalip survives it with; the list is in ``tests/test_faults.py``.
The CLI runs in-process (``dalip.cli.main``) on the tiny test model; every failure comes before the first step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from dalip.cli import main
from dalip.cli.train import DEFAULT_CONFIG, run_config
from dalip.runs import load_config
from dalip.runs.folder import existing_run_files

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
QUICK = ["optim.steps=1", "data.spec.eval_subsets=[domain]", "eval.embeddings=[first]"]  # the smallest run


def _one_error_line(err: str, command: str) -> str:
    """The only line on stderr: ``dalip <command>: error: ...`` (no traceback, no second line)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"dalip {command}: error: "), err
    return lines[0]


def _no_run_left(folder: Path) -> bool:
    """What a failure before the first step leaves: no folder, or none that a plain rerun refuses."""
    return not existing_run_files(folder)


# ---------------------------------------------------------------- case 5: --resume names its run
@pytest.mark.parametrize("where", ["missing", "empty"])
def test_resume_without_a_run_or_config_is_refused(tmp_path, capsys, where):
    out = tmp_path / "run"
    if where == "empty":
        out.mkdir()
    assert main(["train", "--output", str(out), "--resume"]) == 2  # trained the quickstart before
    line = _one_error_line(capsys.readouterr().err, "train")
    assert f"nothing to resume in {out}" in line and "--config" in line
    assert (not out.exists()) if where == "missing" else not any(out.iterdir())


def test_resume_of_checkpoints_without_their_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")  # a run whose config.yaml is gone: not the quickstart's
    assert main(["train", "--output", str(out), "--resume"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "no config.yaml" in line and "checkpoint.pt" in line and "--config" in line


def test_resume_with_config_and_nothing_to_resume_starts_that_run(tmp_path, capsys):
    """The same command, resubmitted (a preemptible job): first it starts the named run, then it resumes it."""
    out = tmp_path / "run"
    command = ["train", "--config", TINY, "--output", str(out), "--resume", *QUICK]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert f"nothing to resume in {out}: starting the run of {TINY}" in printed
    assert load_config(out / "config.yaml").model.name.endswith("tiny-clip.json")  # the named run, not the quickstart
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [1]
    assert main([*command, "optim.steps=2"]) == 0  # resubmitted (one step more: the later override wins)
    printed = capsys.readouterr().out
    assert "nothing to resume" not in printed and f"resumed from {out / 'checkpoint.pt'} at step 1/2" in printed


def test_train_without_config_or_resume_is_the_quickstart(tmp_path):
    config = run_config(None, tmp_path / "run", resume=False, overrides=[])
    assert DEFAULT_CONFIG == "quickstart" and config == load_config("quickstart")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- case 7: one line naming the key to change
def _images(folder: Path, n: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(folder / f"{i}.png")


def _last_error_line(err: str, command: str) -> str:
    """The error of a run that failed: the last line on stderr, the only error line, no traceback
    (a notice of the run folder's clean-up may come before it)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith(f"dalip {command}: error: ") and sum("error:" in line for line in lines) == 1, err
    assert "Traceback" not in err, err
    return lines[-1]


def _train_fails(tmp_path: Path, capsys, *overrides: str) -> str:
    """``dalip train`` of the tiny model with ``overrides``: exit 2, one error line (returned), no run left."""
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--config", TINY, "--output", str(out), *QUICK, *overrides]) == 2
    line = _last_error_line(capsys.readouterr().err, "train")
    assert _no_run_left(out), sorted(p.name for p in out.iterdir())
    return line


def test_caption_csv_without_its_caption_column(tmp_path, capsys):
    _images(tmp_path)
    (tmp_path / "train.tsv").write_text("filepath\tcaption\n" + "".join(f"{i}.png\tred {i}\n" for i in range(4)))
    line = _train_fails(tmp_path, capsys, f"data.spec={{dataset: csv, train: {tmp_path / 'train.tsv'}, image_size: 64}}")
    assert "data.spec.csv_caption_key" in line and "--csv-caption-key" not in line  # no such flag in dalip
    assert "no column 'title'" in line and "['filepath', 'caption']" in line


def test_caption_csv_that_is_not_utf8(tmp_path, capsys):
    _images(tmp_path)
    rows = "filepath\ttitle\n" + "".join(f"{i}.png\tcaf\xe9 {i}\n" for i in range(4))
    (tmp_path / "train.tsv").write_bytes(rows.encode("latin-1"))
    line = _train_fails(tmp_path, capsys, f"data.spec={{dataset: csv, train: {tmp_path / 'train.tsv'}, image_size: 64}}")
    assert line.startswith("dalip train: error: data.spec.train: caption CSV ") and "line 2: not UTF-8" in line


def test_batch_larger_than_the_training_set(tmp_path, capsys):
    _images(tmp_path)
    (tmp_path / "train.tsv").write_text("filepath\ttitle\n" + "".join(f"{i}.png\tred {i}\n" for i in range(4)))
    line = _train_fails(tmp_path, capsys, f"data.spec={{dataset: csv, train: {tmp_path / 'train.tsv'}, image_size: 64}}",
                        "data.batch_size=8")
    assert "data.batch_size" in line and "4 training samples" in line


def test_empty_training_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    line = _train_fails(tmp_path, capsys, f"data.spec={{dataset: folder, train: {tmp_path / 'empty'}, image_size: 64}}")
    assert line.startswith("dalip train: error: data.spec.train: ") and "no class sub-folders" in line


@pytest.mark.parametrize("content", ["text", "pickled objects"])
def test_pretrained_file_that_is_not_a_checkpoint(tmp_path, capsys, content):
    path = tmp_path / "weights.pt"
    if content == "text":
        path.write_text("not a checkpoint")
    else:  # torch's own message for this one advises weights_only=False: never pass that on
        torch.save({"args": argparse.Namespace(lr=1e-3), "state_dict": {"w": torch.zeros(2)}}, path)
    line = _train_fails(tmp_path, capsys, f"model.pretrained={path}")
    assert str(path) in line and "weights_only" not in line and "trust" not in line
    if content == "pickled objects":
        assert "argparse.Namespace" in line and "state_dict()" in line


def test_no_second_order_head_with_a_second_order_loss(tmp_path, capsys):
    """Refused at validation (before any model or folder), naming the settings that fix it."""
    line = _train_fails(tmp_path, capsys, "model.second_order=null")
    assert "model.second_order is null" in line and "loss.name=clip" in line and "loss.options.alpha=1" in line
    assert not (tmp_path / "run").exists()
    assert load_config(TINY, ["model.second_order=null", "loss.options.alpha=1"]).model.second_order is None
    assert load_config(TINY, ["model.second_order=null", "loss.name=clip"]).loss.name == "clip"
    with pytest.raises(ValueError, match=r"term\(s\) 'coral'.*loss terms without them"):
        load_config(TINY, ["model.second_order=null", "loss.name=combined",
                           "loss.options={terms: {clip: 1, coral: {order: second}}}"])


# ---------------------------------------------------------------- case 8: interpolate's output folder
@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("interp") / "run"
    assert main(["train", "--config", TINY, "--output", str(out), "optim.steps=1"]) == 0
    return out


def test_interpolate_refuses_a_used_folder_and_overwrite_removes_only_its_files(one_step_run, tmp_path, capsys):
    out = tmp_path / "interp"
    for stale in ("ratio_0", "ratio_1"):  # a previous interpolation at other ratios
        (out / stale).mkdir(parents=True)
        (out / stale / "eval.json").write_text("{}")
    for name in ("interpolation.md", "interpolation.csv", "interpolation.png", "notes.txt"):
        (out / name).write_text("old")
    before = {p.name for p in out.iterdir()}
    command = ["interpolate", "--start", "init", "--end", str(one_step_run / "checkpoint.pt"), "--output", str(out),
               "--ratios", "0.5"]
    capsys.readouterr()
    assert main(command) == 2
    line = _one_error_line(capsys.readouterr().err, "interpolate")
    assert str(out) in line and "not empty" in line and "--overwrite" in line
    assert {p.name for p in out.iterdir()} == before and (out / "interpolation.md").read_text() == "old"
    assert main([*command, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["interpolation.csv", "interpolation.md", "interpolation.png",
                                                       "notes.txt", "ratio_0.5"]
    assert (out / "notes.txt").read_text() == "old" and "t=0.5" in (out / "interpolation.md").read_text()
    assert "t=1" not in (out / "interpolation.md").read_text()


def test_interpolate_overwrite_with_a_bad_argument_deletes_nothing(one_step_run, tmp_path, capsys):
    out = tmp_path / "interp"
    (out / "ratio_1").mkdir(parents=True)
    assert main(["interpolate", "--start", "init", "--end", str(one_step_run / "checkpoint.pt"), "--output", str(out),
                 "--domain", "nope", "--overwrite"]) == 2
    assert "nope" in _one_error_line(capsys.readouterr().err, "interpolate") and (out / "ratio_1").is_dir()
