"""pytest fixtures for the download and preprocess tests: a sandbox tmp dir that fails the test if
anything outside its data/ folder changed, and the scripted local HTTP server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stylepipe.config import DatasetParams, DownloadParams, ModelParams, Params, Source
from tests.hostile.guard import changed_outside, snapshot, symlinks_under
from tests.hostile.server import HostileServer


def dl_params(**overrides) -> DownloadParams:
    return DownloadParams(**{"timeout_s": 5, "retries": 3, "backoff_s": 0, **overrides})


def pipeline_params(photos: list[Source] | None = None, styles: dict[str, Source] | None = None, *,
                    labelled: dict[str, list[Source]] | None = None, weights: list[Source] | None = None,
                    **download_overrides) -> Params:
    """Params with a photos dataset `photos` (the given sources), a johnson model on it per style,
    and any labelled datasets."""
    datasets = {"photos": DatasetParams(kind="photos", sources=photos or [Source(url="unused")])}
    datasets.update({name: DatasetParams(kind="labelled", sources=sources)
                     for name, sources in (labelled or {}).items()})
    models = {name: ModelParams(family="johnson", dataset="photos", style=style)
              for name, style in (styles or {"unused": Source(url="pkg://skimage/data/chelsea.png")}).items()}
    return Params(download=dl_params(weights=weights or [], **download_overrides), datasets=datasets,
                  models=models)


class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        self.served = root / "served"
        self.work = root / "work"
        self.data = self.work / "data"
        for d in (self.served, self.data):
            d.mkdir(parents=True)
        self.raw = self.data / "raw"
        self.photos = self.raw / "datasets" / "photos"   # the photos dataset's download folder
        self.settle()

    def settle(self) -> None:
        """Call after the test's own setup: from here on only data/ may change."""
        self.before = snapshot(self.root)

    def put(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.settle()
        return path

    def manifest(self, root: Path | None = None) -> list[dict]:
        return json.loads(((root or self.photos) / "manifest.json").read_text())

    def rejected(self, root: Path | None = None) -> list[dict]:
        return json.loads(((root or self.photos) / "rejected.json").read_text())


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    box = Sandbox(tmp_path)
    monkeypatch.chdir(box.work)  # relative source paths resolve against the working directory
    yield box
    assert changed_outside(box.before, snapshot(tmp_path), box.data) == []
    assert symlinks_under(box.data) == []


@pytest.fixture
def server():
    with HostileServer() as s:
        yield s
