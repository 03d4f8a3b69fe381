"""The data layer: Twemoji cache and concept split, CSV and webdataset readers, mixing, collate."""

from __future__ import annotations

import dataclasses
import io
import logging
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset

from dalip.data import (
    CAPTION_TEMPLATES,
    Batch,
    CsvCaptions,
    MixedDataset,
    MixedIterableDataset,
    WebDatasetShards,
    build_eval_sets,
    build_train_dataset,
    caption,
    collate,
    concept_split,
    create_dataset,
    expand_shards,
    load_twemoji,
    mentions,
    read_caption_csv,
    subcategory_phrase,
    subset_of,
    twemoji_split,
)
from dalip.data.twemoji import cache as cache_module
from dalip.data.twemoji.captions import with_article, words


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dalip-cache")


@pytest.fixture(scope="session")
def split(cache_dir):
    return twemoji_split(cache_dir)


def _png(path: Path, color=(200, 30, 30), mode="RGB") -> Path:
    Image.new(mode, (20, 16), color).save(path)
    return path


# ---------------------------------------------------------------- Twemoji


def test_split_is_by_concept_and_deterministic(split):
    a = split.arrays
    again = concept_split(a.names, a.subcategories, a.categories)
    assert again == concept_split(a.names, a.subcategories, a.categories)
    assert list(split.side) == [again[n] for n in a.names]
    sides = defaultdict(set)
    for name, side in zip(a.names, split.side):
        sides[name].add(side)
    assert all(len(s) == 1 for s in sides.values()), "skin-tone variants must follow their concept"
    assert sum(v != "" for v in a.variants) > 1000
    for subset in ("domain", "general"):
        train, val = split.concepts(subset, "train"), split.concepts(subset, "val")
        assert not set(train) & set(val)
        assert 0.15 < len(val) / (len(train) + len(val)) < 0.3
        captions = [caption(a.names[i], a.subcategories[i], a.categories[i], t)
                    for i in split.indices(subset, "train") if a.variants[i] == "" for t in range(len(CAPTION_TEMPLATES))]
        ngrams = {w[i:j] for c in captions for w in [words(c)] for i in range(len(w)) for j in range(i + 1, len(w) + 1)}
        leaks = [v for v in val if words(v) in ngrams]  # = any(mentions(c, v) for c in captions), fast
        assert not leaks, leaks[:5]
    # every domain class with >= 3 concepts is evaluable
    by_class = defaultdict(Counter)
    for name, sub, side in zip(a.names, a.subcategories, split.side):
        if subset_of(sub) == "domain":
            by_class[subcategory_phrase(sub)][side] += 1
    assert set(by_class) == {"mammal", "bird", "reptile or amphibian", "sea animal", "bug", "flower", "plant",
                             "fruit", "vegetable"}
    assert all(c["val"] > 0 for c in by_class.values()), by_class


def test_subset_assignment():
    assert subset_of("animal-mammal") == subset_of("food-fruit") == subset_of("plant-other") == "domain"
    assert subset_of("face-smiling") == subset_of("country-flag") == subset_of("food-marine") == "general"
    assert subcategory_phrase("animal-amphibian") == subcategory_phrase("animal-reptile") == "reptile or amphibian"


def test_fungi_are_domain(split):
    a = split.arrays
    subsets = {n: s for n, s in zip(a.names, split.subset)}
    assert subsets["mushroom"] == subsets["brown mushroom"] == subsets["dog"] == "domain"
    assert subsets["grinning face"] == "general"


def test_caption_templates():
    assert caption("owl", "animal-bird", "Animals & Nature", 0) == "an emoji of an owl."
    assert caption("grapes", "food-fruit", "Food & Drink", 3) == "grapes, a kind of fruit."
    assert caption("dog", "animal-mammal", "Animals & Nature", 5) == "an animal emoji: dog."
    assert with_article("unicorn face") == "a unicorn face" and with_article("octopus") == "an octopus"
    assert mentions("an emoji of a hot dog.", "dog") and not mentions("hotdogs", "dog")
    for t in range(len(CAPTION_TEMPLATES)):
        assert mentions(caption("red apple", "food-fruit", "Food & Drink", t), "red apple")


def test_cache_is_reused_and_rebuilt_when_corrupt(cache_dir, split, tmp_path, caplog, monkeypatch):
    path = split.arrays.path
    mtime = path.stat().st_mtime_ns
    cache_module._memo.clear()
    again = load_twemoji(cache_dir)
    assert path.stat().st_mtime_ns == mtime and again.images.shape == split.arrays.images.shape
    assert again.images.shape[1:] == (72, 72, 3) and again.images.dtype == np.uint8
    # the env var picks the folder; a corrupt file is rebuilt with a warning
    monkeypatch.setenv("DALIP_CACHE", str(tmp_path))
    bad = tmp_path / path.name
    bad.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        rebuilt = load_twemoji(progress=False)
    assert "corrupt" in caplog.text and rebuilt.path == bad
    assert np.array_equal(rebuilt.images, split.arrays.images)


def test_eval_sets(cache_dir):
    sets = build_eval_sets(create_dataset("twemoji", cache_dir=str(cache_dir)))
    assert set(sets) == {"twemoji-domain", "twemoji-general"}
    domain = sets["twemoji-domain"]
    assert domain.images.dtype == torch.uint8 and domain.images.shape[1:] == (72, 72, 3)
    assert len(domain.captions) == len(domain) > 20
    names, groups = domain.tasks["concepts"], domain.tasks["subcategories"]
    assert len(names.classnames) == len(set(domain.captions)) and names.labels.dtype == torch.int64
    assert {"mammal", "bird", "fruit"} <= set(groups.classnames)
    assert all("{}" in t for t in names.templates + groups.templates)
    for k, text in enumerate(domain.captions):
        assert mentions(text, names.classnames[names.labels[k]])
    pixels = next(domain.pixels(image_size=128, batch_size=4))
    assert pixels.shape == (4, 3, 128, 128) and -1.0 <= pixels.min() and pixels.max() <= 1.0


def test_twemoji_train_dataset(cache_dir, split):
    data = build_train_dataset(create_dataset("twemoji", cache_dir=str(cache_dir), image_size=128))
    image, text = data[0]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32 and isinstance(text, str)
    assert len(data) == len(split.indices("domain", "train")) + len(split.indices("general", "train"))
    batch = next(iter(DataLoader(data, batch_size=8, shuffle=True, collate_fn=collate)))
    assert batch.images.shape == (8, 3, 128, 128) and len(batch.texts) == 8 and batch.skipped == 0


# ---------------------------------------------------------------- CSV


def test_csv_skips_missing_and_corrupt_images(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", (0, 0, 0, 0), mode="RGBA")  # transparent -> white
    (tmp_path / "img" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = ["filepath\ttitle", "img/a.png\ta red square", "img/missing.png\tgone",
            "img/corrupt.jpg\tbroken", "img/b.png\ta white square"]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    data = build_train_dataset(create_dataset("csv", train=str(tmp_path / "train.csv"), image_size=32, augment=False,
                                              mean=(0.5,) * 3, std=(0.5,) * 3))
    assert isinstance(data, CsvCaptions) and len(data) == 4
    with caplog.at_level(logging.WARNING):
        batches = list(DataLoader(data, batch_size=4, collate_fn=collate))
    assert sum(b.skipped for b in batches) == 2 and sorted(t for b in batches for t in b.texts) == ["a red square", "a white square"]
    assert "missing.png" in caplog.text and "corrupt.jpg" in caplog.text
    white = batches[0].images[batches[0].texts.index("a white square")]
    assert torch.allclose(white, torch.ones_like(white))  # (1 - 0.5) / 0.5


def test_csv_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_caption_csv(tmp_path / "nope.csv")
    path = tmp_path / "bad.csv"
    path.write_text("filepath\tcaption\nx.png\thello\n")
    with pytest.raises(ValueError, match=r"no column 'title'.*columns found: \['filepath', 'caption'\]"):
        read_caption_csv(path)
    assert read_caption_csv(path, caption_key="caption") == [(tmp_path / "x.png", "hello")]
    path.write_text("filepath,title\nx.png,hello\n")
    with pytest.raises(ValueError, match="separator"):
        read_caption_csv(path)
    assert read_caption_csv(path, separator=",")[0][1] == "hello"
    path.write_text("filepath,title\nx.png,hello,extra\n")
    with pytest.raises(ValueError, match="line 2"):
        read_caption_csv(path, separator=",")


# ---------------------------------------------------------------- webdataset


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _jpeg(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (12, 12), (value, value, value)).save(out, format="JPEG")
    return out.getvalue()


def _write_shards(folder: Path) -> set[str]:
    good = set()
    for s in range(2):
        with tarfile.open(folder / f"data-{s:03d}.tar", "w") as tar:
            for k in range(7):
                key = f"s{s}_{k:02d}"
                if s == 0 and k == 3:
                    _add(tar, f"{key}.jpg", b"corrupt jpeg bytes")  # undecodable
                elif s == 1 and k == 5:
                    _add(tar, f"{key}.png", _jpeg(9))  # no caption member
                    continue
                else:
                    _add(tar, f"{key}.jpg", _jpeg(20 * k))
                    good.add(f"caption {key}")
                _add(tar, f"{key}.txt", f"caption {key}".encode())
    return good


def test_expand_shards():
    assert expand_shards("d-{000..002}.tar") == ["d-000.tar", "d-001.tar", "d-002.tar"]
    assert expand_shards("{a,b}-{1..2}.tar::c.tar") == ["a-1.tar", "a-2.tar", "b-1.tar", "b-2.tar", "c.tar"]


@pytest.mark.parametrize("workers", [2, 0])
def test_webdataset_every_good_sample_once_per_epoch(tmp_path, workers):
    good = _write_shards(tmp_path)
    data = WebDatasetShards(str(tmp_path / "data-{000..001}.tar"), shuffle_buffer=4, seed=1,
                            transform=lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1))
    loader = DataLoader(data, batch_size=3, num_workers=workers, collate_fn=collate)
    orders = []
    for epoch in range(2):
        data.set_epoch(epoch)
        batches = list(loader)
        texts = [t for b in batches for t in b.texts]
        assert Counter(texts) == Counter(good)  # exactly once each
        assert sum(b.skipped for b in batches) == 2
        orders.append(texts)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_webdataset_more_readers_than_shards(tmp_path):
    good = _write_shards(tmp_path)
    data = WebDatasetShards(str(tmp_path / "data-000.tar"), transform=lambda im: torch.zeros(3, 2, 2))
    texts = [t for b in DataLoader(data, batch_size=2, num_workers=2, collate_fn=collate) for t in b.texts]
    assert sorted(texts) == sorted(g for g in good if g.startswith("caption s0"))


def test_webdataset_missing_shard(tmp_path):
    with pytest.raises(FileNotFoundError, match="shards do not exist"):
        WebDatasetShards(str(tmp_path / "x-{0..1}.tar"))


# ---------------------------------------------------------------- mixing and collate


class _Items(Dataset):
    def __init__(self, tag: str, n: int) -> None:
        self.tag, self.n = tag, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.tag, i


class _Stream(IterableDataset):
    def __init__(self, tag: str, n: int) -> None:
        self.tag, self.n = tag, n

    def __iter__(self):
        return ((self.tag, i) for i in range(self.n))


def test_mixing_ratio_and_determinism():
    mix = MixedDataset(_Items("d", 50), _Items("g", 3000), domain_fraction=0.3, seed=7, length=20000)
    draws = [mix[i] for i in range(len(mix))]
    share = sum(tag == "d" for tag, _ in draws) / len(draws)
    assert abs(share - 0.3) < 0.015
    assert {i for tag, i in draws if tag == "d"} == set(range(50))  # small source cycled through fully
    again = MixedDataset(_Items("d", 50), _Items("g", 3000), domain_fraction=0.3, seed=7, length=20000)
    assert [again[i] for i in range(100)] == draws[:100]
    mix.set_epoch(1)
    assert [mix[i] for i in range(100)] != draws[:100]
    stream = list(MixedIterableDataset(_Stream("d", 40), _Stream("g", 5000), domain_fraction=0.6, seed=3))
    assert abs(sum(tag == "d" for tag, _ in stream) / len(stream) - 0.6) < 0.02
    assert {i for tag, i in stream if tag == "g"} == set(range(5000))
    with pytest.raises(ValueError, match="domain_fraction"):
        create_dataset("twemoji", mix_with="twemoji:general")


def test_twemoji_mix_spec(cache_dir):
    mix = build_train_dataset(create_dataset("twemoji", cache_dir=str(cache_dir), subsets=("domain",), mix_with="twemoji",
                                             domain_fraction=0.5, image_size=64))
    assert isinstance(mix, MixedDataset) and abs(mix.from_domain.mean() - 0.5) < 0.05
    image, text = mix[0]
    assert image.shape == (3, 64, 64) and isinstance(text, str)


def test_collate_drops_none_and_counts():
    sample = (torch.zeros(3, 4, 4), "a")
    batch = collate([sample, None, sample, None, None])
    assert isinstance(batch, Batch) and batch.images.shape == (2, 3, 4, 4) and batch.texts == ["a", "a"]
    assert batch.skipped == 3 and len(batch) == 2
    empty = collate([None, None])
    assert len(empty) == 0 and empty.skipped == 2


# ------------------------------------------------------------ dataset registry


def test_dataset_kinds_are_registered_components(tmp_path):
    from dalip import UnknownComponentError
    from dalip.data import (
        DATASETS,
        CsvSpec,
        DatasetSpec,
        TwemojiSpec,
        WdsSpec,
        list_datasets,
        register_dataset,
    )

    assert {"twemoji", "csv", "wds"} <= set(list_datasets())
    assert list_datasets("*csv*") == ["csv"]
    with pytest.raises(UnknownComponentError, match="Known datasets: .*csv.*twemoji"):
        create_dataset("imagenet")
    with pytest.raises(TypeError, match="csv_img_key"):  # the valid options of that kind are listed
        create_dataset("csv", train="x.csv", subsets=["domain"])  # a Twemoji option on a CSV
    with pytest.raises(ValueError, match="needs 'train'"):
        create_dataset("wds")
    # a config's data.spec: the kind under "dataset", always stated (no implicit kind)
    assert isinstance(create_dataset({"dataset": "twemoji", "subsets": ["domain"]}), TwemojiSpec)
    with pytest.raises(ValueError, match="dataset"):
        create_dataset({"subsets": ["domain"]})
    assert isinstance(create_dataset({"dataset": "csv", "train": "a.tsv"}), CsvSpec)
    assert isinstance(create_dataset({"dataset": "wds", "train": "s-{0..1}.tar"}), WdsSpec)
    # Twemoji options live in the Twemoji kind only
    assert not hasattr(create_dataset("csv", train="a.tsv"), "subsets")

    @dataclasses.dataclass
    class Ones(DatasetSpec):
        size: int = 4

        def source(self):
            return [(torch.ones(3, 2, 2), "one")] * self.size

    register_dataset("ones_test")(Ones)
    try:
        spec = create_dataset("ones_test", size=3)
        assert spec.kind == "ones_test" and len(build_train_dataset(spec)) == 3 and build_eval_sets(spec) == {}
    finally:
        DATASETS._entries.pop("ones_test")


def test_unset_preprocessing_comes_from_the_model():
    import open_clip

    from dalip.data import DatasetSpec

    clip = open_clip.create_model("ViT-S-32", pretrained=None)  # open_clip sets its preprocess cfg
    spec = create_dataset("csv", train="a.tsv").with_model_preprocess(clip)
    assert spec.image_size == 224 and spec.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    kept = create_dataset("csv", train="a.tsv", image_size=64, mean=(0.5,) * 3).with_model_preprocess(clip)
    assert kept.image_size == 64 and kept.mean == (0.5,) * 3 and kept.std == tuple(open_clip.OPENAI_DATASET_STD)
    assert DatasetSpec().preprocess[0] == 224  # neither spec nor model: open_clip's defaults


# ---------------------------------------------------------- labelled folders


def make_folder(root: Path, classes=("red", "green", "blue_sky"), per_class: int = 4, size: int = 24) -> Path:
    """An ImageFolder tree of solid-colour PNGs, plus one unreadable file."""
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue_sky": (30, 60, 230), "yellow": (230, 220, 30)}
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.new("RGB", (size, size), colours[name]).save(root / name / f"{k}.png")
    (root / classes[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def test_folder_dataset_captions_from_class_names(tmp_path):
    from dalip.data import FolderSpec, LabelledCaptions

    root = make_folder(tmp_path / "train")
    spec = create_dataset("folder", train=str(root), image_size=16, augment=False)
    assert isinstance(spec, FolderSpec)
    data = build_train_dataset(spec)
    assert isinstance(data, LabelledCaptions) and len(data) == 13 and data.data.classnames == ["blue sky", "green", "red"]
    good = [i for i, p in enumerate(data.data.paths) if p.name != "broken.jpg"]
    assert len(good) == 12 and data[next(i for i in range(13) if i not in good)] is None
    texts = {data[i][1] for i in good for _ in range(3)}
    assert texts <= {t.format(c) for t in ("a photo of a {}.", "a photo of the {}.", "a picture of a {}.",
                                           "an image of a {}.") for c in ("blue sky", "green", "red")}
    assert any("blue sky" in t for t in texts)
    batches = list(DataLoader(data, batch_size=13, collate_fn=collate))
    assert batches[0].skipped == 1 and batches[0].images.shape == (12, 3, 16, 16)
    # the caption's class is the image's folder
    for i in good:
        image, text = data[i]
        assert data.data.classnames[data.data.labels[i]] in text
    # one template file and a classnames file
    (tmp_path / "t.txt").write_text("a leaf of {c}\n")
    (tmp_path / "names.txt").write_text("Blue sky\nGreen\nRed\n")
    named = build_train_dataset(create_dataset("folder", train=str(root), templates=str(tmp_path / "t.txt"),
                                               classnames=str(tmp_path / "names.txt"), image_size=16))
    assert named[good[0]][1] == "a leaf of Blue sky"
    with pytest.raises(ValueError, match="names.txt: 2 class names"):
        (tmp_path / "names.txt").write_text("a\nb\n")
        build_train_dataset(create_dataset("folder", train=str(root), classnames=str(tmp_path / "names.txt")))


def test_folder_dataset_from_a_labelled_csv(tmp_path):
    root = make_folder(tmp_path / "images")
    rows = ["path,species"] + [f"images/{c}/{k}.png,{c.replace('_', ' ')}" for c in ("red", "green") for k in range(2)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = build_train_dataset(create_dataset("folder", train=str(tmp_path / "labels.csv"), img_key="path",
                                              label_key="species", image_size=8))
    assert len(data) == 4 and data.data.classnames == ["green", "red"]
    assert "red" in data[0][1] and data[0][0].shape == (3, 8, 8)


def test_16_bit_png_is_scaled_to_8_bits_not_saturated(tmp_path):
    from dalip.data import decode_image

    gradient = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(gradient).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(decode_image(tmp_path / "g16.png"))
    assert rgb.shape == (64, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_allclose(rgb[..., 0], np.round(gradient / 257), atol=1)  # was 255 almost everywhere


def test_non_utf8_csv_names_the_file_and_line(tmp_path):
    from dalip.data import read_labelled_csv

    captions = tmp_path / "captions.tsv"
    captions.write_bytes("filepath\ttitle\na.png\ta cat\nb.png\tcaf\xe9 latin-1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"captions.tsv, line 3: not UTF-8"):
        read_caption_csv(captions)
    labels = tmp_path / "labels.csv"
    labels.write_bytes("filepath,label\na.png,cat\nb.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"labels.csv, line 3: not UTF-8"):
        read_labelled_csv(labels)
