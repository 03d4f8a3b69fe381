"""Tutorial: write webdataset shards and read them the way `dalip train` does.

docs/tutorials/scale-out.md includes the marked blocks; the torchrun command on that
page is exercised on CPU by tests/test_train.py::test_torchrun_on_cpu.

Run: python examples/tutorials/webdataset_shards.py [FOLDER]   (CPU, a few seconds)
"""

# --8<-- [start:write]
import io
import sys
import tarfile
import tempfile
from pathlib import Path

from PIL import Image

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())  # where the shards go

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


for shard in range(4):  # shards-0000.tar ... shards-0003.tar, 6 samples each
    with tarfile.open(folder / f"shards-{shard:04d}.tar", "w") as tar:
        for i, (name, rgb) in enumerate(list(COLOURS.items()) * 2):
            key = f"{shard:04d}{i:04d}"  # KEY.jpg + KEY.txt make one sample
            jpeg = io.BytesIO()
            Image.new("RGB", (48, 48), rgb).save(jpeg, format="JPEG")
            add(tar, f"{key}.jpg", jpeg.getvalue())
            add(tar, f"{key}.txt", f"a {name} square".encode())
    # --8<-- [end:write]
    if shard == 3:  # one broken sample: skipped and counted, never fatal
        with tarfile.open(folder / f"shards-{shard:04d}.tar", "a") as tar:
            add(tar, "broken.jpg", b"not a jpeg")
            add(tar, "broken.txt", b"a broken sample")

# --8<-- [start:read]
from torch.utils.data import DataLoader

from dalip.data import build_train_dataset, collate, create_dataset, expand_shards

pattern = str(folder / "shards-{0000..0003}.tar")  # brace ranges, as in open_clip
print(len(expand_shards(pattern)))  # 4
spec = create_dataset("wds", train=pattern, image_size=64, shuffle_buffer=8)
shards = build_train_dataset(spec)  # an IterableDataset: it shuffles itself
loader = DataLoader(shards, batch_size=5, collate_fn=collate)
batches = list(loader)
print(batches[0].images.shape, batches[0].texts[:2])  # torch.Size([5, 3, 64, 64]) [...]
print(sum(len(b) for b in batches), sum(b.skipped for b in batches))  # 24 1
# --8<-- [end:read]
assert sum(len(b) for b in batches) == 24 and sum(b.skipped for b in batches) == 1
