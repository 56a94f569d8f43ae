"""What the training loop reads: processed datasets as streams of examples.

Every dataset maps a sample index of the whole run to one example, as a pure function of
(seed, index): the stream does not depend on DataLoader workers, process count or where a run was
resumed, which is what makes resumed runs bit-identical. An example is a dict: "image" (C,H,W)
float in [0,1], and "label" (int) for labelled data.

    photos    data/processed/<dataset>/train/*.png           random crops (+ flips) of the photos
    pairs     the same, and a crop of a painting from data/processed/<styles>/train/*.png as "style"
              (the adain family: TrainParams.styles names the paintings dataset)
    labelled  data/processed/<dataset>/train.safetensors     images uint8 (N,H,W,C), labels int64 (N,)
    paired    data/processed/<dataset>/train/{A,B}/*.png     "a", "b": one pair, the same crop (+ flip) of both
    unpaired  data/processed/<dataset>/train/{A,B}/*.png     "a", "b": an A image and an unrelated B image
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.numpy import load_file
from torch.utils.data import Dataset, Sampler

from stylepipe.config import DEFAULT_MAX_PIXELS
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from tasks.data.images import Decoded, Rejected, decode, is_image_file, max_input_bytes

LABELLED_FILES = {"train": "train.safetensors", "val": "val.safetensors"}


# --- files -----------------------------------------------------------------------------------------


def list_train_images(train_dir: Path) -> list[Path]:
    files = sorted(Path(train_dir).glob("*.png")) if Path(train_dir).is_dir() else []
    if not files:
        raise StageError(f"no training images (*.png) in {train_dir}; run the preprocess stage first")
    return files


def list_domains(split_dir: Path, paired: bool) -> tuple[list[Path], list[Path]]:
    """The A and B images of one split of a translation dataset; for paired data, the same names."""
    a, b = (sorted((Path(split_dir) / d).glob("*.png")) if (Path(split_dir) / d).is_dir() else [] for d in "AB")
    if not a or not b:
        raise StageError(f"no training images (*.png) in {split_dir}/A and {split_dir}/B; run the preprocess stage first")
    if paired and [p.name for p in a] != [p.name for p in b]:
        raise StageError(f"{split_dir}/A and {split_dir}/B do not hold the same file names: run the preprocess stage again")
    return a, b


def files_sha256(files: list[Path]) -> str:
    """One hash of a list of files, names and contents (the checkpoint's data identity)."""
    h = hashlib.sha256()
    for p in files:  # sorted by name
        h.update(f"{p.name}\t{sha256_file(p)}\n".encode())
    return h.hexdigest()


def find_style_image(style_dir: Path) -> Path:
    """The one image download put under <style_dir>/files."""
    files_dir = Path(style_dir) / "files"
    files = sorted(p for p in files_dir.rglob("*") if p.is_file()) if files_dir.is_dir() else []
    images = [p for p in files if is_image_file(p)]
    if not images:
        listed = ", ".join(str(p.relative_to(files_dir)) for p in files[:5])
        found = f" ({len(files)} files, none of them an image: {listed})" if files else ""
        raise StageError(f"no style image under {files_dir}{found}; run the download stage first")
    if len(images) > 1:
        raise StageError(f"expected exactly one style image under {files_dir}, found {len(images)}: "
                         f"{', '.join(str(p.relative_to(files_dir)) for p in images[:5])}")
    return images[0]


def load_rgb(path: Path, data: bytes | None = None) -> Image.Image:
    """The image at `path` (or, given, its bytes `data`, read already), upright, in RGB."""
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, Image.DecompressionBombError) as e:
        raise StageError(f"{path}: cannot read image: {e}") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3,H,W) float32 in [0,1]."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255)


def load_style_image(path: Path, size: int, data: bytes | None = None) -> torch.Tensor:
    """The painting, its long side resized to `size` (the scale its texture is learned at); `data`:
    the file's bytes when the caller has read them already (read_checked)."""
    img = load_rgb(path, data)
    scale = size / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    return to_tensor(img)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """An image file -> (3,H,W) float in [0,1], by tasks/data/images.py's rules (EXIF orientation, any
    mode to RGB; truncated files and decompression bombs refused)."""
    return to_tensor(read_checked(path, max_pixels)[1].image)


def read_checked(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, Decoded]:
    """An image file's bytes, read once, and their decoding by read_image's rules; a file those
    rules refuse raises StageError, with its name."""
    path = Path(path)
    max_bytes = max_input_bytes(max_pixels)
    try:
        if not path.is_file():  # a folder, a device like /dev/zero
            raise StageError(f"{path}: not a regular file" if path.exists() else f"{path}: no such file")
        if path.stat().st_size > max_bytes:
            raise StageError(f"{path}: {path.stat().st_size} bytes, more than any image of "
                             f"{max_pixels} pixels needs: refused")
        data = path.read_bytes()
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None
    except OSError as e:
        raise StageError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        return data, decode(data, max_pixels)
    except Rejected as e:
        raise StageError(f"{path}: not a usable image ({e})") from None


def load_labelled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,H,W,C), labels int64 (N,)) of one split of a labelled dataset."""
    if not Path(path).is_file():
        raise StageError(f"{path}: no such file; run the preprocess stage first")
    arrays = load_file(str(path))
    return arrays["images"], arrays["labels"]


# --- streams ---------------------------------------------------------------------------------------


def _epoch_order(seed: int, epoch: int, n: int, stream: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, 0, epoch, stream] if stream else [seed, 0, epoch]).permutation(n)


class RandomCrops(Dataset):
    """Sample i -> a random crop (+ flip) of a training photo. stream: a second, independent
    stream of the same seed (another order and other crops), e.g. the paintings beside the photos."""

    def __init__(self, files: list[Path], size: int, seed: int, stream: int = 0):
        self.files, self.size, self.seed, self.stream = files, size, seed, stream

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict:
        epoch, j = divmod(i, len(self.files))
        rng = np.random.default_rng([self.seed, 1, i, self.stream] if self.stream else [self.seed, 1, i])
        img = load_rgb(self.files[_epoch_order(self.seed, epoch, len(self.files), self.stream)[j]])
        if min(img.size) < self.size:
            s = self.size / min(img.size)
            img = img.resize((max(self.size, round(img.width * s)), max(self.size, round(img.height * s))),
                             Image.BICUBIC)
        x0 = int(rng.integers(0, img.width - self.size + 1))
        y0 = int(rng.integers(0, img.height - self.size + 1))
        img = img.crop((x0, y0, x0 + self.size, y0 + self.size))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return {"image": to_tensor(img)}


class ContentStylePairs(Dataset):
    """Sample i -> {"image": a crop of a photo, "style": a crop of a painting}, each from its own
    stream, so photo and painting pair up differently every epoch."""

    def __init__(self, photos: list[Path], paintings: list[Path], size: int, style_size: int, seed: int):
        self.photos = RandomCrops(photos, size, seed)
        self.paintings = RandomCrops(paintings, style_size, seed, stream=1)

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict:
        return {"image": self.photos[i]["image"], "style": self.paintings[i]["image"]}


def _jitter(img: Image.Image, load: int, size: int, x0: int, y0: int, flip: bool) -> torch.Tensor:
    img = img.resize((load, load), Image.BICUBIC) if img.size != (load, load) else img
    img = img.crop((x0, y0, x0 + size, y0 + size))
    return to_tensor(img.transpose(Image.FLIP_LEFT_RIGHT) if flip else img)


class TranslationImages(Dataset):
    """Sample i -> {"a", "b"}: each image resized to load x load, then a random size x size crop,
    flipped half the time (when flip). Paired: the i-th pair of an epoch's shuffled order, both
    halves cropped and flipped alike. Unpaired: the i-th A image of the epoch's order and a B
    image drawn at random, each with its own crop."""

    def __init__(self, files_a: list[Path], files_b: list[Path], paired: bool, size: int, load: int,
                 flip: bool, seed: int):
        self.files_a, self.files_b, self.paired = files_a, files_b, paired
        self.size, self.load, self.flip, self.seed = size, max(load, size), flip, seed

    def __len__(self) -> int:
        return 2**62

    def _crop(self, rng: np.random.Generator) -> tuple[int, int, bool]:
        x0, y0 = (int(v) for v in rng.integers(0, self.load - self.size + 1, 2))
        return x0, y0, bool(self.flip and rng.random() < 0.5)

    def __getitem__(self, i: int) -> dict:
        epoch, j = divmod(i, len(self.files_a))
        rng = np.random.default_rng([self.seed, 2, i])
        k = _epoch_order(self.seed, epoch, len(self.files_a))[j]
        crop = self._crop(rng)
        a = _jitter(load_rgb(self.files_a[k]), self.load, self.size, *crop)
        if self.paired:
            b = _jitter(load_rgb(self.files_b[k]), self.load, self.size, *crop)
        else:
            other = int(rng.integers(0, len(self.files_b)))
            b = _jitter(load_rgb(self.files_b[other]), self.load, self.size, *self._crop(rng))
        return {"a": a, "b": b}


class LabelledImages(Dataset):
    """Sample i -> one labelled image, each epoch in its own shuffled order."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int):
        self.images, self.labels, self.seed = images, labels, seed
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> dict:
        epoch, j = divmod(i, len(self.images))
        if epoch not in self._orders:  # one permutation per epoch, computed once
            self._orders = {epoch: _epoch_order(self.seed, epoch, len(self.images))}
        k = self._orders[epoch][j]
        image = torch.from_numpy(self.images[k]).permute(2, 0, 1).float().div(255)
        return {"image": image, "label": int(self.labels[k])}


class StepSamples(Sampler):
    """The sample indices one process consumes for steps [start, steps): step s of process r
    (of `world`) takes samples (s*world + r)*batch ... +batch, so every sample of the run is used
    once whatever the process count, and one process reproduces the single-process stream."""

    def __init__(self, start: int, steps: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __len__(self) -> int:
        return (self.steps - self.start) * self.batch

    def __iter__(self):
        for step in range(self.start, self.steps):
            first = (step * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)
