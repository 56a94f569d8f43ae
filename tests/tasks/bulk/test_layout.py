"""The engine's CPU layout chosen by measurement (tasks/bulk/layout.py): the candidates, the choice
of the fastest, and a job that measures on its first batch, runs on what it chose, remembers it and
starts the next job of the same model on it without measuring again."""
import json
import time

import numpy as np
import pytest
from PIL import Image

from tasks.bulk import layout
from tasks.bulk.engine import stylize
from tasks.bulk.layout import Layout
from tests.tasks.bulk.test_support import (ledger_rows, make_job, make_photos, other_model,  # noqa: F401
                                          output_files, tiny_model)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(layout, "min_inputs", lambda cores=None: 2)  # these jobs are small
    monkeypatch.setattr(layout, "surely_no_cuda", lambda: True)  # device auto means the CPU, even beside a GPU


def test_a_small_job_measures_nothing(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(layout, "min_inputs", lambda cores=None: 3)
    src = tmp_path / "src"
    make_photos(src, ["a.png", "b.png"], size=(96, 64))
    stylize(make_job(src, tmp_path / "out", tiny_model, layout="auto", batch_size=None), progress=False)
    assert not (tmp_path / "cache/stylepipe/layouts.json").exists()
    make_photos(src, ["c.png"], size=(96, 64))
    stylize(make_job(src, tmp_path / "more", tiny_model, layout="auto", batch_size=None), progress=False)
    assert (tmp_path / "cache/stylepipe/layouts.json").exists()


@pytest.mark.parametrize(("cores", "expected"), [
    (1, ["1x1x1", "1x1x2"]),
    (2, ["2x1x1", "1x2x1", "2x1x2"]),
    (12, ["8x1x1", "4x3x1", "2x6x1", "1x12x1", "8x1x2"]),   # the fixed layout first, as the engine starts
    (16, ["8x2x1", "4x4x1", "2x8x1", "1x16x1", "8x2x2"]),
])
def test_candidates_start_from_the_fixed_layout(cores, expected):
    assert [str(c) for c in layout.candidates(cores)] == expected
    assert [str(c) for c in layout.candidates(cores, 2048 * 2048)] == expected[:-1]  # no batches of two
    assert layout.measured_images(layout.candidates(2)) == 27


def test_only_a_cpu_job_with_nothing_set_settles_its_layout(monkeypatch):
    from stylepipe.config import StylizeParams

    monkeypatch.setattr(layout, "surely_no_cuda", lambda: True)
    assert layout.applies(StylizeParams(layout="auto")) and layout.applies(StylizeParams(layout="auto", device="cpu"))
    assert not layout.applies(StylizeParams(layout="fixed"))
    assert not layout.applies(StylizeParams(layout="auto", threads=2))
    assert not layout.applies(StylizeParams(layout="auto", device="cuda"))
    assert not layout.applies(StylizeParams(layout="auto", device="cpu", codec="device"))  # its batches hold no pixels
    monkeypatch.setattr(layout, "surely_no_cuda", lambda: False)  # a GPU driver: auto may mean CUDA
    assert not layout.applies(StylizeParams(layout="auto"))
    assert layout.applies(StylizeParams(layout="auto", device="cpu"))


class Sleeper:
    """A runner whose batch takes `cost(threads) * batch` seconds of sleep: passes overlap freely."""

    def __init__(self, cost, fail_on=None):
        self.cost, self.fail_on, self.layouts = cost, fail_on, []

    def set_layout(self, passes, threads, batch):
        self.layouts.append(Layout(passes, threads, batch))

    def stylize(self, batch):
        current = self.layouts[-1]
        if current == self.fail_on:
            raise RuntimeError("a forward pass failed")
        time.sleep(self.cost(current.threads) * len(batch))
        return [batch]


def test_the_fastest_layout_is_kept():
    # 2 passes x 1 thread: 2 / 0.02 = 100 images/s; 1 x 2: 1 / 0.005 = 200; 2 x 1, batches of 2: 100
    runner = Sleeper(lambda threads: 0.02 if threads == 1 else 0.005)
    best, timings = layout.calibrate(runner, np.zeros((8, 8, 3), np.uint8), cores=2)
    assert best == Layout(1, 2, 1) and runner.layouts[-1] == best
    assert set(timings) == set(layout.candidates(2))
    assert timings[Layout(1, 2, 1)] > 1.5 * max(v for k, v in timings.items() if k != best)


def test_another_layout_must_beat_the_fixed_one_by_the_margin(monkeypatch):
    rates = {Layout(2, 1, 1): [10.0, 10.5], Layout(1, 2, 1): [11.0], Layout(2, 1, 2): [9.0]}  # 1.048x: noise
    monkeypatch.setattr(layout, "measure", lambda models, image, candidate: rates[candidate].pop(0))
    runner = Sleeper(lambda threads: 0)
    best, timings = layout.calibrate(runner, np.zeros((8, 8, 3), np.uint8), cores=2)
    assert best == Layout(2, 1, 1) and timings[best] == 10.5 and runner.layouts[-1] == best
    # 1.16x, then timed against the fixed layout once more: 1.2x (kept), then 1.05x (noise: not kept)
    rates.update({Layout(2, 1, 1): [10.0, 9.0, 10.0], Layout(1, 2, 1): [11.6, 12.0], Layout(2, 1, 2): [9.0]})
    assert layout.calibrate(runner, np.zeros((8, 8, 3), np.uint8), cores=2)[0] == Layout(1, 2, 1)
    rates.update({Layout(2, 1, 1): [10.0, 9.0, 10.0], Layout(1, 2, 1): [11.6, 10.5], Layout(2, 1, 2): [9.0]})
    assert layout.calibrate(runner, np.zeros((8, 8, 3), np.uint8), cores=2)[0] == Layout(2, 1, 1)
    assert runner.layouts[-1] == Layout(2, 1, 1) and not any(rates.values())


def test_a_failed_pass_puts_the_fixed_layout_back_and_says_why():
    runner = Sleeper(lambda threads: 0.001, fail_on=Layout(1, 2, 1))
    with pytest.raises(RuntimeError, match="a forward pass failed"):
        layout.calibrate(runner, np.zeros((8, 8, 3), np.uint8), cores=2)
    assert runner.layouts[-1] == layout.candidates(2)[0]


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_a_job_measures_on_its_first_batch_runs_on_the_fastest_and_the_next_job_starts_there(
        backend, tmp_path, tiny_model, other_model, monkeypatch):
    src = tmp_path / "src"
    make_photos(src, [f"{i}.png" for i in range(6)], size=(96, 64))
    settings = {"format": "png", "batch_size": None, "backend": backend}
    fixed = stylize(make_job(src, tmp_path / "fixed", tiny_model, layout="fixed", **settings), progress=False)
    assert fixed.done == 6 and not (tmp_path / "cache/stylepipe/layouts.json").exists()

    measured = []
    real_measure = layout.measure

    def measure(models, image, candidate, rounds=layout.TIMED_ROUNDS):
        real_measure(models, image, candidate, rounds)  # a real pass on each layout, the timing made up:
        measured.append((str(candidate), image.shape))
        return 100.0 if candidate == Layout(1, 2, 1) else 10.0  # one pass on two threads is fastest

    monkeypatch.setattr(layout, "candidates", lambda cores, pixels=0: [Layout(2, 1, 1), Layout(1, 2, 1), Layout(2, 1, 2)])
    monkeypatch.setattr(layout, "measure", measure)
    first = stylize(make_job(src, tmp_path / "first", tiny_model, layout="auto", **settings), progress=False)
    assert first.done == 6 and first.failed == 0
    # each on the job's first image; the fixed layout again last (a job's first measurement runs
    # cold); the winner confirmed against it
    assert measured == [(c, (64, 96, 3)) for c in ("2x1x1", "1x2x1", "2x1x2", "2x1x1", "1x2x1", "2x1x1")]
    devices = [row["device"] for row in ledger_rows(tmp_path / "first/.stylepipe/ledger.sqlite")]
    assert all("1 passes x 2 threads" in d for d in devices), devices
    names = output_files(tmp_path / "fixed")
    assert output_files(tmp_path / "first") == names
    assert max(int(np.abs(pixels(tmp_path / "fixed" / n) - pixels(tmp_path / "first" / n)).max()) for n in names) <= 1
    remembered = next(iter(json.loads((tmp_path / "cache/stylepipe/layouts.json").read_text()).values()))
    assert remembered["layout"] == [1, 2, 1] and set(remembered["images_per_s"]) == {"2x1x1", "1x2x1", "2x1x2"}
    if backend == "auto":  # every job starts on the fixed layout: auto's choice is remembered under it alone
        assert len(json.loads((tmp_path / "cache/stylepipe/backends.json").read_text())) == 1

    measured.clear()
    again = stylize(make_job(src, tmp_path / "again", tiny_model, layout="auto", **settings), progress=False)
    assert again.done == 6 and measured == []
    assert all("1 passes x 2 threads" in row["device"] for row in ledger_rows(tmp_path / "again/.stylepipe/ledger.sqlite"))
    # the same network with other weights (a nightly's retrained model): its layout holds too
    retrained = stylize(make_job(src, tmp_path / "retrained", other_model, layout="auto", **settings), progress=False)
    assert retrained.done == 6 and measured == []
    assert all("1 passes x 2 threads" in row["device"]
               for row in ledger_rows(tmp_path / "retrained/.stylepipe/ledger.sqlite"))
    if backend == "auto":  # and its backend
        assert len(json.loads((tmp_path / "cache/stylepipe/backends.json").read_text())) == 1
    set_by_hand = stylize(make_job(src, tmp_path / "hand", tiny_model, layout="auto", **{**settings, "batch_size": 3}),
                          progress=False)
    assert set_by_hand.done == 6 and measured == []  # a layout setting given: nothing measured or applied
    assert not any("1 passes x 2 threads" in row["device"]
                   for row in ledger_rows(tmp_path / "hand/.stylepipe/ledger.sqlite"))
    bigger = tmp_path / "bigger"  # another size class (4x the area): measured for itself
    make_photos(bigger, [f"{i}.png" for i in range(3)], size=(192, 128))
    stylize(make_job(bigger, tmp_path / "bigger-out", tiny_model, layout="auto", **settings), progress=False)
    assert [shape for _, shape in measured] == [(128, 192, 3)] * 6


def test_large_inputs_run_before_the_layout_settles_and_the_first_small_batch_settles_it_alone(
        tmp_path, tiny_model, monkeypatch):
    """Until the layout is settled, tiled images still run `parallel` at once, and the first batch
    that is not tiled runs alone: nothing else is in flight while its layout is measured."""
    from tasks.bulk import engine

    src = tmp_path / "src"
    make_photos(src, ["big-1.png", "big-2.png"], size=(300, 80))
    make_photos(src / "small", [f"{i}.png" for i in range(4)], size=(96, 64))
    events, in_flight, most_tiled = [], [0], [0]
    forward, settle = engine.Pipeline._forward, engine.Pipeline._settle_layout

    def counted(self, pixels, tiled, paintings, shape):
        in_flight[0] += 1
        if tiled:
            most_tiled[0] = max(most_tiled[0], in_flight[0])
        try:
            return forward(self, pixels, tiled, paintings, shape)
        finally:
            in_flight[0] -= 1
            events.append("tiled" if tiled else "batch")

    def settled(self, image):
        events.append(("settling", in_flight[0], image.shape))
        return settle(self, image)

    monkeypatch.setattr(engine.Pipeline, "_forward", counted)
    monkeypatch.setattr(engine.Pipeline, "_settle_layout", settled)
    monkeypatch.setattr(layout, "candidates", lambda cores, pixels=0: [Layout(2, 1, 1), Layout(1, 2, 1)])
    job = make_job(src, tmp_path / "out", tiny_model, layout="auto", batch_size=None, tile_above=128, tile_size=64,
                   tile_overlap=16, workers=0)
    summary = stylize(job, progress=False)
    assert summary.done == 6 and summary.failed == 0
    assert events[:3] == ["tiled", "tiled", ("settling", 1, (64, 96, 3))]  # the large ones first, then alone
    assert most_tiled[0] == 2  # the two large images ran at once
    remembered = json.loads((tmp_path / "cache/stylepipe/layouts.json").read_text())
    assert len(remembered) == 1 and next(iter(remembered)).endswith(f"-{round(np.log2(96 * 64))}")


def test_a_measurement_that_fails_costs_a_warning_and_is_not_tried_again(tmp_path, tiny_model, monkeypatch, caplog):
    src = tmp_path / "src"
    make_photos(src, [f"{i}.png" for i in range(4)], size=(96, 64))
    options = layout.candidates(layout.cpu_count())
    real_measure = layout.measure

    def measure(models, image, candidate, rounds=layout.TIMED_ROUNDS):
        if candidate == options[-1]:
            raise MemoryError("no room for this layout's activations")
        return real_measure(models, image, candidate, rounds)

    monkeypatch.setattr(layout, "measure", measure)
    summary = stylize(make_job(src, tmp_path / "out", tiny_model, layout="auto", batch_size=None), progress=False)
    assert summary.done == 4 and summary.failed == 0
    assert "no room for this layout's activations; the fixed layout stays" in caplog.text
    remembered = next(iter(json.loads((tmp_path / "cache/stylepipe/layouts.json").read_text()).values()))
    fixed = options[0]
    assert remembered["layout"] == [fixed.passes, fixed.threads, fixed.batch] and "MemoryError" in remembered["failed"]
    monkeypatch.setattr(layout, "measure", lambda *a, **k: pytest.fail("measured again"))
    assert stylize(make_job(src, tmp_path / "again", tiny_model, layout="auto", batch_size=None),
                   progress=False).done == 4


def test_a_measurement_that_fails_on_a_bad_input_is_not_remembered(tmp_path, tiny_model, monkeypatch):
    """The first small image makes the network fail on every layout (the input's fault, not the
    layout's): it fails alone, and the layout is measured again by a later job."""
    from tasks.bulk import engine, runners

    src = tmp_path / "src"
    make_photos(src, [f"{i}.png" for i in range(4)], size=(96, 64))
    bad = []  # the image the layout settles on is the one this network cannot take
    settle, stylize_batch = engine.Pipeline._settle_layout, runners.StyleModels.stylize

    def settled(self, image):
        bad.append(image.copy())
        return settle(self, image)

    def poisoned(self, batch):
        if any(np.array_equal(image, bad[0]) for image in batch):
            raise RuntimeError("a NaN the network cannot take")
        return stylize_batch(self, batch)

    monkeypatch.setattr(engine.Pipeline, "_settle_layout", settled)
    monkeypatch.setattr(runners.StyleModels, "stylize", poisoned)
    summary = stylize(make_job(src, tmp_path / "out", tiny_model, layout="auto", batch_size=None, backend="torch"),
                      progress=False)
    assert len(bad) == 1 and summary.failed == 1 and summary.done == 3
    assert not (tmp_path / "cache/stylepipe/layouts.json").exists()


def test_a_real_calibration_times_every_candidate(tmp_path, tiny_model):
    src = tmp_path / "src"
    make_photos(src, [f"{i}.jpg" for i in range(4)], size=(96, 64))
    summary = stylize(make_job(src, tmp_path / "out", tiny_model, layout="auto", batch_size=None, backend="onnxruntime"),
                      progress=False)
    assert summary.done == 4
    remembered = next(iter(json.loads((tmp_path / "cache/stylepipe/layouts.json").read_text()).values()))
    assert set(remembered["images_per_s"]) == {str(c) for c in layout.candidates(layout.cpu_count())}
    assert all(v > 0 for v in remembered["images_per_s"].values())
    assert Layout(*remembered["layout"]) in layout.candidates(layout.cpu_count())


@pytest.mark.parametrize("backend", ["torch", "auto", "onnxruntime"])
def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_batch(backend, tmp_path, tiny_model, monkeypatch,
                                                                     caplog):
    """The layout's and auto's memory are a convenience: unwritable, the job runs (auto on torch, as
    it cannot cache the ONNX export); only onnxruntime asked for by name, which needs the export, stops."""
    from stylepipe.errors import StageError

    src = tmp_path / "src"
    make_photos(src, ["a.png", "b.png"], size=(96, 64))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    job = make_job(src, tmp_path / "out", tiny_model, layout="auto", batch_size=None, backend=backend)
    if backend == "onnxruntime":
        with pytest.raises(StageError, match="ONNX export could not be cached"):
            stylize(job, progress=False)
        return
    summary = stylize(job, progress=False)
    assert summary.done == 2 and summary.failed == 0
    assert "could not remember the layout" in caplog.text
    assert all("torch" in row["device"] for row in ledger_rows(tmp_path / "out/.stylepipe/ledger.sqlite"))


def test_a_remembered_layout_this_machine_cannot_run_is_ignored(tmp_path, tiny_model):
    """A hand-edited or another machine's entry (0 passes would submit nothing, ever) is measured
    over instead."""
    import threading

    src = tmp_path / "src"
    make_photos(src, [f"{i}.png" for i in range(3)], size=(96, 64))
    job = make_job(src, tmp_path / "out", tiny_model, layout="auto", batch_size=None)
    layout.remember(layout.size_key(layout.job_key(job), 64, 96), Layout(0, 1, 1), {})
    done = []
    worker = threading.Thread(target=lambda: done.append(stylize(job, progress=False)), daemon=True)
    worker.start()
    worker.join(120)
    assert done and done[0].done == 3
    remembered = next(iter(json.loads((tmp_path / "cache/stylepipe/layouts.json").read_text()).values()))
    assert Layout(*remembered["layout"]) in layout.candidates(layout.cpu_count())
