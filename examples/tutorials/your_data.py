"""Adapt a pretrained OpenCLIP model to your labelled images: the tutorial's commands, runnable.

    python examples/tutorials/your_data.py                     # offline stand-ins, about a minute on a CPU
    python examples/tutorials/your_data.py --model ViT-B-16 --pretrained laion2b_s34b_b88k \
        --train leaves/train --val leaves/val --general general/val --steps 500

Offline stand-ins (the defaults): a generated folder of labelled shapes replaces your
photos, and a tiny open_clip model saved as a hub-style folder (``local-dir:``) replaces
a hub model such as ``ViT-B-16`` / ``laion2b_s34b_b88k``. Every step is the ``dalip``
command of the tutorial (docs/tutorials/your-data.md), run through ``dalip.cli.main``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

from dalip.cli import main as dalip

SHAPES = {"circle": "ellipse", "square": "rectangle", "triangle": "polygon"}
COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (225, 200, 40)}


def make_shapes(root: Path, classes: list[str], per_class: int, seed: int) -> Path:
    """An ImageFolder tree ``root/<colour>_<shape>/<k>.png`` of jittered shapes on grey."""
    rng = random.Random(seed)
    for name in classes:
        colour, shape = name.split("_")
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            image = Image.new("RGB", (64, 64), (rng.randint(150, 200),) * 3)
            x, y, r = rng.randint(20, 44), rng.randint(20, 44), rng.randint(10, 18)
            box = [x - r, y - r, x + r, y + r]
            draw = ImageDraw.Draw(image)
            if shape == "triangle":
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=COLOURS[colour])
            else:
                getattr(draw, SHAPES[shape])(box, fill=COLOURS[colour])
            image.save(root / name / f"{k}.png")
    return root


def make_tiny_hub_model(folder: Path) -> str:
    """A tiny open_clip model in a hub-style folder, written with open_clip's own hub helpers."""
    import importlib

    import open_clip
    from safetensors.torch import save_file

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    model = open_clip.CLIP(**config)
    open_clip.set_model_preprocess_cfg(model, {"size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3})
    folder.mkdir(parents=True, exist_ok=True)
    hub = importlib.import_module("open_clip.push_to_hf_hub")
    hub.save_config_for_hf(model, folder / "open_clip_config.json", config)
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


def run(*args: str) -> None:
    print("$ dalip " + " ".join(args), flush=True)
    status = dalip(list(args))
    if status:
        raise SystemExit(f"dalip {args[0]} exited with {status}")


def zero_shot_top1(path: Path, subset: str, embedding: str = "first") -> float:
    return json.loads(path.read_text())[embedding][subset]["zero_shot/top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="open_clip model name (default: a tiny local stand-in)")
    parser.add_argument("--pretrained", default=None, help="pretrained tag or file, e.g. laion2b_s34b_b88k")
    parser.add_argument("--train", default=None, help="labelled training images (default: generated shapes)")
    parser.add_argument("--val", default=None, help="held-out domain images (default: generated shapes)")
    parser.add_argument("--general", default=None, help="held-out general images, to watch for forgetting")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--output", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.output or tempfile.mkdtemp(prefix="dalip-your-data-"))
    domain = ["red_circle", "green_square", "blue_triangle", "yellow_circle"]
    general = ["blue_circle", "red_square", "green_triangle"]
    train = args.train or str(make_shapes(work / "shapes" / "train", domain, 12, seed=0))
    val = args.val or str(make_shapes(work / "shapes" / "val", domain, 6, seed=1))
    general_val = args.general or str(make_shapes(work / "shapes" / "general", general, 6, seed=2))
    model = args.model or make_tiny_hub_model(work / "tiny-hub-model")
    pretrained = ["--pretrained", args.pretrained] if args.pretrained else []

    # 1. the pretrained model, unchanged, zero-shot on your labelled folders: the baseline
    run("eval", "--model", model, *pretrained, "--zero-shot", val, "--name", "domain",
        "--zero-shot", general_val, "--name", "general", "--templates", "simple",
        "--output", str(work / "baseline.json"))

    # 2. fine-tune with DALIP heads on the labelled images (captions from class names + templates)
    config = {
        "base": "quickstart",
        "model": {"name": model, "pretrained": args.pretrained, "second_options": {"heads": 2, "reduced_dim": 8},
                  "lock_image": False, "lock_text": False, "channels_last": False},
        "data": {"spec": {"dataset": "folder", "train": train, "val": val, "templates": "simple"},
                 "batch_size": 8, "workers": 0},
        "optim": {"steps": args.steps, "warmup_steps": 1, "head_patterns": []},
        "run": {"log_every": 1, "checkpoint_every": args.steps},
        "eval": {"zero_shot": [{"name": "general", "path": general_val, "templates": "simple"}]},
    }
    (work / "adapt.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run("train", "--config", str(work / "adapt.yaml"), "--output", str(work / "run"))

    # 3. the fine-tuned model on the domain folder and the general one
    checkpoint = str(work / "run" / "checkpoint.pt")
    run("eval", "--checkpoint", checkpoint, "--zero-shot", val, "--name", "domain",
        "--zero-shot", general_val, "--name", "general", "--templates", "simple",
        "--output", str(work / "adapted.json"))

    # 4. interpolate between the pretrained and the fine-tuned weights to keep general ability
    run("interpolate", "--start", "init", "--end", checkpoint, "--ratios", "0", "0.5", "1",
        "--domain", "val", "--general", "general", "--metric", "zero_shot/top1", "--output", str(work / "interp"))

    # 5. export: an open_clip hub folder (towers) plus the whole DALIP model
    run("export", "--checkpoint", checkpoint, "--output", str(work / "export"))
    import open_clip

    clip, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{work / 'export'}")
    before, after = zero_shot_top1(work / "baseline.json", "domain"), zero_shot_top1(work / "adapted.json", "domain")
    print(f"domain zero-shot top-1 (first order): {before:.1%} before, {after:.1%} after fine-tuning")
    print(f"exported: {work / 'export'} loads in open_clip as {type(clip).__name__}")


if __name__ == "__main__":
    main()
