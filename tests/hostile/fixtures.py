"""pytest fixtures for the download and preprocess tests: a sandbox tmp dir that fails the test if
anything outside its data/ folder changed, and the scripted local HTTP server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stylepipe.config import DownloadParams, Source
from tests.hostile.guard import changed_outside, snapshot, symlinks_under
from tests.hostile.server import HostileServer


def dl_params(*sources: Source, **overrides) -> DownloadParams:
    settings = {"timeout_s": 5, "retries": 3, "backoff_s": 0, **overrides}
    return DownloadParams(content=list(sources) or [Source(url="unused")], **settings)


class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        self.served = root / "served"
        self.work = root / "work"
        self.data = self.work / "data"
        for d in (self.served, self.data):
            d.mkdir(parents=True)
        self.content = self.data / "raw" / "content"
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
        return json.loads(((root or self.content) / "manifest.json").read_text())

    def rejected(self, root: Path | None = None) -> list[dict]:
        return json.loads(((root or self.content) / "rejected.json").read_text())


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
