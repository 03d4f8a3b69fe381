"""Labelled folders that broke zero-shot evaluation (issue 21, case 6), and EXIF orientation in every decode path.

- a one-class zero-shot folder: one line + exit 2 in ``dalip eval`` and before a training run's first step;
- a class whose images are all unreadable: named in a warning and left out of every metric (as if absent);
- a phone photo stored sideways with EXIF ``Orientation`` 6 or 8: decoded upright by every reader.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shapes import make_shapes_folder
from torch.utils.data import DataLoader

import dalip
from dalip.cli import main
from dalip.data import StreamedImages, build_eval_sets, build_train_dataset, collate, create_dataset
from dalip.eval import evaluate_zero_shot, zero_shot_eval_set
from dalip.eval.zero_shot import per_class_recall, topk_accuracy

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")
TINY_TRAIN = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
TEMPLATES = ["a photo of a {}."]
THREE = ["red circle", "green circle", "blue square"]


def _break_class(root: Path, folder: str, count: int = 2) -> None:
    """``root/<folder>/`` with ``count`` files that look like images but do not decode."""
    (root / folder).mkdir(parents=True)
    for i in range(count):
        (root / folder / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]


# ------------------------------------------------------------ one class


def test_one_class_folder_is_refused_in_eval(tmp_path, capsys):
    one = make_shapes_folder(tmp_path / "one", classes=["red circle"], per_class=3)
    out = tmp_path / "out.json"
    assert main(["eval", "--model", TINY, "--zero-shot", str(one), "--output", str(out)]) == 2
    line = _last_error(capsys)
    assert line.startswith("dalip eval: error: ") and "at least two classes" in line and str(one) in line, line
    assert not out.exists()
    with pytest.raises(ValueError, match="at least two classes with a readable image"):
        zero_shot_eval_set(one, templates=TEMPLATES)


def test_two_classes_of_which_one_is_unreadable_are_refused(tmp_path):
    root = make_shapes_folder(tmp_path / "two", classes=["red circle"], per_class=2)
    _break_class(root, "broken")
    with pytest.raises(ValueError, match=r"at least two classes with a readable image.*'red circle'"):
        zero_shot_eval_set(root, templates=TEMPLATES)


def test_one_class_zero_shot_entry_is_refused_before_training(tmp_path, capsys):
    one = make_shapes_folder(tmp_path / "one", classes=["red circle"], per_class=3)
    run = tmp_path / "run"
    assert main(["train", "--config", TINY_TRAIN, "--output", str(run), "optim.steps=2",
                 "data.spec.eval_subsets=[]", "eval.embeddings=[first]", f"eval.zero_shot=[{{path: {one}}}]"]) == 2
    line = _last_error(capsys)
    assert "eval.zero_shot[0]" in line and "at least two classes" in line, line
    assert not (run / "metrics.jsonl").exists() and not list(run.glob("checkpoint*"))  # no step was trained


def test_one_class_folder_dataset_val_is_refused_before_training(tmp_path, capsys):
    one = make_shapes_folder(tmp_path / "one", classes=["red circle"], per_class=4)
    run = tmp_path / "run"
    spec = f"data.spec={{dataset: folder, train: {one}, val: {one}, image_size: 64}}"
    assert main(["train", "--config", TINY_TRAIN, "--output", str(run), "optim.steps=2", "data.batch_size=2",
                 "eval.embeddings=[first]", spec]) == 2
    line = _last_error(capsys)
    assert "data.spec.val" in line and "at least two classes" in line, line
    assert not (run / "metrics.jsonl").exists() and not list(run.glob("checkpoint*"))


def test_one_class_scores_are_a_clear_error_not_a_torchmetrics_one():
    scores, labels = torch.randn(4, 1), torch.zeros(4, dtype=torch.long)
    for metric in (topk_accuracy, per_class_recall):
        with pytest.raises(ValueError, match="at least two classes, got 1"):
            metric(scores, labels)
    assert topk_accuracy(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), [1, 1]) == {"top1": 0.5}


# ------------------------------------------------------------ unreadable classes


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return dalip.create_model(TINY, second_order=None).eval(), dalip.get_tokenizer(TINY)


def test_a_class_of_unreadable_files_is_left_out_of_every_metric(tiny, tmp_path, caplog):
    clean = make_shapes_folder(tmp_path / "clean", classes=THREE, per_class=[3, 2, 3])
    broken = tmp_path / "broken"
    shutil.copytree(clean, broken)
    _break_class(broken, "grey_hexagon", count=3)
    model, tokenizer = tiny
    with caplog.at_level(logging.WARNING, logger="dalip"):
        got = evaluate_zero_shot(model, tokenizer, broken, templates=TEMPLATES, progress=False)["first"]["broken"]
    named = [r.getMessage() for r in caplog.records if "grey hexagon" in r.getMessage()]
    assert len(named) == 1 and "\n" not in named[0], caplog.text
    want = evaluate_zero_shot(model, tokenizer, clean, templates=TEMPLATES, progress=False)["first"]["clean"]
    assert got["zero_shot/num_classes"] == 3 and got["zero_shot/chance_top1"] == pytest.approx(1 / 3)
    assert set(got["zero_shot/per_class_recall"]) == set(THREE)
    assert got == want  # the same numbers as without the class folder: a 3-way task over the readable images


def test_unreadable_class_in_cli_eval_counts_only_readable_classes(tmp_path, capsys):
    root = make_shapes_folder(tmp_path / "photos", classes=THREE, per_class=2)
    _break_class(root, "grey_hexagon")
    out = tmp_path / "out.json"
    assert main(["eval", "--model", TINY, "--zero-shot", str(root), "--templates", "simple",
                 "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())["first"]["photos"]
    assert metrics["zero_shot/num_classes"] == 3 == len(metrics["zero_shot/per_class_recall"])
    assert metrics["zero_shot/chance_balanced_accuracy"] == pytest.approx(1 / 3)
    assert metrics["zero_shot/num_samples"] == 6


# ------------------------------------------------------------ EXIF orientation

SIZE = (24, 48)  # upright: 24 wide, 48 high; red on top, blue below
RED, BLUE = (230, 20, 20), (20, 20, 230)


def _upright() -> Image.Image:
    image = Image.new("RGB", SIZE, BLUE)
    image.paste(RED, (0, 0, SIZE[0], SIZE[1] // 2))
    return image


def _rotated_jpeg(orientation: int) -> bytes:
    """The upright image stored sideways, with the EXIF Orientation tag that a viewer undoes.

    Orientation 6: "rotate 90 degrees clockwise to display", so the pixels hold the picture turned
    90 degrees counter-clockwise; 8 is the opposite.
    """
    stored = _upright().rotate(90 if orientation == 6 else -90, expand=True)  # PIL rotates counter-clockwise
    assert stored.size == SIZE[::-1]
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _assert_upright_pixels(image: Image.Image) -> None:
    assert image.size == SIZE
    assert image.getpixel((SIZE[0] // 2, 4))[0] > 180 and image.getpixel((SIZE[0] // 2, SIZE[1] - 4))[2] > 180


def _assert_upright_tensor(x: torch.Tensor) -> None:
    """``(3, S, S)`` normalised: red rows at the top, blue at the bottom (whatever the crop or resize)."""
    top, bottom = x[:, 1], x[:, -2]
    assert (top[0] > top[2] + 0.5).all() and (bottom[2] > bottom[0] + 0.5).all(), (top, bottom)


@pytest.fixture(params=[6, 8])
def photos(request, tmp_path) -> Path:
    """``photos/{up,down}/<n>.jpg``: sideways JPEGs with EXIF orientation (two classes for zero-shot sets)."""
    for folder in ("up", "down"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        for n in range(2):
            (tmp_path / "photos" / folder / f"{n}.jpg").write_bytes(_rotated_jpeg(request.param))
    return tmp_path / "photos"


def test_rotated_jpeg_fixture_is_sideways_without_exif(photos):
    with Image.open(photos / "up" / "0.jpg") as stored:
        assert stored.size == SIZE[::-1] and stored.getexif()[0x0112] in (6, 8)


def test_exif_orientation_folder_dataset(photos):
    spec = create_dataset("folder", train=str(photos), image_size=16, augment=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    data = build_train_dataset(spec)
    for i in range(len(data)):
        _assert_upright_tensor(data[i][0])


def test_exif_orientation_csv_dataset_and_its_val_set(photos):
    rows = ["filepath\ttitle"] + [f"{p.relative_to(photos)}\ta red and blue bar" for p in sorted(photos.rglob("*.jpg"))]
    (photos / "train.tsv").write_text("\n".join(rows) + "\n")
    spec = create_dataset("csv", train=str(photos / "train.tsv"), val=str(photos / "train.tsv"), image_size=16,
                          augment=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    batch = next(iter(DataLoader(build_train_dataset(spec), batch_size=4, collate_fn=collate)))
    assert batch.skipped == 0 and len(batch) == 4
    for image in batch.images:
        _assert_upright_tensor(image)
    val = build_eval_sets(spec)["val"]  # the retrieval set of data.spec.val: uint8 (N, S, S, 3)
    for image in next(val.pixels(16)):
        _assert_upright_tensor(image)


def test_exif_orientation_webdataset_shard(photos, tmp_path):
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for k, path in enumerate(sorted(photos.rglob("*.jpg"))):
            for name, payload in ((f"s{k}.jpg", path.read_bytes()), (f"s{k}.txt", b"a red and blue bar")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    spec = create_dataset("wds", train=str(tmp_path / "shard-000.tar"), image_size=16, augment=False,
                          mean=(0.5,) * 3, std=(0.5,) * 3)
    images = [x for b in DataLoader(build_train_dataset(spec), batch_size=2, collate_fn=collate) for x in b.images]
    assert len(images) == 4
    for image in images:
        _assert_upright_tensor(image)
    raw = [s for s in spec.raw_samples() if s is not None]  # what data.spec.val of shards decodes
    assert len(raw) == 4
    for image, _ in raw:
        _assert_upright_pixels(image)


def test_exif_orientation_streamed_eval_images_and_zero_shot_folder(photos):
    def identity(image: Image.Image) -> torch.Tensor:  # PIL -> (3, H, W) float, 0..255
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()

    paths = sorted(photos.rglob("*.jpg"))
    streamed = torch.cat(list(StreamedImages(paths, identity, batch_size=3)))
    assert streamed.shape == (4, 3, SIZE[1], SIZE[0])
    zero_shot = zero_shot_eval_set(photos, templates=TEMPLATES, transform=identity)
    assert zero_shot.tasks["zero_shot"].classnames == ["down", "up"]
    batches = torch.cat(list(zero_shot.images))
    assert batches.shape == (4, 3, SIZE[1], SIZE[0])
    for image in (*streamed, *batches):
        assert image[0, 4].mean() > 180 and image[2, -4].mean() > 180  # red top rows, blue bottom rows
