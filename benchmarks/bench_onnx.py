"""onnxruntime vs PyTorch on the CPU: one image through an exported network, median of --reps
timed runs after two warm-up runs (the runtimes alternate), for 1 thread and for every core;
and the size of each network's .onnx file. "onnxruntime, plain" is the export without its
phase-split output conv (models/export.py PhaseSplitConv), timed in the same rounds; "openvino" is the
export on OpenVINO's CPU plugin as the `openvino` backend compiles it (f32 inference precision), and
with --openvino-bf16 also at OpenVINO's bf16 precision (its default on CPUs with AMX or AVX512-BF16;
lossy: the max difference from PyTorch is printed, on random weights). With --int8,
also the export quantised to int8 by onnxruntime's static quantisation (QDQ, per-channel int8
weights, uint8 activations calibrated on four random images), in the same rounds: it is the
quantised graph's speed, not its quality (random weights).

    python benchmarks/bench_onnx.py --size 512 --reps 7 --networks slim fast classic [--int8]

Random (seeded) weights: speed and size do not depend on training.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_stylize import OtherLoad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--networks", nargs="+", default=["slim", "fast", "classic"],
                        help="johnson networks (slim, fast, classic), and cyclegan: the family's default generator, a2b")
    parser.add_argument("--int8", action="store_true", help="also time a static int8 (QDQ) quantisation")
    parser.add_argument("--openvino-bf16", action="store_true", help="also time OpenVINO at bf16 precision")
    args = parser.parse_args()

    import onnxruntime as ort
    import openvino as ov
    import torch

    from models.export import export_onnx
    from models.johnson.network import DEFAULT_UPSAMPLE, build_network
    from models.weights import load_model, save_model

    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            torch.manual_seed(0)
            if name == "cyclegan":
                save_cyclegan(Path(tmp) / name)
            else:
                save_model(Path(tmp) / name, build_network(name), {"network": name, "upsample": DEFAULT_UPSAMPLE[name]})
            path = export_onnx(Path(tmp) / name, Path(tmp) / f"{name}.onnx")
            plain = export_onnx(Path(tmp) / name, Path(tmp) / f"{name}-plain.onnx", phase_split=False)
            int8 = quantised(path, Path(tmp) / f"{name}-int8.onnx", args.size) if args.int8 else None
            net, _ = load_model(Path(tmp) / name)
            if name == "cyclegan":
                net = net.set_direction("a2b").eval()
            print(f"{name}: {path.name} {path.stat().st_size:,} bytes "
                  f"({(Path(tmp) / name / 'model.safetensors').stat().st_size:,} as safetensors)")
            for threads in sorted({1, os.cpu_count() or 1}):
                torch.set_num_threads(threads)
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                plain_session = ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
                runs = {"pytorch": lambda: net(image),
                        "onnxruntime": lambda: session.run(None, {"image": image.numpy()}),
                        "plain": lambda: plain_session.run(None, {"image": image.numpy()})}
                if int8:
                    int8_session = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
                    runs["int8"] = lambda: int8_session.run(None, {"image": image.numpy()})
                for precision in ["f32", *(["bf16"] if args.openvino_bf16 else [])]:
                    compiled = ov.Core().compile_model(str(path), "CPU", {
                        "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
                        "ENABLE_CPU_PINNING": False})  # (backends.OpenVinoGraph's settings, one pass)
                    request = compiled.create_infer_request()
                    runs[f"openvino {precision}"] = lambda request=request: request.infer({"image": image.numpy()})[0]
                times: dict[str, list[float]] = {k: [] for k in runs}
                with torch.inference_mode(), OtherLoad() as load:
                    for rep in range(args.reps + 2):
                        for key, run in runs.items():
                            t0 = time.perf_counter()
                            run()
                            if rep >= 2:
                                times[key].append(time.perf_counter() - t0)
                med = {k: statistics.median(v) * 1000 for k, v in times.items()}
                spread = {k: f"{min(v) * 1000:.0f}-{max(v) * 1000:.0f}" for k, v in times.items()}
                print(f"  {threads} thread(s), {args.size}x{args.size}: pytorch {med['pytorch']:.0f} ms "
                      f"({spread['pytorch']}), onnxruntime {med['onnxruntime']:.0f} ms "
                      f"({spread['onnxruntime']}), ratio {med['pytorch'] / med['onnxruntime']:.2f}x; "
                      f"onnxruntime, plain {med['plain']:.0f} ms ({spread['plain']}): the phase split "
                      f"{med['plain'] / med['onnxruntime']:.2f}x; other load {load.cores:.1f} cores")
                if int8:
                    print(f"    onnxruntime int8 {med['int8']:.0f} ms ({spread['int8']}): "
                          f"{med['onnxruntime'] / med['int8']:.2f}x onnxruntime fp32")
                with torch.inference_mode():
                    reference = net(image).numpy()
                for key in [k for k in runs if k.startswith("openvino")]:
                    worst = float(abs(runs[key]() - reference).max()) * 255
                    print(f"    {key} {med[key]:.0f} ms ({spread[key]}): {med['onnxruntime'] / med[key]:.2f}x "
                          f"onnxruntime; max difference from pytorch {worst:.3f} levels of 255")


def quantised(path: Path, out: Path, size: int) -> Path:
    """The fp32 export quantised statically to int8 (QDQ), calibrated on four random images."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class RandomImages(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter({"image": rng.random((1, 3, size, size), np.float32)} for _ in range(4))

        def get_next(self):
            return next(self.feeds, None)

    prepared = out.with_suffix(".prepared.onnx")
    quant_pre_process(str(path), str(prepared))
    quantize_static(str(prepared), str(out), RandomImages(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return out


def save_cyclegan(folder: Path) -> None:
    """A cyclegan model with the family's default parameters and its initial weights."""
    import torch

    from models import registry
    from models.family import TrainInputs
    from models.weights import save_model

    tp = registry.validate_params("cyclegan", {}, {})[0]
    trainer = registry.load("cyclegan").make_trainer(tp, TrainInputs(torch.device("cpu")))
    save_model(folder, trainer.inference_network().eval(),
               {"family": "cyclegan", "train": tp.model_dump(), **trainer.sidecar()})


if __name__ == "__main__":
    main()
