"""Fault injection: each test is one fault or bad input and the outcome the toolkit survives it with.

Faults and bad inputs covered (test -> outcome):

Run folders, checkpoints and resume (issue 14, item 2 and 7):
- SIGKILL in the middle of a run -> the last checkpoint is intact and ``--resume`` finishes the run
  (``tests/test_train.py::test_sigkill_mid_run_then_resume``).
- kill while a checkpoint is being written -> the previous checkpoint stays whole
  (``tests/test_train.py::test_kill_while_writing_never_corrupts_the_previous_checkpoint``).
- ``dalip train`` into a finished run without ``--resume`` -> refused (exit 2), nothing touched;
  ``--overwrite`` starts again (``test_existing_run_is_refused_unless_resume_or_overwrite``).
- two processes writing one run folder -> the second is refused naming the first's pid; a lock
  left by a killed process is taken over with a warning (``test_second_writer_is_refused_and_stale_lock_taken_over``).
- a bit flip or a truncation of the newest checkpoint -> ``dalip eval`` refuses it (exit 2),
  ``--resume`` falls back to the previous checkpoint with a warning naming the bad file
  (``test_corrupt_newest_checkpoint``).
- ``dalip eval`` of a finished run -> a new ``eval-2.json``, the run's ``eval.json`` is kept
  (``test_eval_never_replaces_the_runs_results``).
- ``--resume`` with a changed batch size -> refused listing the change, ``config.yaml`` unchanged;
  a changed ``run.log_every`` / longer ``optim.steps`` is accepted and printed
  (``test_resume_refuses_settings_that_change_the_run``).

Weights and data (issue 14, items 4 and 6):
- ``model.pretrained`` of another architecture (no tower weight matches) -> a clear error with
  example keys; ``model.pretrained_strict=false`` loads it with the report printed
  (``test_pretrained_of_another_architecture_is_refused``).
- a batch without one readable sample -> skipped and counted, training goes on; a dataset with no
  readable sample -> a clear error naming the first bad files (``test_unreadable_batches``).
- a non-UTF-8 caption / label CSV -> an error naming the file and line (``test_non_utf8_csv``).
- a 16-bit PNG -> scaled to 8 bits, not saturated to white (``tests/test_data.py``).

Shards, writes and installs (issue 14, items 9-11):
- a webdataset shard truncated mid-member -> the samples before the cut are trained on, the cut is
  reported and counted as one bad sample (``test_truncated_webdataset_shard``).
- an error while a results / config / checkpoint file is written -> the previous file stays whole,
  no temporary file is left (``test_failed_write_keeps_the_previous_file``).
- a feature whose extra is not installed (matplotlib, webdataset, the quickstart packages) -> an
  ImportError naming ``pip install 'dalip[<extra>]'``; ``dalip train`` without the ``train`` extra
  -> one error line, exit 2, before any run folder is made (``tests/test_install.py``).

Divergence, non-finite values and bad input (issue 14, items 1, 3, 5, 8):
- a NaN loss mid-run -> ``dalip train: error: non-finite loss at step 3``, exit 2; the step-2
  checkpoint is kept, no NaN checkpoint, no evaluation (``test_nan_loss_stops_the_run``).
- NaN weights after a step whose loss was finite -> refused before the checkpoint is written, the
  earlier one kept (``test_nan_weights_are_never_saved``).
- a model that encodes NaN -> evaluation refuses it naming the set and embedding; NaN retrieval
  scores are never hits (``test_eval_refuses_a_diverged_model``, ``tests/test_eval.py``).
- ``optim.lr=nan`` / negative rates / betas outside [0, 1) / non-positive sizes / options the
  pooler or loss does not take / ``eval.embeddings`` without a second-order head -> one error line
  before any model is built (``test_bad_configs_fail_before_any_model``, ``tests/test_config.py``).
- one NaN token in one row -> the other rows and BatchNorm's running statistics unaffected, the row
  reported (``tests/test_poolers.py::test_a_nan_token_stays_in_its_row``).
- fp16 / bf16 / fp64 tokens outside autocast, a huge ``reduced_dim`` -> every pooler works, or
  fails at construction with a clear error (``tests/test_poolers.py``).
- ``base:`` cycles, non-UTF-8 YAML, duplicate keys / sweep variant names -> a ConfigError naming the
  file (``tests/test_config.py``, ``tests/test_sweep.py``).
- an ``--output`` that is a file, missing files and bad values for every sub-command -> one
  ``dalip <cmd>: error:`` line, exit 2 (``test_every_command_ends_bad_input_with_one_line``).

Many processes and bad data at scale (issue 20, item 1):
- one image in five corrupt (CSV) and webdataset shards of different lengths under ``torchrun`` (2 gloo
  processes) -> every rank trains on exactly ``data.batch_size`` samples (unreadable ones replaced from the
  rank's order / stream), the run finishes, ``skipped`` sums every rank, and a 2-rank step scores the loss of
  one process on the global batch to 1e-5 (``tests/test_multiprocess_data.py``).
- a failure between claiming the run folder and the first step -> the folder is left as it was, so the same
  command runs again (``test_a_failure_before_the_first_step_leaves_no_run_behind``).

Hub, seeds and reports (issue 21, cases 1, 9, 10; ``tests/test_faults_hub.py``):
- a hub tag, ``hf-hub:`` name or ``model.pretrained`` tag with no network or ``HF_HUB_OFFLINE=1`` and nothing
  cached -> one line naming the tag / repo and "no network or hub access: ...", exit 2, before open_clip starts a
  download (``test_hub_tag_with_hf_hub_offline_is_one_line_exit_2``,
  ``test_hub_names_and_tags_without_network_stop_before_any_download``,
  ``test_train_with_a_hub_tag_without_network_is_one_line``); an offline error inside open_clip -> the same error
  (``test_offline_errors_inside_open_clip_become_one_clear_error``).
- a model with untrained layers (``effl0-minilm`` before training, a fresh config) -> seeded: the same command
  gives the same numbers, the caller's RNG untouched, and ``dalip eval`` names the untrained layers in one line
  (``test_untrained_projection_is_seeded_and_named``, ``test_eval_of_an_untrained_model_is_repeatable_and_says_so``).
- ``model.alpha`` chosen at evaluation -> the fusion table marks "(train alpha)" and "(combined)" apart
  (``test_fusion_table_marks_the_training_alpha_and_the_combined_weight_apart``,
  ``tests/test_train.py::test_eval_fusion_curve_from_the_cli``); ``--pretrained local-dir:DIR`` -> the local-dir
  message (``test_pretrained_local_dir_gives_the_local_dir_message``); a checkpoint without ``.sha256`` -> one
  warning line, no Python warning (``test_checkpoint_without_checksum_warns_in_one_line``).

Exports (issue 21, cases 2-4; ``tests/test_faults_export.py``):
- an export moved elsewhere, loaded with no hub access from another directory -> the text tower's config and
  tokenizer come from the folder; dalip loads it, and plain open_clip given ``text_cfg`` with the folder's
  ``text_tower`` gives the same embeddings (open_clip 3.3 resolves ``hf_model_name`` against the working
  directory only, so a call without that argument still needs the hub: an upstream limit)
  (``test_export_loads_offline_after_a_move``).
- ``dalip eval --model local-dir:EXPORT`` -> first, second, combined and fusion scores equal to ``--checkpoint``
  of the run (``test_eval_of_an_export_equals_its_checkpoint``).
- export into a non-empty folder -> one line, exit 2; ``--overwrite`` deletes only the previous export's files
  (``--dalip-only`` leaves no ``open_clip_*``), the written list is exact, every file mode 0644 less umask;
  ``--alpha`` without second-order heads -> refused (``test_export_into_a_non_empty_folder``).

Resume, config errors and interpolate outputs (issue 21, cases 5, 7, 8; ``tests/test_faults_runs.py``):
- ``--resume`` with no run (missing or empty folder) and no ``--config`` -> one line, exit 2, nothing trained
  (``test_resume_without_a_run_or_config_is_refused``, ``test_resume_of_checkpoints_without_their_config_is_refused``);
  with ``--config`` -> "nothing to resume in X: starting the run of C", and the same command later resumes it
  (``test_resume_with_config_and_nothing_to_resume_starts_that_run``).
- a training CSV without its caption column / not UTF-8, ``data.batch_size`` above the training set, an empty
  training folder, a ``model.pretrained`` file that is not a checkpoint (never advising ``weights_only=False``)
  -> one line naming the setting, exit 2, no run folder left (``test_caption_csv_*``,
  ``test_batch_larger_than_the_training_set``, ``test_empty_training_folder``,
  ``test_pretrained_file_that_is_not_a_checkpoint``).
- ``model.second_order=null`` with a loss aligning second-order features -> refused at validation naming
  ``loss.name=clip`` / ``loss.options.alpha=1`` (``test_no_second_order_head_with_a_second_order_loss``).
- ``dalip interpolate`` into a non-empty folder -> refused; ``--overwrite`` deletes only a previous
  interpolation's ``ratio_*`` folders, tables and plot
  (``test_interpolate_refuses_a_used_folder_and_overwrite_removes_only_its_files``).

Labelled folders (issue 21, case 6; ``tests/test_faults_folders.py``):
- a one-class zero-shot folder -> one line, exit 2 in ``dalip eval``; in a training run (``eval.zero_shot`` or a
  folder dataset's ``val``) refused before step 1, naming the key (``test_one_class_folder_is_refused_in_eval``,
  ``test_one_class_zero_shot_entry_is_refused_before_training``,
  ``test_one_class_folder_dataset_val_is_refused_before_training``).
- a class whose images are all unreadable -> named in a one-line warning and left out of num_classes, chance and
  every metric, as if absent (``test_a_class_of_unreadable_files_is_left_out_of_every_metric``).
- a phone JPEG stored sideways (EXIF Orientation 6 / 8) -> decoded upright in the folder, CSV, webdataset,
  eval-stream and zero-shot paths (``test_exif_orientation_*``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dalip.cli import main
from dalip.runs.checkpoint import load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"dalip {command}: error: "), err
    return lines[0]


# ---------------------------------------------------------------- run folders, checkpoints, resume (items 2, 7)
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run: 4 steps, checkpoints at steps 2 and 4 (checkpoint-step2.pt, checkpoint.pt)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--config", TINY, "--output", str(out), "optim.steps=4", "eval.embeddings=[combined]"]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_existing_run_is_refused_unless_resume_or_overwrite(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    (run / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["train", "--config", TINY, "--output", str(run), "optim.steps=2"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert str(run) in line and "--resume" in line and "--overwrite" in line
    assert all((run / name).read_bytes() == data for name, data in before.items())  # nothing touched
    assert not (run / ".lock").exists()
    assert main(["train", "--config", TINY, "--output", str(run), "--overwrite", "optim.steps=2",
                 "eval.embeddings=[combined]"]) == 0
    assert _steps(run) == [1, 2] and load_training_checkpoint(run / "checkpoint.pt")["step"] == 2
    assert not (run / "checkpoint-step4.pt").exists() and (run / "notes.txt").read_text() == "mine"


_HOLDER = """
import sys, time
from dalip.runs.folder import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_second_writer_is_refused_and_stale_lock_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--config", TINY, "--output", str(run), "optim.steps=1"]) == 2
        line = _one_error_line(capsys.readouterr().err, "train")
        assert f"pid {holder.pid}" in line and ".lock" in line
        assert not (run / "metrics.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / ".lock").is_file()  # left behind by the killed writer
    with pytest.warns(RuntimeWarning, match="stale lock"):
        assert main(["train", "--config", TINY, "--output", str(run), "optim.steps=1",
                     "data.spec.eval_subsets=[]"]) == 0
    assert _steps(run) == [1] and not (run / ".lock").exists()


@pytest.mark.parametrize("damage", ["bit flip", "truncation"])
def test_corrupt_newest_checkpoint(finished_run, tmp_path, capsys, damage):
    run = _copy(finished_run, tmp_path)
    newest = run / "checkpoint.pt"
    data = bytearray(newest.read_bytes())
    if damage == "bit flip":
        data[len(data) // 2] ^= 0x01  # inside a tensor: torch.load alone would not notice
    else:
        data = data[: len(data) // 3]
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(newest)]) == 2
    line = _one_error_line(capsys.readouterr().err, "eval")
    assert "corrupt" in line and "checkpoint-step2.pt" in line
    with pytest.warns(RuntimeWarning, match="checkpoint.pt is corrupt"):
        assert main(["train", "--output", str(run), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert _steps(run) == [1, 2, 3, 4]
    assert (run / "checkpoint.pt.corrupt").is_file()  # kept for inspection
    assert load_training_checkpoint(run / "checkpoint.pt")["step"] == 4


def test_eval_never_replaces_the_runs_results(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    own = (run / "eval.json").read_bytes()
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "eval.embeddings=[first]"]) == 0
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "eval.embeddings=[first]"]) == 0
    assert (run / "eval.json").read_bytes() == own
    assert set(json.loads((run / "eval-2.json").read_text())) == {"first"} and (run / "eval-3.json").is_file()
    assert "eval-3.json" in capsys.readouterr().out


def test_resume_refuses_settings_that_change_the_run(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path)
    saved = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--config", TINY, "--output", str(run), "--resume", "data.batch_size=8",
                 "optim.steps=4"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "data.batch_size: 16 -> 8" in line and "optim.steps" not in line
    assert main(["train", "--output", str(run), "--resume", "model.alpha=0.25"]) == 2
    assert "model.alpha: 0.5 -> 0.25" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == saved
    assert main(["train", "--output", str(run), "--resume", "optim.steps=5", "run.log_every=2"]) == 0
    out = capsys.readouterr().out
    assert "optim.steps: 4 -> 5" in out and "run.log_every: 1 -> 2" in out
    assert _steps(run) == [1, 2, 3, 4, 5] and "steps: 5" in (run / "config.yaml").read_text()


# ---------------------------------------------------------------- pretrained weights (item 4)
def test_pretrained_of_another_architecture_is_refused(tmp_path, capsys):
    import torch

    from dalip import create_model

    other = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
             "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path / "vit.pt"
    torch.save(create_model(other, second_order=None).clip.state_dict(), path)  # a ViT + built-in text tower
    assert main(["train", "--config", TINY, "--output", str(tmp_path / "a"), f"model.pretrained={path}",
                 "optim.steps=1"]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "model.pretrained" in line and "does not fit" in line and "missing (e.g. ['visual.trunk" in line
    assert "unexpected (e.g. ['" in line and "pretrained_strict" in line
    assert main(["train", "--config", TINY, "--output", str(tmp_path / "b"), f"model.pretrained={path}",
                 "model.pretrained_strict=false", "optim.steps=1", "data.spec.eval_subsets=[]"]) == 0
    out = capsys.readouterr().out
    assert f"weights: file {path}" in out and "missing keys ['visual.trunk" in out  # the load report, printed


# ---------------------------------------------------------------- unreadable data (item 6)
def test_unreadable_batches(tmp_path):
    """A batch without a readable sample is skipped and counted; an all-bad dataset stops with a clear error."""
    import torch

    from dalip.data import collate
    from dalip.train.batches import MAX_BAD_BATCHES, TrainBatches, epoch_order
    from dalip.train.distributed import DistInfo

    class Samples(torch.utils.data.Dataset):  # only indices 0 and 11 are readable
        def __len__(self):
            return 12

        def __getitem__(self, index):
            return (torch.zeros(3, 8, 8), f"caption {index}") if index in (0, 11) else None

    batch = next(TrainBatches(Samples(), collate, 2, 0, 0, DistInfo(0, 0, 1, torch.device("cpu"))))
    order = epoch_order(12, 0, 0, 0, 1)  # the run's order; unreadable indices are replaced by the next ones
    last = max(order.index(0), order.index(11))
    assert sorted(batch.texts) == ["caption 0", "caption 11"] and batch.skipped == last + 1 - 2 > 0  # counted

    rows = "filepath,title\n" + "".join(f"gone{i}.png,caption {i}\n" for i in range(16))
    (tmp_path / "bad.csv").write_text(rows)
    done = subprocess.run(
        [sys.executable, "-m", "dalip.cli", "train", "--config", TINY, "--output", str(tmp_path / "run"),
         f"data.spec={{dataset: csv, train: {tmp_path / 'bad.csv'}, csv_separator: ',', image_size: 64}}",
         "data.batch_size=8"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("dalip train: error: ")]  # beside logs, tqdm
    assert line.startswith(f"dalip train: error: data: no readable sample in {MAX_BAD_BATCHES * 8} consecutive "
                           "samples") and "first bad files: " in line and "gone" in line
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- shards, atomic writes, extras (items 9-11)
def test_truncated_webdataset_shard(tmp_path, caplog, monkeypatch):
    """A shard cut off mid-member: the samples before the cut are read, the cut is reported and counted once."""
    import io

    import dalip.data.batch

    monkeypatch.setattr(dalip.data.batch, "_logged", 0)  # the log is rate-limited per process: start afresh
    import tarfile

    from PIL import Image

    from dalip.data import WebDatasetShards

    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as tar:
        for k in range(4):
            jpeg = io.BytesIO()
            Image.new("RGB", (8, 8), (40 * k, 0, 0)).save(jpeg, format="JPEG")
            for name, data in ((f"k{k}.jpg", jpeg.getvalue()), (f"k{k}.txt", f"caption {k}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(whole) as tar:
        middle = tar.getmember("k2.jpg").offset_data + 10  # inside the third sample's image
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:middle])
    samples = list(WebDatasetShards(str(cut), shuffle_buffer=0, shuffle_shards=False))
    texts = [s[1] for s in samples if s is not None]
    assert texts[:2] == ["caption 0", "caption 1"] and "caption 3" not in texts
    assert samples[-1] is None  # the cut: one bad sample for collate to count
    assert any("unreadable shard" in r.getMessage() and "cut.tar" in r.getMessage() for r in caplog.records)


def test_failed_write_keeps_the_previous_file(tmp_path):
    """An error (or a kill) while writing results, a config or a checkpoint leaves the old file whole."""
    from dalip.eval import save_results
    from dalip.io import atomic_write

    path = save_results({"first": {"top1": 0.5}}, tmp_path / "eval.json")

    def broken(f):
        f.write(b'{"half": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"first": {"top1": 0.5}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no temporary file left behind
    with pytest.raises(TypeError):  # not JSON-serialisable: refused before the file is touched
        save_results({"x": object()}, path)
    assert json.loads(path.read_text()) == {"first": {"top1": 0.5}}


def test_checkpoint_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
    """Too little free disk: a clear ENOSPC error up front, the earlier checkpoint whole, no partial file."""
    import errno
    from collections import namedtuple

    import torch

    from dalip.runs import checkpoint as ckpt

    state = {"model": {"w": torch.zeros(1000, 1000)}, "optimizer": {"state": [torch.zeros(1000)]}, "step": 1}
    ckpt.save_training_checkpoint(state, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 3_000_000))
    with pytest.raises(OSError, match=r"needs about 4\.8 MiB and 2\.9 MiB is free") as err:
        ckpt.save_training_checkpoint({**state, "step": 2}, tmp_path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert ckpt.load_training_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1
    monkeypatch.setattr(ckpt.shutil, "disk_usage", shutil.disk_usage)
    assert ckpt._tensor_bytes(state) == 4_004_000  # what the check compares with the free space


# ---------------------------------------------------------------- divergence and bad input (items 1, 3, 5, 8)
def _last_error_line(err: str, command: str) -> str:
    """The error line of a run that printed progress bars before it: the last line, and the only error."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith(f"dalip {command}: error: ") and sum("error:" in line for line in lines) == 1, err
    return lines[-1]


def _nan_loss_from_call(monkeypatch, first_bad_call: int) -> None:
    """The recipe's loss returns NaN from its ``first_bad_call``-th call on (one call per step here)."""
    from dalip.train import loop

    build = loop.build_loss
    calls = {"n": 0}

    def build_nan_loss(config):
        loss_fn = build(config)

        def wrapped(*a, **k):
            calls["n"] += 1
            loss, parts = loss_fn(*a, **k)
            return (loss * float("nan"), parts) if calls["n"] >= first_bad_call else (loss, parts)

        return wrapped

    monkeypatch.setattr(loop, "build_loss", build_nan_loss)


def test_nan_loss_stops_the_run(tmp_path, capsys, monkeypatch):
    _nan_loss_from_call(monkeypatch, 3)
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, "--output", str(out), "run.log_every=2", "run.checkpoint_every=2"]) == 2
    line = _last_error_line(capsys.readouterr().err, "train")
    assert "non-finite loss at step 3" in line
    state = load_training_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2 and all(t.isfinite().all() for t in state["model"].values() if t.is_floating_point())
    assert not (out / "eval.json").exists() and not list(out.glob("checkpoint-step*.pt"))


def test_nan_weights_are_never_saved(tmp_path, monkeypatch):
    import torch

    from dalip.errors import NonFiniteLossError
    from dalip.runs import load_config
    from dalip.train import loop, train

    step = loop.train_step
    calls = {"n": 0}

    def poisoned_step(net, model, *args, **kwargs):
        stats = step(net, model, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # after the (finite) loss of step 4: the weights go bad
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
        return stats

    monkeypatch.setattr(loop, "train_step", poisoned_step)
    with pytest.raises(NonFiniteLossError, match="non-finite weights after step 4"):
        train(load_config(TINY, ["run.log_every=4", "run.checkpoint_every=2"]), tmp_path)
    assert load_training_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_eval_refuses_a_diverged_model(finished_run, tmp_path, capsys):
    import torch

    from dalip.runs.checkpoint import atomic_save

    run = _copy(finished_run, tmp_path)
    state = load_training_checkpoint(run / "checkpoint.pt")
    key = next(k for k, v in state["model"].items() if k.startswith("second_heads.image") and v.is_floating_point())
    state["model"][key] = torch.full_like(state["model"][key], float("nan"))
    atomic_save(state, run / "nan.pt")
    assert main(["eval", "--checkpoint", str(run / "nan.pt"), "--output", str(tmp_path / "nan.json")]) == 2
    line = _last_error_line(capsys.readouterr().err, "eval")
    assert "eval set" in line and "'combined' image embedding has NaN/Inf" in line
    assert not (tmp_path / "nan.json").exists()


@pytest.mark.parametrize("override", [
    "optim.lr=.nan", "optim.lr=-1e-3", "optim.betas=[0.9, 1.5]", "data.spec.image_size=-1", "eval.batch_size=0",
    "model.second_order=isqrt_cov", "loss.options={margin: 1}", "eval.embeddings=[second]",
])
def test_bad_configs_fail_before_any_model(tmp_path, capsys, monkeypatch, override):
    from dalip.train import loop

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(loop, "build_model", no_model)
    extra = ["model.second_order=null"] if override == "eval.embeddings=[second]" else []
    assert main(["train", "--config", "quickstart", "--output", str(tmp_path / "run"), override, *extra]) == 2
    _one_error_line(capsys.readouterr().err, "train")
    assert not (tmp_path / "run").exists()


def test_every_command_ends_bad_input_with_one_line(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    missing = str(tmp_path / "missing.pt")
    cases = {
        "train": [["--config", TINY, "--output", str(a_file)], ["--config", str(tmp_path / "no.yaml"), "--output", str(tmp_path / "t")]],
        "eval": [["--checkpoint", missing, "--output", str(tmp_path)], ["--checkpoint", missing]],
        "sweep": [["--sweep", missing, "--output", str(a_file)], ["--sweep", missing, "--output", str(tmp_path / "s")],
                  ["--sweep", missing, "--output", str(tmp_path / "s"), "--seeds", "-1"]],
        "interpolate": [["--start", "init", "--end", missing, "--output", str(a_file / "sub")],
                        ["--start", "init", "--end", missing, "--output", str(tmp_path / "i"), "--ratios", "nan"]],
        "adapt": [["--output", str(a_file)], ["--output", str(tmp_path / "a"), "--seeds", "-1"],
                  ["--output", str(tmp_path / "a"), "--views", "0"], ["--output", str(tmp_path / "a"), "--checkpoint", missing,
                                                                       "--config", TINY]],
        "export": [["--checkpoint", missing, "--output", str(a_file)], ["--checkpoint", missing, "--output", str(tmp_path / "e")]],
        "demo": [["--poolers", "nope"], ["--image-size", "0"]],
    }
    for command, argument_lists in cases.items():
        for arguments in argument_lists:
            assert main([command, *arguments]) == 2, (command, arguments)
            _one_error_line(capsys.readouterr().err, command)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing was created


@pytest.mark.parametrize("existed", [False, True])
def test_a_failure_before_the_first_step_leaves_no_run_behind(tmp_path, monkeypatch, capsys, existed):
    """Anything failing between claiming the folder and the first step (data, model, cache) leaves the folder as it
    was, so the same command can simply be run again (issue 21)."""
    from dalip.train import loop

    run = tmp_path / "run"
    if existed:
        run.mkdir()
        (run / "notes.txt").write_text("mine")

    from dalip.errors import ConfigError

    def broken_data(*args, **kwargs):
        raise ConfigError("data: the training CSV has no column 'title'")

    monkeypatch.setattr(loop, "build_data", broken_data)
    assert main(["train", "--config", TINY, "--output", str(run), "optim.steps=1"]) == 2
    captured = capsys.readouterr()
    assert "no column 'title'" in captured.err and "left as it was" in captured.out
    assert (sorted(p.name for p in run.iterdir()) == ["notes.txt"]) if existed else not run.exists()
    monkeypatch.undo()
    assert main(["train", "--config", TINY, "--output", str(run), "optim.steps=1", "eval.embeddings=[first]",
                 "data.spec.eval_subsets=[domain]"]) == 0
