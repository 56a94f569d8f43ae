"""The forward pass's runtime (tasks/bulk/backends.py): onnxruntime and OpenVINO on the exported
network give the same pixels as PyTorch within 1/255; `auto` times the three on the first batch, keeps
the fastest, records it in each ledger row and remembers it for the next job."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylepipe.errors import StageError
from tasks.bulk import backends
from tasks.bulk.engine import stylize
from tasks.bulk.plan import ModelSpec, weights_sha256
from tests.tasks.bulk.test_support import (ledger_rows, make_job, make_photos, other_model,  # noqa: F401
                                          output_files, save_random_model, tiny_model)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def src(tmp_path):
    folder = tmp_path / "src"
    make_photos(folder, ["a.jpg", "b.png"], size=(96, 64))
    make_photos(folder, ["odd.jpg"], size=(75, 41))    # sides that are not multiples of 4
    make_photos(folder, ["tiny.png"], size=(20, 12))   # below MIN_SIDE: padded, then cropped
    return folder


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("runtime", backends.EXACT_ONNX_RUNTIMES)
def test_the_onnx_runtimes_match_torch_within_one_level(src, tmp_path, tiny_model, runtime):
    runs = {}
    for backend in ("torch", runtime):
        out = tmp_path / backend
        summary = stylize(make_job(src, out, tiny_model, format="png", backend=backend), progress=False)
        assert summary.done == 4 and summary.failed == 0
        runs[backend] = out
    names = output_files(runs["torch"])
    assert names == output_files(runs[runtime]) and len(names) == 4
    worst = max(int(np.abs(pixels(runs["torch"] / n) - pixels(runs[runtime] / n)).max()) for n in names)
    assert worst <= 1, f"max difference {worst}/255"
    assert all(runtime in r["device"] for r in ledger_rows(runs[runtime] / ".stylepipe/ledger.sqlite"))


def test_openvino_runs_in_fp32_with_one_request_per_thread(tiny_model):
    """Exact like onnxruntime (OpenVINO's own default on a CPU with AMX is bf16), and safe to call from
    the engine's passes at once: each thread its own infer request, outputs that the next run does
    not overwrite."""
    net = backends.OnnxNet(Path(tiny_model), weights_sha256(str(tiny_model)), threads=1, runtime="openvino", passes=2)
    assert net.session.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    assert int(net.session.compiled.get_property("NUM_STREAMS")) == 2
    reference = backends.OnnxNet(Path(tiny_model), weights_sha256(str(tiny_model)), threads=1)
    images = [torch.rand(1, 3, 48 + 4 * i, 40, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(net, images))
    for image, result in zip(images, results):
        assert result.shape == image.shape
        assert (result - reference(image)).abs().max() < 1e-4


FIRST_RUNS_AT_ONCE = """
import sys, threading
from pathlib import Path
import numpy as np
from tasks.bulk.backends import OpenVinoGraph

sys.setswitchinterval(1e-6)  # a thread switch at almost every bytecode: the race, nearly every time
graph = OpenVinoGraph(Path(sys.argv[1]), 1, 2)
images = [np.random.rand(1, 3, 64 + 8 * i, 48).astype(np.float32) for i in range(8)]
barrier = threading.Barrier(8)
def first_run(i):
    barrier.wait()
    graph.run(None, {"image": images[i]})
threads = [threading.Thread(target=first_run, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print("done")
"""


def test_openvino_first_runs_on_several_threads_at_once_finish(tiny_model):
    """A fresh process's first OpenVINO runs, eight threads at once: without backends._FIRST_RUN they
    deadlock in OpenVINO's Python binding (8 of 8 such processes hung without it, session 33)."""
    import subprocess
    import sys

    net = backends.OnnxNet(Path(tiny_model), weights_sha256(str(tiny_model)), threads=1)  # (makes the export)
    assert net.session is not None
    path = backends.onnx_path(weights_sha256(str(tiny_model)))
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", FIRST_RUNS_AT_ONCE, str(path)], capture_output=True, text=True,
                              timeout=60, cwd=Path(__file__).resolve().parents[3])
        assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr[-2000:]


def test_a_new_export_removes_the_same_weights_older_exports(src, tmp_path, tiny_model):
    from stylepipe.hashing import sha256_file

    sha = sha256_file(Path(tiny_model) / "model.safetensors")
    folder = backends.onnx_path(sha).parent
    folder.mkdir(parents=True)
    older = [folder / f"{sha[:32]}.onnx", folder / f"{sha[:32]}-r1.onnx"]  # revision 1's name, and a numbered one
    kept = [folder / f"{sha[:32]}-r1-a2b.onnx",     # the same weights, another direction
            folder / f"{'0' * 32}-r1.onnx"]          # other weights
    for path in older + kept:
        path.write_bytes(b"an older export")
    summary = stylize(make_job(src, tmp_path / "out", tiny_model, format="png", backend="onnxruntime"), progress=False)
    assert summary.done == 4 and summary.failed == 0
    assert backends.onnx_path(sha).is_file()
    assert not any(p.exists() for p in older) and all(p.exists() for p in kept)


def test_only_older_revisions_of_the_same_weights_and_direction_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(backends, "EXPORT_REVISION", 3)
    sha = "ab" * 32
    folder = backends.onnx_path(sha).parent
    folder.mkdir(parents=True)
    names = {f"{sha[:32]}.onnx": True, f"{sha[:32]}-r2.onnx": True, f"{sha[:32]}-r3.onnx": False,  # the current one
             f"{sha[:32]}-r4.onnx": False,                                                       # newer: another checkout's
             f"{sha[:32]}-a2b.onnx": False, f"{sha[:32]}-r2-a2b.onnx": False,                    # another direction
             f"{'cd' * 16}-r2.onnx": False,                                                       # other weights
             f"{sha[:32]}-r2-tiles.onnx": True, f"{sha[:32]}-r2-norm-statistics.onnx": True,     # older tile graphs
             f"{sha[:32]}-r3-tiles.onnx": False}
    for name in names:
        (folder / name).write_bytes(b"x")
    removed = backends.remove_older_exports(sha)
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert sorted(p.name for p in folder.iterdir()) == sorted(n for n, gone in names.items() if not gone)
    assert sorted(p.name for p in backends.remove_older_exports(sha, "a2b")) == [f"{sha[:32]}-a2b.onnx",
                                                                                 f"{sha[:32]}-r2-a2b.onnx"]


def test_auto_times_both_records_the_choice_and_remembers_it(src, tmp_path, tiny_model, monkeypatch):
    stylize(make_job(src, tmp_path / "first", tiny_model, format="png", backend="auto"), progress=False)
    known = json.loads((tmp_path / "cache/stylepipe/backends.json").read_text())
    (entry,) = known.values()
    assert set(entry["ms"]) == {"torch", "onnxruntime", "openvino"} and entry["backend"] in entry["ms"]
    assert set(entry["start_ms"]) == {"onnxruntime", "openvino"} and all(v > 0 for v in entry["start_ms"].values())
    assert entry["backend"] == min(entry["ms"], key=entry["ms"].get)
    ran = {r["device"].rsplit(", ", 1)[1].rstrip(")") for r in ledger_rows(tmp_path / "first/.stylepipe/ledger.sqlite")}
    # (a batch of the other pass while the first timed them ran on onnxruntime: see the next tests)
    assert entry["backend"] in ran and ran <= {entry["backend"], "onnxruntime"}
    auto_job_without_timing(src, tmp_path / "second", tiny_model, entry["backend"], monkeypatch)


def auto_job_without_timing(src, out, model, remembered: str, monkeypatch) -> str:
    """An auto job that must run on the remembered choice without timing the runtimes (or, for these
    4 images, on the other ONNX runtime if it starts enough quicker: for_inputs); the runtime it ran."""
    def no_timing(*a, **k):
        raise AssertionError("timed the backends again")

    monkeypatch.setattr(backends, "_median_seconds", no_timing)
    summary = stylize(make_job(src, out, model, format="png", backend="auto"), progress=False)
    ran = summary.run.device.rsplit(", ", 1)[1].rstrip(")")
    assert summary.done == 4 and (ran == remembered or {ran, remembered} <= set(backends.EXACT_ONNX_RUNTIMES))
    return ran


def test_a_model_trained_again_keeps_the_remembered_choice(src, tmp_path, tiny_model, other_model, monkeypatch):
    """other_model is tiny_model's network with other weights under another name, as the nightly's
    retrained model is: its first auto job runs on the choice tiny_model's job made, without timing."""
    assert weights_sha256(str(tiny_model)) != weights_sha256(str(other_model))
    stylize(make_job(src, tmp_path / "first", tiny_model, format="png", backend="auto"), progress=False)
    (entry,) = json.loads((tmp_path / "cache/stylepipe/backends.json").read_text()).values()
    ran = auto_job_without_timing(src, tmp_path / "second", other_model, entry["backend"], monkeypatch)
    # the export carries the weights: the new model's is its own
    assert (ran == "torch") != backends.onnx_path(weights_sha256(str(other_model))).is_file()
    assert len(json.loads((tmp_path / "cache/stylepipe/backends.json").read_text())) == 1


def test_the_network_fingerprint_is_the_network_not_its_weights_or_its_training_record(tmp_path, tiny_model,
                                                                                      other_model):
    def fingerprint(model):
        return backends.network_fingerprint(model, weights_sha256(str(model)))

    def with_sidecar(name, **changes):
        copy = tmp_path / name
        copy.mkdir()
        (copy / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
        sidecar = json.loads((tiny_model / "model.json").read_text())
        (copy / "model.json").write_text(json.dumps({**sidecar, **changes}))
        return copy

    base = fingerprint(tiny_model)
    assert base.startswith("network-") and fingerprint(other_model) == base
    record = {"final_losses": {"total": 1.5}, "train_data_sha256": "ab" * 32, "style_image_sha256": "cd" * 32,
              "seconds": 812.0, "device": "cuda:0", "processes": 4, "model": "candy", "dataset": "coco",
              "code_version": "0.2.0+abc"}
    assert fingerprint(with_sidecar("recorded", **record)) == base
    assert fingerprint(with_sidecar("nearest", upsample="nearest")) != base      # the same tensors, another decoder
    assert fingerprint(save_random_model(tmp_path / "slim", "slim")) != base      # other tensors
    broken = with_sidecar("broken")
    for header in (b"\xff" * 8 + b"{}",                                   # a length past the cap
                   (2).to_bytes(8, "little") + b"[]",                      # not a mapping
                   (8).to_bytes(8, "little") + b'{"a": 1}',                 # an entry not a mapping
                   (23).to_bytes(8, "little") + b'{"a": {"dtype": "F32"}}',  # no shape
                   (100_000).to_bytes(8, "little") + b"[" * 100_000):      # nested too deep for json
        (broken / "model.safetensors").write_bytes(header)
        assert fingerprint(broken) == weights_sha256(str(broken)), header[:12]
    nested = with_sidecar("nested")
    (nested / "model.json").write_text("[" * 100_000)
    assert fingerprint(nested) == weights_sha256(str(nested))
    (with_sidecar("no-sidecar") / "model.json").unlink()
    assert fingerprint(tmp_path / "no-sidecar") == weights_sha256(str(tmp_path / "no-sidecar"))


def test_a_sidecar_nested_too_deeply_stops_the_job_with_a_clear_error(src, tmp_path, tiny_model):
    """A hostile model folder: every reader of its sidecar (lean's, the fingerprint's, the layout key's,
    the family's lookup) lets load_model say what is wrong, instead of a RecursionError escaping."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    (bad / "model.json").write_text("[" * 100_000)
    with pytest.raises(StageError, match="not a valid JSON sidecar: nested too deeply"):
        stylize(make_job(src, tmp_path / "out", bad, backend="auto", layout="auto", batch_size=None), progress=False)


def test_the_chooser_keeps_the_faster():
    chooser = backends.Chooser("auto", ["a model"])
    runs = {"torch": lambda x: time.sleep(0.02), "onnxruntime": lambda x: x}
    assert chooser.choose(runs, torch.zeros(1)) == "onnxruntime"
    assert chooser.timings["torch"] > chooser.timings["onnxruntime"]
    assert backends.Chooser("auto", ["a model"]).chosen == "onnxruntime"   # remembered
    assert backends.Chooser("auto", ["another"]).chosen is None
    path = backends.cache_dir() / "backends.json"
    path.write_text(path.read_text().replace('"onnxruntime"', '"torch-bf16"'))  # a hand-edited file
    assert backends.Chooser("auto", ["a model"]).chosen is None                 # auto never runs a lossy one


def test_a_small_job_weighs_each_runtimes_start(monkeypatch):
    """Chooser.for_inputs: the least start plus runs per pass among the ONNX runtimes; torch, a
    choice without measured starts, or an unreadable entry keep the remembered choice."""
    chooser = backends.Chooser("auto", ["small jobs"])
    chooser.chosen = "openvino"
    chooser.timings = {"torch": 0.25, "onnxruntime": 0.15, "openvino": 0.12}
    chooser.starts = {"onnxruntime": 0.05, "openvino": 0.45}
    chooser._remember()
    assert chooser.for_inputs(1, 2) == "onnxruntime"       # 200 against 570 ms
    assert chooser.for_inputs(28, 2) == "openvino"         # 14 per pass: 2150 against 2130 ms
    assert chooser.for_inputs(26, 2) == "onnxruntime"      # 13 per pass: 2000 against 2010
    assert chooser.for_inputs(1, 1) == "onnxruntime"
    assert chooser.for_inputs(28, 2, batch=2) == "onnxruntime"  # 7 batches per pass: 1100 against 1290
    chooser.starts = {"onnxruntime": 0.05}
    chooser._remember()
    assert chooser.for_inputs(1, 2) == "openvino"          # no start measured for the choice: kept
    chooser.chosen = "torch"
    assert chooser.for_inputs(1, 2) == "torch"


def test_a_new_layout_keeps_the_chosen_runtime_and_remakes_what_the_layout_changes(tiny_model):
    """StyleModels.set_layout: auto's runtimes that lost are dropped, openvino is compiled again for new
    passes (its streams), onnxruntime's sessions only for new threads."""
    from tasks.bulk.runners import StyleModels

    def runtimes_after(chosen, passes, threads):
        models = StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), tile_size=64, tile_overlap=16,
                             tile_above=4096, batch_size=1, backend="auto", parallel=2)
        runtimes = models.runtimes[0]
        assert set(runtimes) == {"torch", *backends.EXACT_ONNX_RUNTIMES}  # (auto never times the lossy ones)
        models.choosers[0].chosen = chosen
        before = {name: runtime.net for name, runtime in runtimes.items() if name != "torch"}
        models.set_layout(passes, threads, 1)
        return before, runtimes

    before, runtimes = runtimes_after("openvino", 1, 1)       # fewer passes, the same thread
    assert set(runtimes) == {"torch", "openvino"} and runtimes["openvino"].net is not before["openvino"]
    assert int(runtimes["openvino"].net.session.compiled.get_property("NUM_STREAMS")) == 1
    before, runtimes = runtimes_after("onnxruntime", 1, 1)
    assert set(runtimes) == {"torch", "onnxruntime"} and runtimes["onnxruntime"].net is before["onnxruntime"]
    before, runtimes = runtimes_after("onnxruntime", 2, 2)    # more threads: a new session
    assert runtimes["onnxruntime"].net is not before["onnxruntime"]
    assert set(runtimes_after("torch", 1, 1)[1]) == {"torch"}


def test_auto_goes_on_without_a_runtime_that_cannot_load_the_network(src, tmp_path, tiny_model, monkeypatch,
                                                                    caplog):
    def broken(*a, **k):
        raise RuntimeError("no CPU plugin here")

    monkeypatch.setattr(backends, "OpenVinoGraph", broken)
    summary = stylize(make_job(src, tmp_path / "auto", tiny_model, format="png", backend="auto"), progress=False)
    assert summary.done == 4 and "auto without openvino, which could not load the network: RuntimeError" in caplog.text
    (entry,) = json.loads((tmp_path / "cache/stylepipe/backends.json").read_text()).values()
    assert set(entry["ms"]) == {"torch", "onnxruntime"}
    with pytest.raises(StageError, match="backend openvino: RuntimeError: no CPU plugin here"):
        stylize(make_job(src, tmp_path / "asked", tiny_model, format="png", backend="openvino"), progress=False)


def test_the_chooser_times_the_backends_in_turns(monkeypatch):
    """Warm-ups, then the timed runs alternating, so that a slow spell is shared, not one backend's."""
    monkeypatch.setattr(backends, "CALIBRATION_DROP", float("inf"))  # (none dropped as clearly slower)
    calls = []
    runs = {name: (lambda x, name=name: calls.append(name)) for name in ("torch", "onnxruntime")}
    backends.Chooser("auto", ["turns"]).choose(runs, torch.zeros(1))
    assert calls == ["torch", "onnxruntime"] * (1 + backends.CALIBRATION_RUNS)


def test_a_runtime_clearly_slower_twice_is_not_timed_again():
    """Its warm-up and first timed run both 1.5x the fastest's: not timed again (it cannot win)."""
    calls = []
    slow = {"torch": 0.1, "onnxruntime": 0.0}
    runs = {name: (lambda x, name=name: (calls.append(name), time.sleep(slow[name]))) for name in slow}
    chooser = backends.Chooser("auto", ["dropped"])
    assert chooser.choose(runs, torch.zeros(1)) == "onnxruntime"
    assert calls.count("torch") == 2 and calls.count("onnxruntime") == 1 + backends.CALIBRATION_RUNS
    assert chooser.timings["torch"] > backends.CALIBRATION_DROP * chooser.timings["onnxruntime"]


def test_other_passes_work_through_the_calibration_and_their_rows_say_on_what(src, tmp_path, tiny_model,
                                                                              monkeypatch):
    """While one pass times the runtimes on its batch, the other pass runs its batches on onnxruntime
    (Chooser.choose's wait=False) instead of waiting; each ledger row names the runtime that made it."""
    went_on = threading.Event()
    choose = backends.Chooser.choose

    def watched(self, runs, x, wait=True):
        chosen = choose(self, runs, x, wait)
        if not wait and self.chosen is None:  # another pass holds the calibration
            went_on.set()
        return chosen

    def calibration(runs, x, warm_up):  # holds the calibration until a batch has gone on without it
        assert went_on.wait(60)
        return {"torch": 0.3, "onnxruntime": 0.2, "openvino": 0.1}

    monkeypatch.setattr(backends.Chooser, "choose", watched)
    monkeypatch.setattr(backends, "_median_seconds", calibration)
    job = make_job(src, tmp_path / "out", tiny_model, format="png", backend="auto", parallel_batches=2, threads=1)
    assert stylize(job, progress=False).done == 4
    ran = [r["device"].rsplit(", ", 1)[1].rstrip(")") for r in ledger_rows(tmp_path / "out/.stylepipe/ledger.sqlite")]
    assert "onnxruntime" in ran and "openvino" in ran and set(ran) <= {"onnxruntime", "openvino"}
    (entry,) = json.loads((tmp_path / "cache/stylepipe/backends.json").read_text()).values()
    assert entry["backend"] == "openvino"


def test_families_without_an_onnx_export_run_on_torch():
    cpu = torch.device("cpu")
    assert backends.check_backend("auto", "johnson", cpu) == "auto"
    assert backends.check_backend("auto", "adain", cpu) == "torch"
    assert backends.check_backend("auto", "johnson", torch.device("cuda")) == "torch"
    with pytest.raises(StageError, match="no ONNX export"):
        backends.check_backend("onnxruntime", "dcgan", cpu)
    with pytest.raises(StageError, match="openvino: the dcgan family has no ONNX export"):
        backends.check_backend("openvino", "dcgan", cpu)
    with pytest.raises(StageError, match="openvino runs here on the CPU only"):
        backends.check_backend("openvino", "johnson", torch.device("cuda"))
    with pytest.raises(StageError, match="openvino-bf16: the dcgan family has no ONNX export"):
        backends.check_backend("openvino-bf16", "dcgan", cpu)


def test_a_new_layout_remakes_openvino_for_new_streams_at_either_precision():
    for runtime in ("openvino", "openvino-bf16"):
        assert backends.remade_for_layout(runtime, (2, 1), (1, 1)) and backends.remade_for_layout(runtime, (2, 1), (2, 2))
        assert not backends.remade_for_layout(runtime, (2, 1), (2, 1))
    assert not backends.remade_for_layout("onnxruntime", (2, 1), (1, 1))
    assert backends.remade_for_layout("onnxruntime", (2, 1), (2, 2))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as OpenVINO's CPU plugin reports it."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize("lossy", ["torch-bf16", "openvino-bf16"])
def test_bf16_is_close_to_fp32_and_part_of_the_outputs_identity(src, tmp_path, tiny_model, lossy):
    """The bf16 backends are lossy: their outputs stay close to fp32's (the bound here is this tiny random
    network's; benchmarks/bench_stylize.py reports real models' differences), and switching a job
    between one and fp32 redoes the images instead of keeping the other's outputs. (openvino-bf16's
    second job runs torch-free, on the export its first one made.)"""
    from tasks.bulk.lean import LeanModels, lean_models

    out = tmp_path / "out"
    fp32 = tmp_path / "fp32"
    assert stylize(make_job(src, fp32, tiny_model, format="png", backend="torch"), progress=False).done == 4
    assert stylize(make_job(src, out, tiny_model, format="png", backend=lossy), progress=False).done == 4
    names = output_files(out)
    diffs = [np.abs(pixels(fp32 / n) - pixels(out / n)) for n in names]
    worst = max(int(d.max()) for d in diffs)
    assert worst <= 24 and (worst > 0 or (lossy == "openvino-bf16" and not cpu_has_bf16()))
    if lossy == "openvino-bf16" and cpu_has_bf16():
        net = backends.OnnxNet(Path(tiny_model), weights_sha256(str(tiny_model)), 1, runtime=lossy)
        assert net.session.precision == "bf16"
    assert np.mean([d.mean() for d in diffs]) < 3
    rows = ledger_rows(out / ".stylepipe/ledger.sqlite")
    assert all(r["device"].endswith(f", {lossy})") for r in rows)
    again = stylize(make_job(src, out, tiny_model, format="png", backend=lossy), progress=False)
    assert again.run.processed == 0                                   # resumed: nothing to redo
    other_job = make_job(src, tmp_path / "other", tiny_model, format="png", backend=lossy)
    assert isinstance(lean_models(other_job), LeanModels) == (lossy == "openvino-bf16")
    other = stylize(other_job, progress=False)
    assert other.run.device.endswith(f", {lossy})") and max(
        int(np.abs(pixels(out / n) - pixels(tmp_path / "other" / n)).max()) for n in names) <= 1
    switched = stylize(make_job(src, out, tiny_model, format="png", backend="torch"), progress=False)
    assert switched.run.processed == 4
    assert all(np.array_equal(pixels(fp32 / n), pixels(out / n)) for n in names)


def test_openvino_bf16_warns_once_where_the_cpu_has_no_native_bf16(tiny_model, monkeypatch, caplog):
    import openvino as ov

    real = ov.Core.get_property
    monkeypatch.setattr(ov.Core, "get_property", lambda self, *a: [] if a == ("CPU", "OPTIMIZATION_CAPABILITIES")
                        else real(self, *a))
    monkeypatch.setattr(backends, "_WARNED", set())
    for passes in (2, 1):  # (a new layout compiles again: still one warning)
        backends.OnnxNet(Path(tiny_model), weights_sha256(str(tiny_model)), 1, runtime="openvino-bf16", passes=passes)
    backends.OnnxNet(Path(tiny_model), weights_sha256(str(tiny_model)), 1, runtime="openvino")
    assert caplog.text.count("openvino-bf16: this CPU") == 1


def stylize_without_torch(src, model, out, *options: str, backend: str = "onnxruntime") -> None:
    """`stylepipe stylize SRC --backend BACKEND --format png` in a fresh process: it must work
    without importing PyTorch."""
    import os
    import subprocess
    import sys

    args = ["stylize", str(src), "--model", str(model), "--out", str(out), "--backend", backend, "--format",
            "png", "--workers", "0", "--quiet", *options]
    code = f"import sys; from stylepipe.cli import main; rc = main({args!r}); print(rc, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[3], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr[-2000:]


def test_a_job_on_a_cached_export_runs_without_importing_torch(src, tmp_path, tiny_model):
    """tasks/bulk/lean.py: once a job has exported the network, later onnxruntime jobs (and auto
    jobs that remember choosing it) never import PyTorch, and write what the torch path writes."""
    from tasks.bulk.lean import LeanModels, lean_models
    from tasks.bulk.plan import ModelSpec

    spec = ModelSpec(str(tiny_model), strength=0.7, preserve_colors=True)
    first = stylize(make_job(src, tmp_path / "torch-path", spec, format="png", backend="onnxruntime"), progress=False)
    assert first.done == 4                                              # made the export, through PyTorch
    names = output_files(tmp_path / "torch-path")
    for runtime in backends.EXACT_ONNX_RUNTIMES:
        stylize_without_torch(src, tiny_model, tmp_path / runtime, "--batch-size", "2", "--strength", "0.7",
                              "--preserve-colors", "yes", backend=runtime)
        assert output_files(tmp_path / runtime) == names
        assert max(int(np.abs(pixels(tmp_path / "torch-path" / n) - pixels(tmp_path / runtime / n)).max())
                   for n in names) <= 1
        devices = {r["device"] for r in ledger_rows(tmp_path / runtime / ".stylepipe/ledger.sqlite")}
        assert devices and all(d.endswith(f", {runtime})") for d in devices), devices

    auto = make_job(src, tmp_path / "auto", tiny_model, backend="auto")
    assert lean_models(auto) is None                                    # auto has not chosen yet
    stylize(auto, progress=False)
    chosen = json.loads((tmp_path / "cache/stylepipe/backends.json").read_text())
    assert isinstance(lean_models(auto), LeanModels) == (next(iter(chosen.values()))["backend"] in backends.EXACT_ONNX_RUNTIMES)
    assert lean_models(make_job(src, tmp_path / "t", tiny_model, backend="torch")) is None

    # a small job weighs each runtime's start: OpenVINO's faster runs repay its slower start only over enough images
    (key,) = chosen
    chosen[key].update(backend="openvino", ms={"torch": 250, "onnxruntime": 150, "openvino": 120},
                       start_ms={"onnxruntime": 50, "openvino": 450})
    (tmp_path / "cache/stylepipe/backends.json").write_text(json.dumps(chosen))
    per_round = lean_models(auto).parallel * lean_models(auto).batch_size   # images a round of batches takes
    assert lean_models(auto, inputs=1).runtimes == ["onnxruntime"]
    assert lean_models(auto, inputs=per_round * 14).runtimes == ["openvino"]     # 14 x 30 ms repay 400
    assert lean_models(auto, inputs=per_round * 13).runtimes == ["onnxruntime"]
    assert lean_models(auto).runtimes == ["openvino"]                        # the count unknown: the choice


def test_large_images_tile_on_onnxruntime_and_without_torch_once_exported(tmp_path, tiny_model, monkeypatch):
    """Tiles run on the backend the model runs on: on onnxruntime through the tile graphs
    (models/export.py export_tile_graphs), within one level of PyTorch's tiles; once exported, the
    lean runner tiles without importing PyTorch, its tiles on every pass."""
    from tasks.bulk import lean
    from tasks.bulk.lean import lean_models
    from tasks.bulk.runners import StyleModels
    from tasks.bulk.tiling import statistics_image

    folder = tmp_path / "big"
    make_photos(folder, ["wide.png"], size=(600, 80))  # 2 x 14 tiles: their statistics as constants
    make_photos(folder, ["small.png"], size=(96, 64))
    settings = {"format": "png", "tile_above": 128, "tile_size": 64, "tile_overlap": 16}
    spec = ModelSpec(str(tiny_model), strength=0.8, preserve_colors=True)
    onnx_runs = []
    original = StyleModels._onnx_tile_run
    monkeypatch.setattr(StyleModels, "_onnx_tile_run", lambda self, *a: onnx_runs.append(original(self, *a))
                        or onnx_runs[-1])
    outs = {}
    for backend in ("torch", "onnxruntime"):  # onnxruntime's first job: StyleModels, which exports
        outs[backend] = tmp_path / backend
        assert stylize(make_job(folder, outs[backend], spec, backend=backend, **settings), progress=False).done == 2
    assert [run is not None for run in onnx_runs] == [False, True]  # torch's tiles, then the graphs'
    assert max(int(np.abs(pixels(outs["torch"] / n) - pixels(outs["onnxruntime"] / n)).max())
               for n in ("wide.png", "small.png")) <= 1
    with monkeypatch.context() as m:  # openvino's tiles in StyleModels: onnxruntime's tile graphs too
        m.setattr("tasks.bulk.lean.lean_models", lambda *a, **k: None)
        out = tmp_path / "openvino"
        assert stylize(make_job(folder, out, spec, backend="openvino", **settings), progress=False).done == 2
    assert onnx_runs[-1] is not None
    assert max(int(np.abs(pixels(outs["torch"] / n) - pixels(out / n)).max()) for n in ("wide.png", "small.png")) <= 1
    statistics, tiles = backends.tile_graph_paths(weights_sha256(str(tiny_model)))
    assert statistics.is_file() and tiles.is_file()

    stylize_without_torch(folder, tiny_model, tmp_path / "lean", "--tile-above", "128", "--tile-size", "64",
                          "--tile-overlap", "16", "--strength", "0.8", "--preserve-colors", "yes")
    assert np.abs(pixels(outs["torch"] / "wide.png") - pixels(tmp_path / "lean/wide.png")).max() <= 1
    stylize_without_torch(folder, tiny_model, tmp_path / "lean-openvino", "--tile-above", "128", "--tile-size", "64",
                          "--tile-overlap", "16", "--strength", "0.8", "--preserve-colors", "yes", backend="openvino")
    assert np.abs(pixels(outs["torch"] / "wide.png") - pixels(tmp_path / "lean-openvino/wide.png")).max() <= 1

    runner = lean_models(make_job(folder, tmp_path / "y", spec, backend="onnxruntime", parallel_batches=2, **settings))
    assert runner.needs_tiles(80, 600)
    wide = np.asarray(Image.open(folder / "wide.png").convert("RGB"))
    sources = []
    monkeypatch.setattr(lean, "statistics_image", lambda p, side: sources.append((p.shape, side)) or statistics_image(p, side))
    assert np.abs(runner.stylize_large(wide)[0].astype(int) - pixels(tmp_path / "lean/wide.png")).max() <= 1
    assert sources == [((80, 600, 3), 128)]  # the statistics from tiling.statistics_image, at tile_above
    assert runner.tile_pool._max_workers == runner.parallel == 2  # its tiles run on every pass


def test_tile_sessions_take_the_statistics_as_constants_folded_into_the_convolutions(tmp_path, tiny_model):
    """OnnxTiles runs an image's tiles on the tile graph with its statistics written in: the same
    results as with the statistics as inputs, and onnxruntime then folds every norm's multiply and
    add into a convolution (what the speed-up rests on)."""
    import onnx
    import onnxruntime as ort

    from tasks.bulk.lean import OnnxTiles, to_float

    sha = weights_sha256(str(tiny_model))
    backends.OnnxNet(Path(tiny_model), sha, 1)
    statistics_path, tiles_path = backends.ensure_tile_graphs(Path(tiny_model), sha)
    tiles = OnnxTiles(statistics_path, tiles_path, 1, 1)
    rng = np.random.default_rng(0)
    statistics = tiles.record(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    assert statistics and all(np.ptp(v) > 0 for v in statistics.values())
    x = to_float(rng.integers(0, 256, (1, 64, 72, 3), dtype=np.uint8))
    fed = backends.onnx_session(tiles_path, 1).run(None, {"image": x, **statistics})[0]
    baked = tiles.with_statistics(statistics)
    assert [i.name for i in baked.get_inputs()] == ["image"]
    np.testing.assert_allclose(baked.run(None, {"image": x})[0], fed, atol=1e-5)

    def optimized_ops(model: bytes | str) -> list[str]:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]

    before, after = optimized_ops(str(tiles_path)), optimized_ops(baked.path)
    norms = len(statistics) // 2
    assert before.count("Mul") == norms
    assert after.count("Mul") == 0 and after.count("Add") == before.count("Add") - norms  # the residual adds stay

    # passes of two threads each: a session per calling thread, all with this image's statistics
    spec = ModelSpec(str(tiny_model))
    expected = np.clip(fed, 0, 1).transpose(0, 2, 3, 1)
    run = OnnxTiles(statistics_path, tiles_path, 2, 2).runner(statistics, spec, OnnxTiles.CONSTANTS_FROM_TILES)
    tile = (x * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    with ThreadPoolExecutor(2) as pool:
        for result in pool.map(run, [tile] * 4):
            np.testing.assert_allclose(result, expected, atol=1e-5)


def test_tiles_keep_their_statistics_as_inputs_when_few_or_when_the_rewritten_graph_fails(tiny_model, monkeypatch,
                                                                                         caplog):
    """An image of few tiles runs them on the exported graph, its statistics as inputs (a session of
    its own would cost more than it saves); so does one whose rewritten graph onnxruntime refuses."""
    from tasks.bulk.lean import OnnxTiles

    sha = weights_sha256(str(tiny_model))
    backends.OnnxNet(Path(tiny_model), sha, 1)
    tiles = OnnxTiles(*backends.ensure_tile_graphs(Path(tiny_model), sha), 1, 1)
    statistics = tiles.record(np.full((64, 64, 3), 128, np.uint8))
    tile = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    spec, few, many = ModelSpec(str(tiny_model)), OnnxTiles.CONSTANTS_FROM_TILES - 1, OnnxTiles.CONSTANTS_FROM_TILES
    expected = tiles.runner(statistics, spec, few)(tile)
    np.testing.assert_allclose(tiles.runner(statistics, spec, many)(tile), expected, atol=1e-5)

    made = []

    def refused(statistics):
        made.append(statistics)
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : a graph it cannot load")
    monkeypatch.setattr(tiles, "with_statistics", refused)
    np.testing.assert_allclose(tiles.runner(statistics, spec, few)(tile), expected, atol=1e-5)
    assert made == [] and "graph with them as constants failed" not in caplog.text
    np.testing.assert_allclose(tiles.runner(statistics, spec, many)(tile), expected, atol=1e-5)
    assert len(made) == 1
    assert "tile statistics as inputs, the graph with them as constants failed: RuntimeError" in caplog.text


def test_an_auto_job_whose_first_input_is_tiled_chooses_on_it(tmp_path, tiny_model):
    folder = tmp_path / "big"
    make_photos(folder, ["wide.png"], size=(300, 80))
    out = tmp_path / "out"
    summary = stylize(make_job(folder, out, tiny_model, backend="auto", tile_above=128, tile_size=64,
                               tile_overlap=16), progress=False)
    assert summary.done == 1
    chosen = next(iter(json.loads((tmp_path / "cache/stylepipe/backends.json").read_text()).values()))
    assert set(chosen["ms"]) == {"torch", "onnxruntime", "openvino"}
    assert chosen["backend"] in ledger_rows(out / ".stylepipe/ledger.sqlite")[0]["device"]


# (cores, parallel_batches, threads, batch_size) -> (passes, threads per pass, batch): pinned, so that
# the torch-free layout (lean.cpu_layout) and the engine's (runners.configure_parallelism) agree
LAYOUTS = [
    ((1, None, None, None), (1, 1, 1)),
    ((2, None, None, None), (2, 1, 1)),
    ((2, 1, None, None), (1, 2, 1)),
    ((2, None, 2, 3), (2, 2, 3)),
    ((3, 2, None, None), (2, 1, 1)),
    ((4, 8, None, None), (8, 1, 1)),     # more passes than cores: still one thread each
    ((12, None, None, None), (8, 1, 1)),  # at most 8 passes by default
    ((16, None, None, None), (8, 2, 1)),
    ((32, None, None, 4), (8, 4, 4)),
    ((64, 3, None, None), (3, 21, 1)),
]


@pytest.mark.parametrize(("given", "layout"), LAYOUTS)
def test_the_cpu_layout_is_the_same_with_or_without_torch(given, layout, monkeypatch):
    from stylepipe.config import StylizeParams
    from tasks.bulk import lean, runners

    cores, parallel, threads, batch = given
    for module in (lean, runners):
        monkeypatch.setattr(module, "cpu_count", lambda: cores, raising=False)
    params = StylizeParams(parallel_batches=parallel, threads=threads, batch_size=batch)
    assert lean.cpu_layout(params) == layout
    before = torch.get_num_threads()
    try:
        assert runners.configure_parallelism(torch.device("cpu"), parallel, threads) == layout[0]
        assert torch.get_num_threads() == layout[1]
    finally:
        torch.set_num_threads(before)
    assert (batch or runners.default_batch_size(torch.device("cpu"))) == layout[2]


def test_an_auto_job_that_falls_back_to_pytorch_hashes_the_weights_once_more_than_the_plan(src, tmp_path,
                                                                                          tiny_model, monkeypatch):
    """The plan hashes the weights (the ledger identity); the runner once more (the remembered
    choice's key, the export's name), whichever runner takes it: an `auto` job the lean path hands
    over to StyleModels (nothing remembered yet, or torch remembered) does not hash them again."""
    from tasks.bulk import plan as planning

    hashed = []
    real = planning.sha256_file
    monkeypatch.setattr(planning, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    remembered = tmp_path / "cache/stylepipe/backends.json"
    for run in ("first", "second"):  # the first times both backends; the second remembers torch
        if run == "second":
            known = json.loads(remembered.read_text())
            remembered.write_text(json.dumps({key: {**entry, "backend": "torch"} for key, entry in known.items()}))
        hashed.clear()
        summary = stylize(make_job(src, tmp_path / run, tiny_model, format="png", backend="auto", device="cpu"),
                          progress=False)
        assert summary.done == 4 and summary.failed == 0
        assert hashed == [planning.WEIGHTS_FILE] * 2, run
    devices = {r["device"] for r in ledger_rows(tmp_path / "second/.stylepipe/ledger.sqlite")}
    assert devices and all(d.endswith(", torch)") for d in devices), devices  # the second ran on PyTorch, as remembered


def test_the_lean_conversions_are_the_torch_runners_bit_for_bit():
    """lean.to_float / to_uint8 (numpy, a channel at a time) against runners.StyleModels' torch
    conversions, on odd sizes and values outside [0, 1] (a network's raw output)."""
    from tasks.bulk.lean import to_float, to_uint8
    from tasks.bulk.runners import StyleModels

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    assert np.array_equal(to_float(pixels), torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255).numpy())
    raw = rng.normal(0.5, 0.6, (2, 3, 40, 61)).astype(np.float32)
    for y in (raw, raw[..., 1:38, 2:59]):  # a cropped (padded network's) view too
        ours = to_uint8(y)
        assert ours.flags.c_contiguous and ours.shape == (2, *y.shape[2:], 3)
        assert np.array_equal(ours, StyleModels._to_uint8(torch.from_numpy(np.ascontiguousarray(y))))


def test_tile_graphs_that_cannot_be_made_leave_the_tiles_on_torch(tmp_path, tiny_model, monkeypatch, caplog):
    folder = tmp_path / "big"
    make_photos(folder, ["wide.png"], size=(300, 80))
    settings = {"format": "png", "tile_above": 128, "tile_size": 64, "tile_overlap": 16}
    stylize(make_job(folder, tmp_path / "torch", tiny_model, backend="torch", **settings), progress=False)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backends, "ensure_tile_graphs", full_disk)
    for run in ("first", "lean"):  # StyleModels (it makes the network's export), then the lean runner
        summary = stylize(make_job(folder, tmp_path / run, tiny_model, backend="onnxruntime", **settings), progress=False)
        assert summary.done == 1 and summary.failed == 0
        assert np.abs(pixels(tmp_path / "torch/wide.png") - pixels(tmp_path / run / "wide.png")).max() <= 1
    assert caplog.text.count("tiles on torch, the ONNX tile graphs failed: OSError") == 2


def test_a_missing_statistics_graph_is_made_again(tmp_path, tiny_model):
    sha = weights_sha256(str(tiny_model))
    statistics, tiles = backends.ensure_tile_graphs(Path(tiny_model), sha)
    statistics.unlink()
    assert backends.ensure_tile_graphs(Path(tiny_model), sha) == (statistics, tiles) and statistics.is_file()


def test_compile_runs_the_torch_networks_compiled(tmp_path, tiny_model, monkeypatch):
    """StylizeParams.compile: untiled batches run through torch.compile's module (its default
    backend, inductor, is PyTorch's to test and takes 40 s to compile here: the wiring is tested
    with dynamo's eager backend), to the same outputs; a short batch is filled up to a full one
    (one compiled shape per image size) and its results cut back, a lone image is not (a failed
    batch is retried image by image); the job skips the lean runner and the layout measurement
    (which would time the compiling)."""
    from tasks.bulk import layout, runners

    monkeypatch.setattr(runners, "COMPILE_OPTIONS", {"backend": "eager", "dynamic": False})
    calls, used = [], []
    real_compile = torch.compile

    class Counted(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            used.append(len(x))
            return self.module(x)
    monkeypatch.setattr(torch, "compile", lambda net, **kw: calls.append(kw) or Counted(real_compile(net, **kw)))
    src = tmp_path / "src"
    make_photos(src, [f"{i}.jpg" for i in range(5)])
    compiled = stylize(make_job(src, tmp_path / "compiled", tiny_model, compile=True, backend="torch", batch_size=3),
                       progress=False)
    eager = stylize(make_job(src, tmp_path / "eager", tiny_model, backend="torch"), progress=False)
    assert calls == [{"backend": "eager", "dynamic": False}] and used == [3, 3]  # 5 images, batch 3
    assert compiled.done == eager.done == 5
    for name in output_files(tmp_path / "eager"):
        a, b = (np.asarray(Image.open(tmp_path / d / name), np.int16) for d in ("compiled", "eager"))
        assert np.abs(a - b).max() <= 1
    from stylepipe.config import StylizeParams
    monkeypatch.setattr(layout, "surely_no_cuda", lambda: True)
    assert not layout.applies(StylizeParams(layout="auto", compile=True))
    # auto with compile runs torch: no ONNX session, no timing, nothing remembered for later jobs
    models = runners.StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), tile_size=64, tile_overlap=16,
                                 tile_above=128, batch_size=1, backend="auto", compile=True)
    assert list(models.runtimes[0]) == ["torch"] and models.choosers[0].chosen == "torch"
    short = runners.StyleModels([ModelSpec(str(tiny_model))], torch.device("cpu"), tile_size=64, tile_overlap=16,
                                tile_above=128, batch_size=4, backend="torch", compile=True)
    used.clear()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    assert [r.shape for r in short.stylize(pixels)] == [(2, 64, 96, 3)] and used == [4]
    assert [r.shape for r in short.stylize(pixels[:1])] == [(1, 64, 96, 3)] and used == [4, 1]
