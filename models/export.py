"""Export a trained network (model.safetensors + model.json) to ONNX, for onnxruntime and friends.

The graph has one input, `image` (N, 3, H, W) float32 RGB in [0,1], and one output, `stylized`, the
same shape and range; batch, height and width are dynamic. The sidecar's key facts travel with it
as ONNX metadata_props: style, network, upsample, code_version and weights_sha256.

Exporter: the TorchScript one (`torch.onnx.export(..., dynamo=False)`), chosen over torch.export
(`dynamo=True`, torch's default) after trying both on torch 2.14.1:

- TransformerNet.forward pads only `if` a side is not a multiple of 4. Neither exporter can record
  that Python `if`: the tracer keeps the branch of the sample it ran, and dynamo=True narrowed H/W
  to "a multiple of 4" without an error. Both .onnx files were then off by up to 0.09 on a 30x45
  image. `_Traceable` below always pads (a pad of 0 when the side is a multiple of 4 changes
  nothing), so no branch depends on the size.
- With that, the tracer records the pad and crop sizes as Shape arithmetic and the graph is right
  at any size. torch.export still refuses dynamic H/W: it cannot prove "pad < side" for the
  reflection pad or the crop's bounds, and torch.onnx.export(dynamo=True) then quietly falls
  back (shapes narrowed by torch's suggested fixes, or draft_export) instead of failing: the trap
  above.
- The tracer needs no onnxscript / onnx-ir and exports in about a second (dynamo=True: 8-18 s).

torch warns that the TorchScript exporter will be removed in a future release; torch is pinned,
and tests/test_export_onnx.py (PyTorch vs onnxruntime, sides that are and are not multiples of 4,
both networks) says when an upgrade breaks it.
"""
from __future__ import annotations

import copy
import io
import os
import uuid
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.johnson.network import TransformerNet
from models.shared_stats import set_recording, shared_norms, with_shared_stats
from models.translation import Translator, to_image_range, to_model_range
from models.weights import WEIGHTS_FILE, load_model
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file

# Every op here (InstanceNormalization, reflect Pad with computed sizes, Resize, DepthToSpace)
# exists from opset 11; 17 runs on onnxruntime >= 1.12, and --opset serves older runtimes.
DEFAULT_OPSET = 17
OPSETS = range(11, 21)  # below 11 Pad needs constant sizes; the TorchScript exporter stops at 20
INPUT_NAME, OUTPUT_NAME = "image", "stylized"
# copied to metadata_props (those the model has); plus weights_sha256
SIDECAR_KEYS = ("family", "style", "network", "upsample", "direction", "code_version")


class PhaseSplitConv(nn.Module):
    """A stride-1 conv (no padding of its own) computed as one stride-2 conv with 4x the output
    channels and a kernel one larger, then a pixel shuffle: output pixel (2i+a, 2j+b) is phase (a, b)
    of the stride-2 conv at (i, j), whose kernel is the original one shifted by (a, b) (zeros
    elsewhere). The same sums in the same order, so the same result, for inputs whose output sides
    are even: the johnson decoder's output conv sees a 2x-upsampled map, cyclegan's a map padded to a
    multiple of 4. An odd side would lose its last row or column; run eagerly that is an error (a
    traced graph cannot check it: the exports only ever see even sides).

    Why: onnxruntime's convs work on blocks of 16 channels (NCHWc, AVX-512), so the network's
    full-resolution output conv, 16 -> 3 channels, computed 16 outputs per pixel to keep 3. Split into
    phases it keeps 12 of 16 at a quarter of the pixels: that conv 29.8 -> 11.4 ms (onnxruntime's
    profiler), the fast network 171 -> 150 ms per 512-px image on one thread (`benchmarks/bench_onnx.py`)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.stride != (1, 1) or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError("PhaseSplitConv takes a stride-1, unpadded, undilated, ungrouped conv")
        cout, cin, kh, kw = conv.weight.shape
        weight = conv.weight.new_zeros(cout, 2, 2, cin, kh + 1, kw + 1)
        for a in range(2):
            for b in range(2):
                weight[:, a, b, :, a:a + kh, b:b + kw] = conv.weight.detach()
        # pixel_shuffle reads output channel c*4 + a*2 + b as phase (a, b) of channel c
        self.register_buffer("weight", weight.reshape(cout * 4, cin, kh + 1, kw + 1))
        bias = conv.bias.detach() if conv.bias is not None else conv.weight.new_zeros(cout)
        self.register_buffer("bias", bias.repeat_interleave(4))
        self.kernel = (kh, kw)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_tracing():
            out_h, out_w = x.shape[-2] - self.kernel[0] + 1, x.shape[-1] - self.kernel[1] + 1
            if out_h % 2 or out_w % 2:
                raise ValueError(f"PhaseSplitConv: an output of {out_h}x{out_w} has an odd side")
        return F.pixel_shuffle(F.conv2d(x, self.weight, self.bias, stride=2), 2)


def with_phase_split_output(net: nn.Module) -> nn.Module:
    """A copy of `net` whose last conv runs as a PhaseSplitConv when it is an output conv it fits:
    stride 1, unpadded (a reflection pad before it), at most 4 output channels. The johnson networks'
    and the cyclegan generator's output convs are (their inputs have even sides: the johnson decoder's
    2x upsampling, the generator's padding to a multiple of 4). pix2pix's U-Net is left as it is: its
    last registered conv is an encoder's (stride 2) or, with `resize`, a padded one."""
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return net
    name, conv = convs[-1]
    if (conv.stride, conv.padding, conv.dilation, conv.groups) != ((1, 1), (0, 0), (1, 1), 1) or conv.out_channels > 4:
        return net
    net = copy.deepcopy(net)
    net.set_submodule(name, PhaseSplitConv(net.get_submodule(name)))
    return net


class _Traceable(nn.Module):
    """TransformerNet.forward without its Python `if` on the input size: always reflect-pad to a
    multiple of 4, run the same submodules (the output conv phase-split), crop. Keep in step with
    TransformerNet.forward (the parity tests compare the two on sides that are not multiples of 4)."""

    def __init__(self, net: TransformerNet, phase_split: bool = True):
        super().__init__()
        self.encoder, self.res = net.encoder, net.res
        self.decoder = with_phase_split_output(net.decoder) if phase_split else net.decoder

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, [0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4], mode="reflect")
        y = self.decoder(self.res(self.encoder(x)))
        return torch.sigmoid(y[..., :h, :w])


class _TraceableTranslator(nn.Module):
    """Translator.forward (pix2pix, cyclegan) in one direction, likewise without its `if`: always
    replicate-pad to a multiple of the generator's stride, translate, crop."""

    def __init__(self, net: Translator, phase_split: bool = True):
        super().__init__()
        generator = net.generators[net.direction]
        self.generator = with_phase_split_output(generator) if phase_split else generator
        self.multiple = net.multiple

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, [0, (m - w % m) % m, 0, (m - h % m) % m], mode="replicate")
        return to_image_range(self.generator(to_model_range(x)))[..., :h, :w]


def _traceable(model_dir: Path, direction: str, phase_split: bool) -> tuple[nn.Module, dict]:
    """The model in `model_dir` as a module the tracer records at any size, and its sidecar."""
    if not model_dir.is_dir():
        raise StageError(f"{model_dir}: no such model folder (expected model.safetensors + model.json)")
    net, sidecar = load_model(model_dir)
    if isinstance(net, Translator):
        try:
            traceable = _TraceableTranslator(net.set_direction(direction or "a2b"), phase_split)
        except ValueError as e:
            raise StageError(f"{model_dir}: {e}") from None
        return traceable.eval(), {**sidecar, "direction": net.direction}
    if isinstance(net, TransformerNet):
        if direction:
            raise StageError(f"{model_dir}: a {sidecar.get('family', 'johnson')} model has no direction")
        return _Traceable(net, phase_split).eval(), sidecar
    raise StageError(f"{model_dir}: a {sidecar.get('family')!r} model; ONNX export takes johnson, pix2pix "
                     "and cyclegan models")


def _write_graph(module: nn.Module, args: tuple[Tensor, ...], input_names: list[str], output_names: list[str],
                 dynamic_axes: dict, facts: dict[str, str], opset: int, out_path: Path) -> None:
    """Trace `module` on `args` and write the graph, with `facts` as metadata_props, to out_path."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Known and harmless here: the TorchScript exporter's deprecation notice, TracerWarnings
        # from InstanceNorm's input checks (they do not shape the graph), and notes on instance_norm's
        # train flag (instance statistics are right in eval too) and on constant folding.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, facts)
    onnx.checker.check_model(proto)

    # Written under a temporary name beside the target, then renamed (atomic on one file system):
    # a half-written file never carries the .onnx name. Plain open(), so the umask sets the mode.
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        onnx.save_model(proto, tmp)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _checked(model_dir: str | Path, opset: int) -> Path:
    if opset not in OPSETS:
        raise StageError(f"opset {opset}: not supported; use {OPSETS.start} to {OPSETS.stop - 1}")
    return Path(model_dir)


def _facts(model_dir: Path, sidecar: dict) -> dict[str, str]:
    facts = {key: str(sidecar[key]) for key in SIDECAR_KEYS if key in sidecar}
    facts["weights_sha256"] = sha256_file(model_dir / WEIGHTS_FILE)
    return facts


IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}
SAMPLE_SHAPE = (1, 3, 64, 96)


def export_onnx(model_dir: str | Path, out_path: str | Path, opset: int = DEFAULT_OPSET,
                direction: str = "", phase_split: bool = True) -> Path:
    """Write the trained model in `model_dir` to `out_path` as ONNX and return out_path: a johnson
    network, or a translation model in one `direction` (a2b, the default, or b2a). StageError when
    the folder holds no loadable safetensors model (pickles are refused, as everywhere) or a model
    of another family. phase_split=False keeps the output conv as it is (the graph before
    PhaseSplitConv; benchmarks/bench_onnx.py times the two)."""
    model_dir, out_path = _checked(model_dir, opset), Path(out_path)
    if out_path.is_dir():
        raise StageError(f"{out_path}: is a folder; give the path of the .onnx file to write")
    traceable, sidecar = _traceable(model_dir, direction, phase_split)
    _write_graph(traceable, (torch.rand(*SAMPLE_SHAPE),), [INPUT_NAME], [OUTPUT_NAME],
                 {INPUT_NAME: IMAGE_AXES, OUTPUT_NAME: IMAGE_AXES}, _facts(model_dir, sidecar), opset, out_path)
    return out_path


class _NormStatistics(nn.Module):
    """The network on the statistics image, returning every norm's (scale, shift) as it records them."""

    def __init__(self, tiled: nn.Module):
        super().__init__()
        self.tiled = tiled

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        set_recording(self.tiled, True)
        self.tiled(x)
        return tuple(t for norm in shared_norms(self.tiled) for t in norm.scale_shift)


class _Tiles(nn.Module):
    """The network on tiles, every norm's (scale, shift) given as inputs (_NormStatistics' outputs)."""

    def __init__(self, tiled: nn.Module):
        super().__init__()
        self.tiled = tiled

    def forward(self, x: Tensor, *scale_shift: Tensor) -> Tensor:
        set_recording(self.tiled, False)
        for i, norm in enumerate(shared_norms(self.tiled)):
            norm.scale_shift = (scale_shift[2 * i], scale_shift[2 * i + 1])
        return self.tiled(x)


def statistics_names(count: int) -> list[str]:
    """The (scale, shift) names, norm by norm: the statistics graph's outputs, the tile graph's inputs."""
    return [f"{kind}_{i}" for i in range(count) for kind in ("scale", "shift")]


def export_tile_graphs(model_dir: str | Path, statistics_path: str | Path, tiles_path: str | Path,
                       opset: int = DEFAULT_OPSET, direction: str = "") -> None:
    """The two graphs that run a large image in tiles on onnxruntime, as models/shared_stats.py
    does in PyTorch: `statistics_path` takes the statistics image (`image`) and gives every instance norm's
    folded scale and shift (statistics_names); `tiles_path` takes the tiles (`image`) and those, and
    gives `stylized`. A network without instance norms needs no statistics: then only the tile
    graph is written. The tile graph is written last, so that it existing means both do."""
    model_dir = _checked(model_dir, opset)
    traceable, sidecar = _traceable(model_dir, direction, phase_split=True)
    tiled = with_shared_stats(traceable)
    facts = _facts(model_dir, sidecar)
    sample = torch.rand(*SAMPLE_SHAPE)
    names = statistics_names(len(shared_norms(tiled)))
    statistics: tuple[Tensor, ...] = ()
    if names:
        recorder = _NormStatistics(tiled)
        with torch.no_grad():
            statistics = recorder(sample)
        _write_graph(recorder, (sample,), [INPUT_NAME], names, {INPUT_NAME: IMAGE_AXES},
                     {**facts, "graph": "norm statistics"}, opset, Path(statistics_path))
    _write_graph(_Tiles(tiled), (sample, *statistics), [INPUT_NAME, *names], [OUTPUT_NAME],
                 {INPUT_NAME: IMAGE_AXES, OUTPUT_NAME: IMAGE_AXES}, {**facts, "graph": "tiles"}, opset, Path(tiles_path))
