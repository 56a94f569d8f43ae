"""Tiled inference: the geometry is exact, and a tiled image agrees with the untiled one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.bulk import runners
from tasks.bulk.engine import stylize
from tasks.bulk.plan import ModelSpec
from tasks.bulk.runners import StyleModels
from tasks.bulk.tiling import (MOSAIC_CROP, ROW_MULTIPLE, STRIDE, blend_weights, statistics_image, stylize_tiled,
                               thumbnail, tile_layout, tile_starts)
from tests.tasks.bulk.test_support import make_job, output_files, photo, tiny_model  # noqa: F401


@pytest.mark.parametrize("length,tile,overlap", [(400, 128, 64), (1000, 256, 32), (516, 512, 128), (300, 300, 0)])
def test_tiles_cover_on_the_stride_grid_and_weights_sum_to_one(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(s % STRIDE == 0 for s in starts)
    assert all(b - a <= tile - overlap + STRIDE for a, b in zip(starts, starts[1:]))
    total = np.zeros(length, np.float32)
    for start, w in zip(starts, blend_weights(starts, tile, overlap // 4)):
        total[start:start + tile] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("length,max_tile,overlap,multiple", [(8000, 1024, 128, 2), (8000, 1536, 128, 2),
                                                               (2052, 1024, 128, 3), (500, 512, 64, 2)])
def test_fitted_tiles_are_at_most_the_tile_size_and_come_in_whole_rounds(length, max_tile, overlap, multiple):
    tile, starts = tile_layout(length, max_tile, overlap, multiple)
    assert tile <= max_tile and tile % STRIDE == 0 and starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))   # at least the overlap
    if length > max_tile:
        assert len(starts) % multiple == 0
        # no more pixels computed than with tiles of the full size (which overlap more than asked)
        assert len(starts) * tile <= len(tile_starts(length, max_tile, overlap)) * max_tile


def mid_size_image(height: int = 360, width: int = 484) -> np.ndarray:
    return np.array(photo(width, height, seed=7))


def test_tiled_and_untiled_outputs_agree_closely_without_seams(tiny_model):
    pixels = mid_size_image()
    models = StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), tile_size=192, tile_overlap=64,
                         tile_above=320, batch_size=4)
    whole = models.stylize(pixels[None])[0][0].astype(np.float32)
    assert models.needs_tiles(*pixels.shape[:2])
    tiled = models.stylize_large(pixels)[0].astype(np.float32)
    assert tiled.shape == whole.shape
    diff = np.abs(tiled - whole).mean(-1)
    # The instance-norm statistics come from a 320-px thumbnail instead of the 484-px image;
    # everything else (tile placement, padding, blending) matches the untiled pass.
    assert diff.mean() < 4.0, diff.mean()

    # No seams: across every tile boundary the tiled image changes no more from one column (row)
    # to the next than the untiled image does there.
    th, ys = tile_layout(pixels.shape[0] + (-pixels.shape[0] % STRIDE), 192, 64)
    tw, xs = tile_layout(pixels.shape[1] + (-pixels.shape[1] % STRIDE), 192, 64, multiple=ROW_MULTIPLE)
    assert len(xs) > 1 and len(ys) > 1
    for axis, starts, tile in ((1, xs, tw), (0, ys, th)):
        step_tiled = np.abs(np.diff(tiled, axis=axis)).mean(-1)
        step_whole = np.abs(np.diff(whole, axis=axis)).mean(-1)
        for a, b in zip(starts, starts[1:]):
            seam = slice(b, a + tile - 1)  # the overlap, where the cross-fade happens
            t, w = (step.take(range(seam.start, seam.stop), axis=axis).mean() for step in (step_tiled, step_whole))
            assert t < w * 1.15 + 0.5, (axis, a, b, t, w)


def grainy_image(height: int, width: int) -> np.ndarray:
    """Smooth colour fields plus grain: textures a thumbnail averages away, as a photo's are."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    fields = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    return np.clip(fields + rng.normal(0, 12, fields.shape), 0, 255).astype(np.uint8)


def test_statistics_of_a_much_larger_image_come_from_its_own_pixels():
    pixels = grainy_image(1200, 1600)
    mosaic = statistics_image(pixels, 1024)
    assert mosaic.shape == (3 * MOSAIC_CROP, 4 * MOSAIC_CROP, 3)  # 4 crops along the long side, 3 across
    c = MOSAIC_CROP
    for i, y in enumerate((72, 472, 872)):  # crops centred in the cells of a 3 x 4 grid over the image, unscaled
        for j, x in enumerate((72, 472, 872, 1272)):
            np.testing.assert_array_equal(mosaic[i * c:(i + 1) * c, j * c:(j + 1) * c], pixels[y:y + c, x:x + c])
    # an image at most 1.5x larger, or a side too small for a grid of crops: the thumbnail
    np.testing.assert_array_equal(statistics_image(pixels, 1100), thumbnail(pixels, 1100))
    np.testing.assert_array_equal(statistics_image(pixels, 512), thumbnail(pixels, 512))


def test_a_mosaic_s_statistics_bring_the_tiles_closer_to_the_untiled_pass(tiny_model, monkeypatch):
    pixels = grainy_image(1200, 1600)
    spec = [ModelSpec(str(tiny_model))]
    whole = StyleModels(spec, torch.device("cpu"), tile_size=512, tile_overlap=64, tile_above=1600,
                        batch_size=1).stylize(pixels[None].copy())[0][0].astype(np.float32)

    def tiled() -> np.ndarray:
        models = StyleModels(spec, torch.device("cpu"), tile_size=512, tile_overlap=64, tile_above=1024, batch_size=1)
        return models.stylize_large(pixels)[0].astype(np.float32)

    with_mosaic = np.abs(tiled() - whole).mean()
    monkeypatch.setattr(runners, "statistics_image", thumbnail)
    with_thumbnail = np.abs(tiled() - whole).mean()
    assert with_mosaic < 0.8 * with_thumbnail, (with_mosaic, with_thumbnail)


def test_the_engine_tiles_large_images(tmp_path, tiny_model):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(mid_size_image(200, 300)).save(src / "large.png")
    Image.fromarray(mid_size_image(60, 80)).save(src / "small.png")
    out = tmp_path / "out"
    summary = stylize(make_job(src, out, tiny_model, format="png", tile_above=160, tile_size=128,
                               tile_overlap=32), progress=False)
    assert summary.done == 2 and output_files(out) == ["large.png", "small.png"]
    assert Image.open(out / "large.png").size == (300, 200)


def test_tiles_of_one_image_run_on_several_threads_with_the_same_result(tiny_model, monkeypatch):
    """parallel > 1: a large image's tile batches go to a pool of that many threads, and its
    thumbnail pass runs on all of their threads at once. Each tile's arithmetic does not depend on
    where it runs; the thumbnail's statistics, summed by two threads instead of one, may round
    differently (on a trained network at 2560 px: at most 1 level, in 7 pixels per million)."""
    import threading

    from models import shared_stats
    from tasks.bulk import runners

    pixels = np.asarray(photo(700, 420, seed=3))
    settings = {"tile_size": 128, "tile_overlap": 32, "tile_above": 256, "batch_size": 1}
    one = StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), parallel=1, **settings)
    two = StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), parallel=2, **settings)
    threads = set()
    run_tiles = runners.stylize_tiled

    def spy(pixels, run, **kw):
        def recorded(tiles):
            threads.add(threading.current_thread().name)
            return run(tiles)
        return run_tiles(pixels, recorded, **kw)

    norm_threads = {True: set(), False: set()}   # torch's threads seen by the norms, recording or not
    norm_forward = shared_stats.SharedStatsNorm.forward

    def counted(self, x):
        norm_threads[self.recording].add(torch.get_num_threads())
        return norm_forward(self, x)

    monkeypatch.setattr(runners, "stylize_tiled", spy)
    monkeypatch.setattr(shared_stats.SharedStatsNorm, "forward", counted)
    threads_before = torch.get_num_threads()
    expected = one.stylize_large(pixels)[0]
    assert norm_threads == {True: {threads_before}, False: {threads_before}}
    got = two.stylize_large(pixels)[0]
    assert norm_threads[True] == {threads_before, 2 * threads_before}  # the thumbnail on both passes' threads
    assert norm_threads[False] == {threads_before} and torch.get_num_threads() == threads_before
    assert np.abs(expected.astype(int) - got).max() <= 1
    assert len({t for t in threads if t.startswith("tiles")}) == 2   # both pool threads had tiles


def test_a_thread_whose_first_pass_falls_in_a_thumbnail_pass_keeps_one_pass_threads(tiny_model, monkeypatch):
    """While a large image's thumbnail runs on every pass's threads, torch's default for threads
    that have not run anything yet is doubled; a model thread starting then must still run its
    batches on the engine's threads per pass (not oversubscribe the cores for the rest of the run)."""
    import threading

    from models import shared_stats

    models = StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), tile_size=128, tile_overlap=32,
                         tile_above=256, batch_size=1, parallel=2)
    in_thumbnail, batch_done = threading.Event(), threading.Event()
    norm_forward = shared_stats.SharedStatsNorm.forward

    def held(self, x):  # the thumbnail pass waits until the other thread's batch is through
        if self.recording and not in_thumbnail.is_set():
            in_thumbnail.set()
            batch_done.wait(60)
        return norm_forward(self, x)

    monkeypatch.setattr(shared_stats.SharedStatsNorm, "forward", held)
    seen = {}

    def small_batch():
        in_thumbnail.wait(60)
        models.stylize(np.asarray(photo(96, 64))[None].copy())
        seen["threads"] = torch.get_num_threads()  # (this thread's own)
        batch_done.set()

    other = threading.Thread(target=small_batch)
    other.start()
    models.stylize_large(np.asarray(photo(700, 420, seed=3)))
    other.join()
    assert seen["threads"] == models.pass_threads


@pytest.mark.parametrize(("height", "width", "tile", "overlap", "batch"),
                         [(300, 500, 128, 32, 1), (257, 130, 64, 16, 3), (96, 700, 96, 24, 2), (64, 64, 128, 32, 1)])
def test_tiles_that_change_nothing_give_the_image_back_exactly(height, width, tile, overlap, batch):
    """The blend alone (tiles placed, cross-faded, rows carried from one tile row to the next and
    rounded): a run that returns its tiles unchanged must give every pixel back."""
    pixels = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    got = stylize_tiled(pixels, lambda tiles: tiles.astype(np.float32) / 255, tile=tile, overlap=overlap,
                        batch_size=batch)
    assert got.shape == pixels.shape and np.array_equal(got, pixels)


def test_a_batch_above_the_pass_pixel_cap_runs_in_passes_with_the_same_results(tiny_model, monkeypatch):
    """MAX_PASS_PIXELS (CUDA's 32-bit indexing): a batch, and a large image's tile batches, run in
    passes of at most that many pixels; each image's result is the one it gets in a single pass."""
    import tasks.bulk.runners as runners

    models = StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), tile_size=96, tile_overlap=32,
                         tile_above=160, batch_size=8)
    batch = np.stack([np.array(photo(80, 64, seed=s)) for s in range(5)])
    large = mid_size_image(200, 300)
    whole, tiled_whole = models.stylize(batch)[0], models.stylize_large(large)[0]

    seen: list[int] = []
    net = models.runtimes[0]["torch"]
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda x: seen.append(len(x) * x.shape[-2] * x.shape[-1]) or forward(x))
    monkeypatch.setattr(runners, "MAX_PASS_PIXELS", 2 * 64 * 80)
    split = models.stylize(batch)[0]
    assert seen == [2 * 64 * 80, 2 * 64 * 80, 64 * 80]
    np.testing.assert_allclose(split.astype(int), whole.astype(int), atol=1)

    tile_batches: list[int] = []
    real_tiled = runners.stylize_tiled
    monkeypatch.setattr(runners, "stylize_tiled", lambda *a, **kw: tile_batches.append(kw["batch_size"]) or real_tiled(*a, **kw))
    monkeypatch.setattr(runners, "MAX_PASS_PIXELS", 3 * 96 * 96)
    tiled = models.stylize_large(large)[0]
    assert tile_batches == [3]
    np.testing.assert_allclose(tiled.astype(int), tiled_whole.astype(int), atol=1)
