"""preprocess of translation datasets: paired folders (A/ and B/, the same names), unpaired domains,
and pairs made from photos. A pair missing a half, or whose halves differ in size, or with a half
that does not decode, is a rejected row in the manifest, never a crash."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stylepipe.config import PreprocessParams
from stylepipe.errors import StageError
from tasks.data.datasets import TranslationImages, list_domains
from tasks.preprocess import domain_of, preprocess_translation


def params(**overrides) -> PreprocessParams:
    return PreprocessParams(**{"workers": 1, "train_size": 32, "val_fraction": 0.25, "max_reject_fraction": 0.9,
                               **overrides})


def png(path: Path, size=(40, 40), seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "manifest.parquet")


def test_domain_of():
    assert domain_of("files/src/A/x.png") == ("A", "files/src/*/x.png")
    assert domain_of("files/A/sub/B/x.png") == ("B", "files/A/sub/*/x.png")
    assert domain_of("files/src/x.png") is None
    assert domain_of("files/src/A") is None  # a file named A is not a folder


def test_paired_folders_record_bad_pairs(tmp_path):
    src = tmp_path / "raw" / "files" / "src"
    for i in range(6):
        png(src / "A" / f"{i}.png", seed=i)
        png(src / "B" / f"{i}.png", seed=100 + i)
    png(src / "A" / "lonely.png", seed=50)                      # no B half
    png(src / "A" / "big.png", seed=51)
    png(src / "B" / "big.png", size=(48, 40), seed=52)          # halves of different sizes
    png(src / "A" / "broken.png", seed=53)
    (src / "B" / "broken.png").write_bytes(b"<html>not an image</html>")
    png(src / "loose.png", seed=54)                             # under neither A/ nor B/
    out = tmp_path / "processed"

    preprocess_translation(params(), "paired", "folders", tmp_path / "raw", out)

    for split in ("train", "val"):
        a, b = list_domains(out / split, paired=True)   # the same names in A and B
        assert a
    assert len(list((out / "train" / "A").glob("*.png"))) + len(list((out / "val" / "A").glob("*.png"))) == 6
    m = manifest(out)
    reasons = {(r.relpath, r.domain): r.reason.split(":")[0] for r in m.itertuples() if r.status == "rejected"}
    assert reasons == {
        ("files/src/A/lonely.png", "A"): "half-missing",
        ("files/src/A/big.png", "A"): "size-mismatch", ("files/src/B/big.png", "B"): "size-mismatch",
        ("files/src/B/broken.png", "B"): "not-an-image", ("files/src/A/broken.png", "A"): "half-missing",
        ("files/src/loose.png", ""): "no-domain",
    }
    ok = m[m.status == "ok"]
    assert len(ok) == 12 and set(ok.domain) == {"A", "B"}
    # both halves of a pair land in the same split under the same name
    for pair, rows in ok.groupby("pair"):
        assert len(rows) == 2 and rows.split.nunique() == 1
        assert {Path(o).name for o in rows.output} == {Path(rows.output.iloc[0]).name}
    with Image.open(out / ok[ok.split == "train"].output.iloc[0]) as im:
        assert im.size == (32, 32)  # train: a centre square scaled down to train_size
    # the stream gives one pair at a time, cropped alike
    a, b = list_domains(out / "train", paired=True)
    stream = TranslationImages(a, b, True, size=24, load=28, flip=True, seed=0)
    example = stream[3]
    assert example["a"].shape == example["b"].shape == (3, 24, 24)
    assert all(torch_equal(stream[3][k], example[k]) for k in "ab")  # a pure function of (seed, index)


def torch_equal(x, y) -> bool:
    import torch
    return torch.equal(x, y)


def test_unpaired_domains_split_each(tmp_path):
    src = tmp_path / "raw" / "files" / "s"
    for i in range(5):
        png(src / "A" / f"a{i}.png", seed=i)
    for i in range(3):
        png(src / "B" / f"b{i}.png", seed=10 + i)
    png(src / "B" / "copy.png", seed=10)  # same bytes as b0
    out = tmp_path / "processed"
    preprocess_translation(params(), "unpaired", "folders", tmp_path / "raw", out)
    m = manifest(out)
    ok = m[m.status == "ok"]
    assert sorted(ok.groupby("domain").size().tolist()) == [3, 5]
    for domain in "AB":
        assert set(ok[ok.domain == domain].split) == {"train", "val"}
    assert m[m.status == "rejected"].reason.str.startswith("duplicate").all() and (m.status == "rejected").sum() == 1
    a, b = list_domains(out / "train", paired=False)
    assert len(a) != len(b)


@pytest.mark.parametrize("make", ["edges", "grey"])
def test_pairs_made_from_photos(tmp_path, make):
    src = tmp_path / "raw" / "files" / "photos"
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(4):
        img = np.stack([xx * 5, yy * 5, np.full_like(xx, 60 * i)], -1).astype(np.uint8)
        img[(xx - 24) ** 2 + (yy - 10 - 6 * i) ** 2 < 80] = (250, 30, 30)
        src.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(src / f"p{i}.png")
    out = tmp_path / "processed"
    preprocess_translation(params(), "paired", make, tmp_path / "raw", out)
    a, b = list_domains(out / "train", paired=True)
    x = np.asarray(Image.open(a[0]))
    y = np.asarray(Image.open(b[0]))
    assert x.shape == y.shape == (32, 32, 3)
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()   # A is grey
    assert not (y[..., 0] == y[..., 2]).all()                                    # B keeps its colour
    if make == "edges":
        assert set(np.unique(x)) == {0, 255} and (x == 0).mean() < 0.5          # black lines on white


def test_nothing_usable_fails(tmp_path):
    src = tmp_path / "raw" / "files" / "s"
    png(src / "A" / "x.png")
    with pytest.raises(StageError, match="no usable image"):
        preprocess_translation(params(), "paired", "folders", tmp_path / "raw", tmp_path / "processed")
