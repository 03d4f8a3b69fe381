"""The training recipe end to end on a tiny model: run, resume, faults, eval, torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dalip.cli import main
from dalip.runs.checkpoint import atomic_save, load_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def dalip_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dalip.cli", *args]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    """One uninterrupted tiny run (8 steps), the reference for the other tests."""
    out = tmp_path_factory.mktemp("straight")
    assert main(["train", "--config", TINY, "--output", str(out)]) == 0
    return out


def test_run_writes_every_output(straight_run):
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "eval.json", "training.png"):
        assert (straight_run / name).is_file(), name
    results = json.loads((straight_run / "eval.json").read_text())
    assert set(results) == {"first", "second", "combined"}
    domain = results["combined"]["twemoji-domain"]
    assert domain["subcategories/num_classes"] == 9 and domain["num_samples"] > 0
    assert 0 <= domain["subcategories/top1"] <= 1 and "subcategories/chance_top1" in domain
    state = load_training_checkpoint(straight_run / "checkpoint.pt")
    assert state["step"] == 8 and state["config"]["optim"]["steps"] == 8
    assert sorted(losses(straight_run)) == list(range(1, 9))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(straight_run).values())


def test_stop_and_resume_gives_the_same_losses(straight_run, tmp_path):
    from dalip.runs import load_config
    from dalip.train import train

    config = load_config(TINY)
    train(config, tmp_path, stop_after=3)  # checkpoint at step 3, then "the job ends"
    assert load_training_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert not (tmp_path / "eval.json").exists()
    train(config, tmp_path, resume=True)
    reference, resumed = losses(straight_run), losses(tmp_path)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(1, 9):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_sigkill_mid_run_then_resume(straight_run, tmp_path):
    """Kill -9 in the middle; the last checkpoint is intact and the run reaches the end."""
    proc = subprocess.Popen(
        dalip_cmd("train", "--config", TINY, "--output", str(tmp_path), "optim.steps=40", "run.checkpoint_every=2"),
        cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        metrics = tmp_path / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = load_training_checkpoint(tmp_path / "checkpoint.pt")  # intact, loadable
    assert 2 <= state["step"] < 40
    assert not list(tmp_path.glob(".checkpoint.pt.tmp-*")) or True  # a torn temp file may remain; it is ignored
    done = subprocess.run(dalip_cmd("train", "--output", str(tmp_path), "--resume"), cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout
    assert sorted(losses(tmp_path)) == list(range(1, 41))
    assert load_training_checkpoint(tmp_path / "checkpoint.pt")["step"] == 40
    assert (tmp_path / "eval.json").is_file()


_WRITER = """
import sys, torch
from dalip.runs.checkpoint import atomic_save
big = torch.ones(64 * 1024 * 1024 // 4)  # 64 MB per save
i = 1
while True:
    atomic_save({"model": {"w": big * i}, "step": i}, sys.argv[1])
    i += 1
"""


def test_kill_while_writing_never_corrupts_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoint.pt"
    atomic_save({"model": {"w": torch.zeros(1)}, "step": 0}, target)
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=ROOT, env=ENV)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        state = load_training_checkpoint(target)
        step = state["step"]
        assert torch.all(state["model"]["w"] == step)  # a whole checkpoint, never a torn one


def test_dalip_eval_reproduces_the_final_evaluation(straight_run, tmp_path):
    out = tmp_path / "again.json"
    assert main(["eval", "--checkpoint", str(straight_run / "checkpoint.pt"), "--output", str(out)]) == 0
    first, again = json.loads((straight_run / "eval.json").read_text()), json.loads(out.read_text())
    assert again.keys() == first.keys()
    for emb in first:
        for subset, metrics in first[emb].items():
            for key, value in metrics.items():
                assert again[emb][subset][key] == pytest.approx(value, abs=1e-6), (emb, subset, key)


def test_cli_reports_config_errors(tmp_path, capsys):
    assert main(["train", "--config", TINY, "--output", str(tmp_path), "optim.stepz=3"]) == 2
    assert "unknown config key 'optim.stepz'" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt")]) == 2


@pytest.mark.parametrize("nproc", [1, 2])
def test_torchrun_on_cpu(tmp_path, nproc):
    """The GPU command path (torchrun + DDP + feature gathering), on CPU with gloo."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    result = subprocess.run(
        [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "dalip.cli", "train", "--config", TINY,
         "--output", str(tmp_path), "optim.steps=3", "data.batch_size=8"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(losses(tmp_path)) == [1, 2, 3] and (tmp_path / "eval.json").is_file()


def test_locked_towers_keep_pretrained_features_and_stay_in_eval_mode():
    """Locking must not change what a pretrained tower computes (BatchNormAct, dropout)."""
    from dalip.runs import load_config
    from dalip.runs.model import build_model
    from dalip.train.builders import set_train_mode

    images = torch.rand(4, 3, 128, 128)
    reference = build_model(load_config("quickstart", ["model.lock_image=false", "model.lock_text=false"])).eval()
    config = load_config("quickstart")
    locked = build_model(config)
    locked.load_state_dict(reference.state_dict())
    set_train_mode(locked, config)
    assert not locked.clip.visual.training and not locked.clip.text.training and locked.second_heads.training
    assert not any(p.requires_grad for p in locked.clip.visual.trunk.parameters())
    with torch.no_grad():
        torch.testing.assert_close(locked.clip.visual(images), reference.clip.visual(images), rtol=1e-4, atol=1e-4)


def test_partly_unlocked_towers_train_their_last_layers_and_keep_locked_statistics():
    """The study's regime: the last EfficientNet blocks and MiniLM layers learn; locked BatchNorms keep
    the pretrained running statistics in train mode; BERT's partial unlocking (open_clip lacks it) works."""
    from dalip.runs import load_config
    from dalip.runs.model import build_model
    from dalip.train.builders import set_train_mode

    config = load_config("quickstart", ["model.unlocked_image_groups=3", "model.unlocked_text_layers=2"])
    model = build_model(config)
    set_train_mode(model, config)
    text = {n.split(".")[2] for n, p in model.clip.text.transformer.named_parameters()
            if p.requires_grad and n.startswith("encoder.layer.")}
    assert text == {"4", "5"}  # the last 2 of 6 layers
    assert not any(p.requires_grad for p in model.clip.text.transformer.embeddings.parameters())
    trunk = model.clip.visual.trunk
    learning = {".".join(n.split(".")[:3]) for n, p in trunk.named_parameters() if p.requires_grad}
    assert {"blocks.6.0", "conv_head.weight"} <= learning and not any(n.startswith("blocks.0") for n in learning)
    before = {n: b.clone() for n, b in trunk.named_buffers() if n.endswith("running_mean")}
    model.clip.visual(torch.rand(4, 3, 128, 128))  # a train-mode forward
    moved = {n for n, b in trunk.named_buffers() if n in before and not torch.equal(b, before[n])}
    assert moved and all(".".join(n.split(".")[:3]) in learning or n.startswith("bn2") for n in moved)
    assert not any(n.startswith(("blocks.0", "blocks.3", "bn1")) for n in moved)  # locked: pretrained statistics


def test_bf16_autocast_on_cpu_and_csv_evaluation(tmp_path):
    """run.precision=bf16 trains (autocast on CPU), and a CSV image-caption file is evaluated."""
    from PIL import Image

    from dalip.data import twemoji_index

    rows = []
    for i, record in enumerate(twemoji_index()[:12]):
        path = tmp_path / f"img{i}.png"
        Image.open(record.path).convert("RGBA").convert("RGB").save(path)
        rows.append(f"{path.name}\tan emoji of a {record.name}")
    csv = tmp_path / "val.csv"
    csv.write_text("filepath\ttitle\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert main(["train", "--config", TINY, "--output", str(out), "optim.steps=2", "run.precision=bf16",
                 f"data.spec.val={csv}"]) == 0
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(out).values())
    results = json.loads((out / "eval.json").read_text())
    assert results["combined"]["val"]["num_samples"] == 12 and "image_to_text_R@1" in results["combined"]["val"]
    # dalip eval on another CSV through overrides
    again = tmp_path / "again.json"
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--output", str(again),
                 f"data.spec.val={csv}", "data.spec.eval_subsets=[]"]) == 0
    assert set(json.loads(again.read_text())["first"]) == {"val"}


def _indexed(items):
    """A collate for `_Noisy` / `_Counted` samples: the batch as a small dataclass of lists."""
    from dalip.data.batch import Batch

    good = [i for i in items if i is not None]
    return Batch(torch.tensor([float(i) for i, _ in good]), [round(r, 6) for _, r in good], len(items) - len(good))


def _take(batches, n):
    return [(b.images.long().tolist(), b.texts, b.skipped) for b in (next(batches) for _ in range(n))]


def test_train_batches_resume_at_any_batch_for_maps_and_streams():
    from torch.utils.data import IterableDataset

    from dalip.train.batches import TrainBatches
    from dalip.train.distributed import DistInfo

    class Stream(IterableDataset):
        def __iter__(self):
            return iter([(i, 0.0) for i in range(10)])

    dist = DistInfo(0, 0, 1, torch.device("cpu"))
    for dataset in (_Noisy(), Stream()):
        straight = TrainBatches(dataset, _indexed, batch_size=3, workers=0, seed=1, dist=dist)
        sequence, states = [], []
        for _ in range(9):  # crosses epochs
            sequence += _take(straight, 1)
            states.append(straight.state_dict())
        for k in (0, 2, 4, 7):
            resumed = TrainBatches(dataset, _indexed, batch_size=3, workers=0, seed=1, dist=dist)
            resumed.load_state_dict(states[k])
            assert _take(resumed, 8 - k) == sequence[k + 1 :]
        assert sequence[0][0] != sequence[3][0] or isinstance(dataset, Stream)  # map-style epochs reshuffle


class _Noisy(torch.utils.data.Dataset):
    """Index plus a random draw: shows which RNG seed each sample was loaded under; index ``bad`` is unreadable."""

    def __init__(self, bad: int | None = 4):
        self.bad = bad

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return None if index == self.bad else (index, float(torch.rand(())))


def test_map_style_batches_replace_unreadable_samples_from_the_ranks_order():
    from dalip.train.batches import TrainBatches, epoch_order
    from dalip.train.distributed import DistInfo

    runs = {}
    for workers in (0, 2):  # one loader for the whole run: workers prefetch across epoch boundaries
        batches = TrainBatches(_Noisy(), _indexed, batch_size=3, workers=workers, seed=1,
                               dist=DistInfo(0, 0, 1, torch.device("cpu")))
        runs[workers] = _take(batches, 7)
    assert runs[0] == runs[2]
    order = [i for epoch in range(4) for i in epoch_order(10, 1, epoch, 0, 1)[:9]]  # 3 whole batches per epoch
    readable = [i for i in order if i != 4]  # the unreadable index is replaced by the next one of the order
    assert [i for indices, _, _ in runs[0] for i in indices] == readable[:21]
    assert all(len(indices) == 3 for indices, _, _ in runs[0])
    used = [k for k, i in enumerate(order) if i != 4][20] + 1  # keys of the order consumed by 21 readable samples
    assert sum(skipped for _, _, skipped in runs[0]) == order[:used].count(4) > 0
    draws = [r for _, texts, _ in runs[0] for r in texts]
    assert len(set(draws)) == len(draws)  # every (epoch, index) has its own seed
    shares = [  # two ranks: disjoint shares of an epoch (2 batches of 2 each)
        {i for indices, _, _ in _take(TrainBatches(_Noisy(bad=None), _indexed, batch_size=2, workers=0, seed=1,
                                                   dist=DistInfo(rank, rank, 2, torch.device("cpu"))), 2)
         for i in indices}
        for rank in (0, 1)
    ]
    assert len(shares[0]) == len(shares[1]) == 4 and not shares[0] & shares[1]


def test_gradient_checkpointing_option_trains(tmp_path):
    assert main(["train", "--config", TINY, "--output", str(tmp_path), "optim.steps=2",
                 "model.grad_checkpointing=true", "eval.embeddings=[combined]"]) == 0
    assert sorted(losses(tmp_path)) == [1, 2]


def test_periodic_evaluation_and_runs_without_eval_sets(tmp_path, capsys):
    periodic = tmp_path / "periodic"
    assert main(["train", "--config", TINY, "--output", str(periodic), "optim.steps=4", "eval.every=2",
                 "eval.embeddings=[combined]"]) == 0
    assert sorted(p.name for p in periodic.glob("eval*.json")) == ["eval.json", "eval_step2.json"]
    assert "combined" in json.loads((periodic / "eval_step2.json").read_text())
    none = tmp_path / "none"
    assert main(["train", "--config", TINY, "--output", str(none), "optim.steps=2", "data.spec.eval_subsets=[]"]) == 0
    assert "evaluation skipped" in capsys.readouterr().out
    assert not (none / "eval.json").exists() and (none / "checkpoint.pt").is_file()


def test_shipped_gpu_config_trains_on_cpu_at_smoke_size(tmp_path, monkeypatch):
    """`vitb16-gpu` (ViT-B/16, mbdc_paper on both towers) is valid and its command path runs.

    Its checkpoint (weights + AdamW state, 2.3 GB) is handed over but not written: the
    writer is tested on small models; a suite that writes gigabytes fails on small disks.
    """
    from dalip.train import loop

    saved = []
    monkeypatch.setattr(loop, "save_training_checkpoint", lambda state, folder, keep: saved.append(state))
    assert main(["train", "--config", "vitb16-gpu", "--output", str(tmp_path), "data.batch_size=2", "data.workers=0",
                 "optim.steps=1", "optim.warmup_steps=0", "run.precision=fp32", "data.spec.eval_subsets=[]"]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1 and row["images_per_s"] > 0 and math.isfinite(row["loss"])
    (state,) = saved
    assert state["step"] == 1 and state["config"]["model"]["name"] == "ViT-B-16"
    trained = [v for v in state["optimizer"]["state"].values() if "exp_avg" in v]
    assert len(trained) == len(state["optimizer"]["state"]) > 100  # every trained tensor has its AdamW moments


def test_channels_last_model_computes_the_same_embeddings():
    """`model.channels_last` (on in the quickstart) stores conv weights NHWC; the embeddings do not change."""
    from dalip.runs import load_config
    from dalip.runs.model import build_model

    models = {}
    for flag in (False, True):
        torch.manual_seed(0)
        models[flag] = build_model(load_config(TINY, [f"model.channels_last={str(flag).lower()}"])).eval()
    convs = [p for p in models[True].parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    # (1x1 and depthwise weights are both at once; the 3x3 ones are not, by default)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in models[False].parameters() if p.ndim == 4)
    images = torch.randn(4, 3, 64, 64)  # plain NCHW input: the first convolution takes it as it is
    with torch.no_grad():
        ref, nhwc = (models[f].encode_image(images, embedding="combined") for f in (False, True))
    torch.testing.assert_close(nhwc, ref, rtol=1e-4, atol=1e-5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_srun_tasks_join_one_process_group_on_cpu(tmp_path):
    """``srun -n 2 dalip train``: SLURM's variables (no torchrun ones) make two ranks of one gloo group."""
    clean = {k: v for k, v in ENV.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE") and not k.startswith("SLURM_")}
    port = _free_port()
    procs = [
        subprocess.Popen(
            dalip_cmd("train", "--config", TINY, "--output", str(tmp_path), "optim.steps=2", "data.batch_size=8",
                      "eval.embeddings=[combined]"),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**clean, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2",
                 "SLURM_JOB_ID": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert sorted(losses(tmp_path)) == [1, 2] and (tmp_path / "eval.json").is_file()
    assert "evaluation written" in outputs[0][0] and "evaluation written" not in outputs[1][0]  # rank 1 is not main


def test_slurm_rendezvous_and_ranks(monkeypatch):
    from dalip.train.distributed import init_distributed, slurm_rendezvous

    assert slurm_rendezvous({"SLURM_JOB_NODELIST": "gpu[03-05,09],cpu1", "SLURM_JOB_ID": "123456"}) == "tcp://gpu03:23456"
    assert slurm_rendezvous({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "2950", "SLURM_JOB_NODELIST": "n1"}) == \
        "tcp://10.0.0.1:2950"
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        slurm_rendezvous({"SLURM_JOB_ID": "1"})
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task (e.g. sbatch without srun): no process group
    info = init_distributed()
    assert (info.rank, info.world_size) == (0, 1) and not torch.distributed.is_initialized()


def test_wandb_logger_offline(tmp_path, monkeypatch):
    """``run.wandb=true`` logs every metrics row to a W&B run in the run folder (offline mode, no network)."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert main(["train", "--config", TINY, "--output", str(run), "optim.steps=2", "run.wandb=true",
                 "run.wandb_project=dalip-test", "data.spec.eval_subsets=[]"]) == 0
    run_id = (run / "wandb" / "dalip_run_id").read_text().strip()
    (offline,) = (run / "wandb").glob(f"offline-run-*-{run_id}")
    assert list(offline.glob("*.wandb"))  # the logged history, synced later with `wandb sync`


def test_wandb_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError, installed or not
    from dalip.train.metrics_log import MetricsLog

    with pytest.raises(ImportError, match=r"pip install 'dalip\[wandb\]'"):
        MetricsLog(tmp_path, [], tensorboard=False, wandb={"project": "p", "name": None, "config": {}})


def test_the_last_k_checkpoints_are_kept_with_checksums(tmp_path):
    import hashlib

    from dalip.errors import ConfigError
    from dalip.runs.checkpoint import list_checkpoints, save_training_checkpoint
    from dalip.runs.config import load_config

    for step in range(1, 6):
        save_training_checkpoint({"model": {"w": torch.full((3,), float(step))}, "step": step}, tmp_path, keep=3)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint.pt", "checkpoint-step4.pt", "checkpoint-step3.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for p in list_checkpoints(tmp_path) for n in (p.name, p.name + ".sha256"))
    for path, step in zip(list_checkpoints(tmp_path), (5, 4, 3)):
        digest, name = (path.with_name(path.name + ".sha256")).read_text().split()
        assert name == path.name and digest == hashlib.sha256(path.read_bytes()).hexdigest()  # `sha256sum -c` format
        assert load_training_checkpoint(path)["step"] == step
    save_training_checkpoint({"model": {}, "step": 6}, tmp_path, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint.pt"]
    with pytest.raises(ConfigError, match="run.keep_checkpoints must be >= 1"):
        load_config(TINY, ["run.keep_checkpoints=0"])


def test_interpolate_refuses_unknown_sets_before_evaluating(straight_run, tmp_path, capsys):
    out = tmp_path / "interp"
    code = main(["interpolate", "--start", "init", "--end", str(straight_run / "checkpoint.pt"),
                 "--domain", "leaves", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "'leaves'" in err and "twemoji-domain" in err  # names the run's sets
    assert not (out / "ratio_0").exists()  # nothing was evaluated


def test_eval_fusion_curve_from_the_cli(straight_run, tmp_path, capsys):
    out = tmp_path / "fusion.json"
    checkpoint = str(straight_run / "checkpoint.pt")
    assert main(["eval", "--checkpoint", checkpoint, "--output", str(out), "--fusion", "0", "0.25", "0.5", "1"]) == 0
    results = json.loads(out.read_text())
    assert [k for k in results if k.startswith("fusion@")] == ["fusion@0", "fusion@0.25", "fusion@0.5", "fusion@1"]
    assert results["fusion@1"] == results["first"] and results["fusion@0"] == results["second"]
    assert results["fusion@0.5"] == results["combined"]  # the tiny run's training alpha
    assert (tmp_path / "fusion_fusion.png").stat().st_size > 1000
    assert "| 0.5 (train alpha) |" in capsys.readouterr().out
    chosen = tmp_path / "chosen.json"  # a weight picked off the curve becomes the combined embedding
    assert main(["eval", "--checkpoint", checkpoint, "--output", str(chosen), "model.alpha=0.25"]) == 0
    assert json.loads(chosen.read_text())["combined"] == results["fusion@0.25"]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", checkpoint, "--output", str(tmp_path / "at08.json"), "model.alpha=0.8",
                 "--fusion", "0.5", "0.8"]) == 0  # issue 21, case 10: the run trained at 0.5, not 0.8
    table = capsys.readouterr().out
    assert "| 0.5 (train alpha) |" in table and "| 0.8 (combined) |" in table
    assert main(["eval", "--checkpoint", checkpoint, "--output", str(out), "--fusion", "2"]) == 2
    assert "eval.fusion: fusion weights must be numbers in [0, 1], got 2.0" in capsys.readouterr().err
    assert main(["eval", "--model", "x", "--zero-shot", "d", "--output", str(out), "--fusion", "0.5"]) == 2
    assert "--fusion apply to --checkpoint runs only" in capsys.readouterr().err


def test_learnable_alpha_is_trained_logged_and_restored(tmp_path):
    from dalip.runs.load import load_run

    assert main(["train", "--config", TINY, "--output", str(tmp_path), "optim.steps=3", "model.alpha_learnable=true",
                 "eval.fusion=[0, 1]"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    alphas = [r["alpha"] for r in rows]
    assert len(alphas) == 3 and all(0 < a < 1 for a in alphas) and alphas[-1] != 0.5  # it moved
    model, _ = load_run(tmp_path / "checkpoint.pt")
    assert model.alpha == pytest.approx(alphas[-1], abs=1e-6)
    results = json.loads((tmp_path / "eval.json").read_text())
    assert {"fusion@0", "fusion@1", "combined"} <= set(results)
    assert (tmp_path / "eval_fusion.png").is_file()
    # a chosen weight replaces the learned one at evaluation (also with the learning switched off)
    for extra in ([], ["model.alpha_learnable=false"]):
        chosen, _ = load_run(tmp_path / "checkpoint.pt", ["model.alpha=0.25", *extra])
        assert chosen.alpha == pytest.approx(0.25)
    fixed, _ = load_run(tmp_path / "checkpoint.pt", ["model.alpha_learnable=false"])
    assert fixed.alpha_logit is None and fixed.alpha == pytest.approx(alphas[-1], abs=1e-6)  # the learned one, fixed


def test_eval_results_reach_tensorboard_and_wandb_at_every_eval(tmp_path, monkeypatch):
    """``eval.every`` and the final evaluation log their metrics (``eval/<embedding>/<set>/<metric>``) to the loggers."""
    from dalip.train.metrics_log import MetricsLog, eval_scalars

    class Writer:  # TensorBoard's SummaryWriter interface
        def __init__(self):
            self.scalars = []

        def add_scalar(self, key, value, step):
            self.scalars.append((key, value, step))

        def close(self):
            pass

    writers = []

    def open_log(self, *args, **kwargs):
        MetricsLog.__init__.__wrapped__(self, *args, **kwargs)
        self.writer = Writer()
        writers.append(self.writer)

    open_log.__wrapped__ = MetricsLog.__init__
    monkeypatch.setattr(MetricsLog, "__init__", open_log)
    run = tmp_path / "run"
    assert main(["train", "--config", TINY, "--output", str(run), "optim.steps=4", "eval.every=2",
                 "eval.embeddings=[first]", "data.spec.eval_subsets=[domain]", "data.batch_size=8"]) == 0
    logged = {(key, step): value for key, value, step in writers[0].scalars if key.startswith("eval/")}
    final = json.loads((run / "eval.json").read_text())
    assert logged[("eval/first/twemoji-domain/concepts/top1", 4)] == final["first"]["twemoji-domain"]["concepts/top1"]
    at_2 = json.loads((run / "eval_step2.json").read_text())
    assert {k: v for (k, s), v in logged.items() if s == 2} == eval_scalars(at_2)
    assert not any("chance" in k or "num_" in k for k, _ in logged)


def test_resume_with_dropout_is_exact(tmp_path):
    """A resumed run draws the same dropout as the uninterrupted one: creating the data loader at the resumed
    step must not consume the global RNG (it has its own generator)."""
    from dalip.runs import load_config
    from dalip.train import train

    config = load_config(TINY, ["optim.steps=4", "run.log_every=1", "run.checkpoint_every=2",
                                "model.second_order=mbdc_paper", "model.second_options={}",  # dropout 0.5
                                "eval.embeddings=[first]", "data.spec.eval_subsets=[domain]", "data.batch_size=8"])
    train(config, tmp_path / "straight")
    train(config, tmp_path / "resumed", stop_after=2)
    train(config, tmp_path / "resumed", resume=True)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
