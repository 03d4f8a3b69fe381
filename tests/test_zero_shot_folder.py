"""Zero-shot evaluation on labelled image folders / CSVs: readers, bad input, metrics by hand, CLI, training config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip import zero_shot_metadata
from PIL import Image
from shapes import CLASSES, make_shapes_folder
from sklearn.metrics import balanced_accuracy_score
from torchvision import transforms
from torchvision.datasets import ImageFolder

import dalip
from dalip.cli import main
from dalip.data import (
    EvalSet,
    ZeroShotTask,
    load_templates,
    read_classnames,
    read_image_folder,
    read_labelled,
    read_labelled_csv,
)
from dalip.errors import ConfigError
from dalip.eval import evaluate, evaluate_zero_shot, format_results, zero_shot_eval_set
from dalip.runs import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "assets" / "tiny-clip.json")  # image size 64
TINY_TRAIN = str(ROOT / "tests" / "assets" / "tiny-train.yaml")
PER_CLASS = [5, 2, 4, 3, 4, 2]  # uneven: balanced accuracy differs from top-1
TRANSFORM = transforms.Compose([transforms.Resize((64, 64)), transforms.ToTensor(), transforms.Normalize(0.5, 0.5)])
TEMPLATES = ["a photo of a {}.", "a {} shape."]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """6 classes of coloured shapes (uneven sizes) and one corrupt file in ``red_circle``."""
    return make_shapes_folder(tmp_path_factory.mktemp("zs") / "shapes", per_class=PER_CLASS, corrupt=True)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return dalip.create_model(TINY, second_order="mean").eval(), dalip.get_tokenizer(TINY)


def write_csv(data, path: Path, sep: str = ",", integer: bool = False) -> Path:
    rows = [f"{p.relative_to(path.parent)}{sep}{y if integer else data.classnames[y]}" for p, y in zip(data.paths, data.labels)]
    path.write_text(f"filepath{sep}label\n" + "\n".join(rows) + "\n")
    return path


# ------------------------------------------------------------------ readers
def test_image_folder_matches_torchvision_image_folder(shapes):
    data = read_image_folder(shapes)
    reference = ImageFolder(str(shapes), allow_empty=True)  # the corrupt .jpg is listed there too
    assert [str(p) for p in data.paths] == [p for p, _ in reference.samples]
    assert data.labels == [y for _, y in reference.samples]
    assert data.classnames == [c.replace("_", " ") for c in reference.classes] == sorted(CLASSES)
    assert data.source == shapes and len(data) == sum(PER_CLASS) + 1


def test_csv_and_tsv_give_the_same_samples_and_classnames_files_rename(shapes, tmp_path):
    folder = read_image_folder(shapes)
    by_name = read_labelled_csv(write_csv(folder, shapes / "val.csv"))
    assert (by_name.paths, by_name.labels, by_name.classnames) == (folder.paths, folder.labels, folder.classnames)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"  the {c}" for c in folder.classnames) + "\n\n")  # spaces and blank lines ignored
    assert read_classnames(names) == [f"the {c}" for c in folder.classnames]
    tsv = write_csv(folder, shapes / "val.tsv", sep="\t", integer=True)  # integer labels: names from the file
    by_index = read_labelled(tsv, classnames=names)
    assert by_index.labels == folder.labels and by_index.classnames == read_classnames(names)
    assert read_labelled(shapes, classnames=names).classnames == by_index.classnames
    assert read_labelled_csv(shapes / "val.csv", classnames=names).classnames == by_index.classnames
    semi = shapes / "val.txt"
    semi.write_text((shapes / "val.csv").read_text().replace(",", ";"))
    assert read_labelled_csv(semi, separator=";").labels == folder.labels


def test_templates_named_sets_and_files(tmp_path):
    openai = load_templates("openai_imagenet")
    assert len(openai) == 80 and [t.replace("{}", "golden retriever") for t in openai] == [
        t("golden retriever") for t in zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES
    ]
    simple = load_templates("openai_imagenet_simple")
    assert [t.format("x") for t in simple] == [t("x") for t in zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES]
    assert load_templates("simple")[0] == "a photo of a {}."
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {c}.\n\n  art of the {}.  \n")
    assert load_templates(path) == ["a photo of a {}.", "art of the {}."]


def bad_inputs(root: Path) -> dict:
    """name -> (call, exception, words its message must contain)."""
    (root / "no_classes").mkdir(parents=True)
    (root / "no_classes" / "a.png").write_bytes(b"")
    (root / "empty_class" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "empty_class" / "cat" / "0.png")
    (root / "empty_class" / "dog").mkdir()
    (root / "empty_class" / "dog" / "readme.txt").write_text("no images")
    for name in ("cat", "dog"):
        (root / "two_classes" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / "two_classes" / name / "0.png")
    (root / "cols.csv").write_text("image,label\na.png,cat\n")
    (root / "ints.csv").write_text("filepath,label\na.png,0\nb.png,3\n")
    (root / "two.txt").write_text("cat\ndog\n")
    (root / "one.txt").write_text("cat\n")
    (root / "bad_templates.txt").write_text("a photo of a {c}.\na photo.\n")
    folder = root / "empty_class"
    return {
        "missing folder": (lambda: read_labelled(root / "nope"), FileNotFoundError, ["nope"]),
        "missing folder (image folder)": (lambda: read_image_folder(root / "nope"), FileNotFoundError, ["nope"]),
        "no class folders": (lambda: read_image_folder(root / "no_classes"), ValueError, ["no_classes", "no class"]),
        "empty class folder": (lambda: read_image_folder(folder), ValueError, [str(folder / "dog"), "without images"]),
        "missing column": (lambda: read_labelled_csv(root / "cols.csv"), ValueError, ["cols.csv", "filepath"]),
        "integer labels without names": (lambda: read_labelled_csv(root / "ints.csv"), ValueError, ["ints.csv", "classnames"]),
        "integer label out of range": (
            lambda: read_labelled_csv(root / "ints.csv", classnames=root / "two.txt"), ValueError, ["ints.csv", "[3]"]),
        "classnames of the wrong length": (
            lambda: read_labelled(root / "two_classes", classnames=root / "one.txt"), ValueError,
            ["one.txt", "1 class names", "two_classes has 2 classes"]),
        "missing classnames file": (
            lambda: read_labelled_csv(root / "ints.csv", classnames=root / "none.txt"), FileNotFoundError, ["none.txt"]),
        "template without placeholder": (
            lambda: load_templates(root / "bad_templates.txt"), ValueError, ["bad_templates.txt:2", "a photo."]),
        "unknown template set": (lambda: load_templates("imagenet"), FileNotFoundError, ["imagenet", "openai_imagenet"]),
    }


def test_every_bad_input_is_a_clear_error_naming_the_file(tmp_path):
    for name, (call, kind, words) in bad_inputs(tmp_path).items():
        with pytest.raises(kind) as info:
            call()
        assert all(w in str(info.value) for w in words), (name, str(info.value))


# ------------------------------------------------------------------ metrics
def by_hand(model, tokenizer, data, templates, embedding):
    """Scores ``(N', C)`` and labels of the readable images, computed directly with the model.

    Class embeddings: unit prompt embeddings averaged over templates, renormalised, per
    order; the combined score is ``alpha * first + (1 - alpha) * second``.
    """
    keep = [i for i, p in enumerate(data.paths) if p.name != "broken.jpg"]
    images = torch.stack([TRANSFORM(Image.open(data.paths[i]).convert("RGB")) for i in keep])
    labels = np.array([data.labels[i] for i in keep])
    if embedding == "combined":
        first, second = (by_hand(model, tokenizer, data, templates, o)[0] for o in ("first", "second"))
        return model.alpha * first + (1 - model.alpha) * second, labels
    with torch.no_grad():
        feats = F.normalize(model.encode_image(images, embedding=embedding), dim=-1)
        prompts = [t.format(c) for c in data.classnames for t in templates]
        text = F.normalize(model.encode_text(tokenizer(prompts), embedding=embedding), dim=-1)
    classes = F.normalize(text.view(len(data.classnames), len(templates), -1).mean(1), dim=-1)
    return (feats @ classes.T).numpy(), labels


def test_metrics_equal_a_direct_computation_and_sklearn(shapes, tiny, caplog):
    model, tokenizer = tiny
    data = read_image_folder(shapes)
    eval_set = zero_shot_eval_set(shapes, templates=TEMPLATES, transform=TRANSFORM, batch_size=4)
    assert eval_set.name == "shapes" and eval_set.captions == []
    with caplog.at_level(logging.WARNING):
        results = evaluate(model, tokenizer, {"S": eval_set}, progress=False)
    assert f"{shapes}: skipped 1 unreadable image(s) of {sum(PER_CLASS) + 1}" in caplog.text
    assert list(results) == ["first", "second", "combined"]
    for embedding, per_set in results.items():
        m = per_set["S"]
        scores, labels = by_hand(model, tokenizer, data, TEMPLATES, embedding)
        predicted = scores.argmax(1)
        top5 = np.mean([y in np.argsort(-s)[:5] for s, y in zip(scores, labels)])
        assert m["zero_shot/top1"] == pytest.approx(np.mean(predicted == labels), abs=1e-12)
        assert m["zero_shot/top5"] == pytest.approx(top5, abs=1e-12)
        assert m["zero_shot/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-12)
        recall = {c: np.mean(predicted[labels == k] == k) for k, c in enumerate(data.classnames)}
        assert m["zero_shot/per_class_recall"] == pytest.approx(recall, abs=1e-12)
        assert m["zero_shot/num_classes"] == 6 and m["zero_shot/num_samples"] == m["num_samples"] == sum(PER_CLASS)
        assert m["zero_shot/num_skipped"] == m["num_skipped"] == 1
        assert all(0 <= m[f"zero_shot/{k}"] <= 1 for k in ("top1", "top5", "balanced_accuracy"))
    assert eval_set.images.kept.tolist() == [i for i, p in enumerate(data.paths) if p.name != "broken.jpg"]
    table = format_results(results)
    assert "zero_shot/balanced_accuracy" in table and "per_class_recall" not in table and "(16.7)" in table


def test_one_call_api_uses_the_model_transform_and_sets_from_csv(shapes, tiny):
    model, tokenizer = tiny
    csv = write_csv(read_image_folder(shapes), shapes / "all.csv")
    results = evaluate_zero_shot(model, tokenizer, [shapes, csv], templates=TEMPLATES, embeddings=["first"],
                                 progress=False)
    assert list(results["first"]) == ["shapes", "all"]  # a folder's name, a file's stem
    assert results["first"]["shapes"] == results["first"]["all"]
    explicit = evaluate_zero_shot(model, tokenizer, shapes, templates=TEMPLATES, embeddings=["first"],
                                  transform=dalip.eval.model_transform(model), progress=False)
    assert explicit["first"]["shapes"] == results["first"]["shapes"]
    with pytest.raises(ValueError, match="two eval sets named 'shapes'"):
        evaluate_zero_shot(model, tokenizer, [shapes, shapes], templates=TEMPLATES, progress=False)


def test_balanced_accuracy_of_in_memory_tasks_matches_sklearn(tiny):
    model, tokenizer = tiny
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8))
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 1]
    task = ZeroShotTask("kinds", torch.tensor(labels), ["cat", "dog", "bird"], TEMPLATES)
    results = evaluate(model, tokenizer, {"val": EvalSet("val", images, ["x"] * 12, {"kinds": task})},
                       embeddings=["first"], progress=False)
    m = results["first"]["val"]
    with torch.no_grad():
        feats = F.normalize(model.encode_image(dalip.eval.default_image_transform(model)(images), embedding="first"), dim=-1)
        text = F.normalize(model.encode_text(tokenizer(task.prompts()[0] + task.prompts()[1] + task.prompts()[2]),
                                             embedding="first"), dim=-1)
    predicted = (feats @ F.normalize(text.view(3, 2, -1).mean(1), dim=-1).T).argmax(1).numpy()
    assert m["kinds/balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-12)
    assert m["kinds/chance_balanced_accuracy"] == pytest.approx(1 / 3)
    assert "kinds/per_class_recall" not in m and "num_skipped" not in m  # in-memory sets: as before


# ------------------------------------------------------------------ CLI and training
def test_cli_pretrained_model_equals_the_python_api(shapes, tmp_path, capsys):
    templates = tmp_path / "templates.txt"
    templates.write_text("\n".join(t.replace("{}", "{c}") for t in TEMPLATES) + "\n")
    out = tmp_path / "out.json"
    torch.manual_seed(1)  # the same fresh projections in both models
    assert main(["eval", "--model", TINY, "--zero-shot", str(shapes), "--name", "S", "--templates", str(templates),
                 "--batch-size", "5", "--output", str(out)]) == 0
    saved = json.loads(out.read_text())
    torch.manual_seed(1)
    model = dalip.create_model(TINY, second_order=None)
    expected = evaluate_zero_shot(model, dalip.get_tokenizer(TINY), shapes, templates=TEMPLATES, progress=False)
    got, want = saved["first"]["S"], expected["first"]["shapes"]
    assert list(saved) == ["first"] and got.pop("zero_shot/per_class_recall") == pytest.approx(
        want.pop("zero_shot/per_class_recall"))
    assert got == pytest.approx(want)
    assert {"zero_shot/top1", "zero_shot/top5", "zero_shot/balanced_accuracy", "zero_shot/num_classes",
            "zero_shot/num_samples"} <= set(saved["first"]["S"])
    capsys.readouterr()
    for argv, words in [
        (["--model", TINY, "--zero-shot", str(tmp_path / "nope"), "--output", str(out)], "not found"),
        (["--model", TINY, "--zero-shot", str(shapes), "--templates", "nope", "--output", str(out)], "named set"),
        (["--model", TINY, "--zero-shot", str(shapes), "--classnames", str(templates), "--output", str(out)],
         "2 class names, but"),
        (["--model", TINY, "--zero-shot", str(shapes)], "--output"),
        (["--zero-shot", str(shapes), "--output", str(out)], "either --checkpoint"),
        (["--model", "no-such-model", "--zero-shot", str(shapes), "--output", str(out)], "no-such-model"),
    ]:
        assert main(["eval", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("dalip eval: error: ") and words in err[-1], err


def test_training_config_entry_and_checkpoint_evaluation(shapes, tmp_path):
    folder = read_image_folder(shapes)
    csv = write_csv(folder, shapes / "train_zs.tsv", sep="\t")
    run = tmp_path / "run"
    entry = f"eval.zero_shot=[{{path: {shapes}, name: shapes, templates: simple}}, {{path: {csv}, name: tsv}}]"
    assert main(["train", "--config", TINY_TRAIN, "--output", str(run), "optim.steps=2", "eval.every=1",
                 "data.spec.eval_subsets=[]", "eval.embeddings=[first]", entry]) == 0
    for name in ("eval.json", "eval_step1.json"):
        results = json.loads((run / name).read_text())
        assert list(results["first"]) == ["shapes", "tsv"]
        assert results["first"]["tsv"]["zero_shot/num_samples"] == sum(PER_CLASS) and results["first"]["tsv"]["num_skipped"] == 1
    # afterwards: only the given sets (a CSV with a classnames file), or with the run's own as well
    names = tmp_path / "names.txt"
    names.write_text("\n".join(c.upper() for c in folder.classnames))
    only = tmp_path / "only.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--zero-shot", str(csv), "--classnames",
                 str(names), "--name", "mine", "--templates", "simple", "--output", str(only)]) == 0
    metrics = json.loads(only.read_text())["first"]
    assert list(metrics) == ["mine"]
    assert set(metrics["mine"]["zero_shot/per_class_recall"]) == {c.upper() for c in folder.classnames}
    both = tmp_path / "both.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--zero-shot", str(csv), "--name", "mine",
                 "--with-run-sets", "--output", str(both)]) == 0
    assert list(json.loads(both.read_text())["first"]) == ["shapes", "tsv", "mine"]
    # the fusion curve on your own validation images: a weight to choose on them
    fused = tmp_path / "fused.json"
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--zero-shot", str(csv), "--name", "mine",
                 "--output", str(fused), "eval.embeddings=[first, second]", "--fusion", "0", "0.5", "1"]) == 0
    results = json.loads(fused.read_text())
    assert results["fusion@1"]["mine"] == results["first"]["mine"] and results["fusion@0"]["mine"] == results["second"]["mine"]
    assert (tmp_path / "fused_fusion.png").is_file()


def test_config_validates_zero_shot_entries(shapes, tmp_path):
    ok = load_config(TINY_TRAIN, [f"eval.zero_shot=[{{path: {shapes}}}]"])
    assert ok.eval.zero_shot == [{"path": str(shapes)}]
    config = tmp_path / "relative.yaml"
    config.write_text(f"base: {TINY_TRAIN}\neval:\n  zero_shot: [{{path: shapes}}]\n")
    (tmp_path / "shapes").symlink_to(shapes)
    assert load_config(config).eval.zero_shot == [{"path": str((tmp_path / "shapes").resolve())}]
    for value, words in [
        (f"[{{path: {tmp_path / 'missing'}}}]", "eval.zero_shot[0].path: not found"),
        ("[{name: x}]", "eval.zero_shot[0].path"),
        (f"[{{path: {shapes}, label: x}}]", "unknown key(s) ['label']"),
        (f"[{{path: {shapes}, templates: nope}}]", "named set"),
        (f"[{{path: {shapes}, classnames: {tmp_path / 'none.txt'}}}]", "classnames: file not found"),
        (f"[{{path: {shapes}}}, {{path: {shapes}}}]", "the name 'shapes' is taken"),
        ("[x]", "must be a mapping"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(TINY_TRAIN, [f"eval.zero_shot={value}"])
        assert words in str(info.value), (value, str(info.value))
