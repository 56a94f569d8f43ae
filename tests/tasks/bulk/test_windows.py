"""A large sampling job is planned and run a window of seeds at a time (tasks/bulk/plan.windows):
the same outputs and ledger as one window, and no plan ever holds more than a window."""
from pathlib import Path

import pytest
import torch

import tasks.bulk.engine as engine
from models.cgan.family import build
from models.cgan.params import TrainParams
from models.weights import save_model
from stylepipe.config import StylizeParams
from tasks.bulk.ledger import Ledger
from tasks.bulk.plan import Job, ModelSpec, plan, windows
from tasks.bulk.sources import SeedSource, seeds_spec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def job_for(source: str, out: Path, model: Path | str = "m") -> Job:
    return Job(source, out, (ModelSpec(str(model), label="m"),), StylizeParams(format="png", workers=0),
               out / ".stylepipe" / "ledger.sqlite")


def entries(spec: str) -> list[tuple[str, str]]:
    return [(e.relpath, e.ref) for e in SeedSource(spec).scan()]


@pytest.mark.parametrize("labels", [None, [0, 1, 2], [4, 9]])
def test_windows_cover_the_job_seed_by_seed_with_the_same_labels(tmp_path, labels):
    job = job_for(seeds_spec(23, 100, labels), tmp_path)
    parts = list(windows(job, size=7))
    assert len(parts) > 1
    assert [e for p in parts for e in entries(p.source)] == entries(job.source)
    assert all(SeedSource(p.source).count <= 7 for p in parts)


def test_a_small_job_or_a_folder_is_one_window(tmp_path):
    small = job_for(seeds_spec(5, 0, [0, 1]), tmp_path)
    assert list(windows(small, size=7)) == [small]
    folder = job_for(str(tmp_path), tmp_path / "out")
    assert list(windows(folder, size=1)) == [folder]


@pytest.fixture
def generator(tmp_path) -> Path:
    tp = TrainParams(nz=8, ngf=8, image_size=28, emb_dim=4)
    sidecar = {"family": "cgan", "train": tp.model_dump(), "channels": 1, "num_classes": 3, "conditional": True}
    torch.manual_seed(0)
    folder = tmp_path / "model"
    save_model(folder, build(sidecar), sidecar)
    return folder


def test_a_windowed_job_writes_what_one_window_writes_and_plans_no_more_than_a_window(
        tmp_path, generator, monkeypatch):
    spec = seeds_spec(20, 0, [0, 1, 2])
    whole = engine.stylize(job_for(spec, tmp_path / "whole", generator), progress=False)

    planned = []
    real_plan = engine.plan

    def spy(job, **kw):
        p = real_plan(job, **kw)
        planned.append(len(p.items))
        return p

    monkeypatch.setattr(engine, "plan", spy)
    monkeypatch.setattr(engine, "windows", lambda job: windows(job, size=6))
    windowed = engine.stylize(job_for(spec, tmp_path / "windowed", generator), progress=False)

    assert planned == [6, 6, 6, 2]
    assert (windowed.done, windowed.failed, windowed.pending, windowed.outputs) == (20, 0, 0, 20) == (
        whole.done, whole.failed, whole.pending, whole.outputs)
    files = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*.png"))
    assert files == sorted(p.relative_to(tmp_path / "windowed") for p in (tmp_path / "windowed").rglob("*.png"))
    for f in files:  # a sample is a function of (model, seed, label): windows change nothing
        assert (tmp_path / "whole" / f).read_bytes() == (tmp_path / "windowed" / f).read_bytes()
    with Ledger(tmp_path / "windowed" / ".stylepipe" / "ledger.sqlite") as ledger:
        assert len(ledger.outputs()) == 20

    planned.clear()  # a re-run settles every window from the ledger and draws nothing
    again = engine.stylize(job_for(spec, tmp_path / "windowed", generator), progress=False)
    assert planned == [0, 0, 0, 0] and again.done == 20 and again.run.processed == 0


def test_limit_counts_across_windows(tmp_path, generator, monkeypatch):
    monkeypatch.setattr(engine, "windows", lambda job: windows(job, size=3))
    spec = seeds_spec(10, 0, [0, 1, 2])
    first = engine.stylize(job_for(spec, tmp_path / "o", generator), limit=5, progress=False)
    assert (first.done, first.pending) == (5, 5)
    rest = engine.stylize(job_for(spec, tmp_path / "o", generator), progress=False)
    assert (rest.done, rest.pending, rest.run.processed) == (10, 0, 5)
    assert len(plan(job_for(spec, tmp_path / "o", generator), readonly=True).items) == 0
