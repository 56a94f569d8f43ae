"""ONNX export (models/export.py, `stylepipe export-onnx`): onnxruntime must reproduce PyTorch at
any input size, and the file must carry the model's identity."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.cyclegan.network import ResnetGenerator
from models.export import DEFAULT_OPSET, PhaseSplitConv, export_onnx, with_phase_split_output
from models.johnson.network import DEFAULT_UPSAMPLE, UPSAMPLE, build_network
from models.pix2pix.network import UNet
from models.weights import WEIGHTS_FILE, save_model
from stylepipe.cli import build_parser, main
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# float32 through ~20 layers, two runtimes: measured max differences are about 1e-6
TOLERANCE = 1e-4
# (N, 3, H, W); 30x45 has sides that are not multiples of 4, where the network pads and crops
SHAPES = [(1, 3, 64, 96), (2, 3, 80, 80), (1, 3, 30, 45)]
SIDECAR = {"network": None, "style": "swirls", "code_version": "0.1.0+abc123", "steps": 400}


def make_model(model_dir, name, seed=0, upsample=None):
    """A random network saved like a trained one. Instance-norm scales and shifts are randomised
    too (an export that dropped them would otherwise still match); convs keep their default init,
    which leaves the output sigmoid unsaturated, so differences show."""
    torch.manual_seed(seed)
    upsample = upsample or DEFAULT_UPSAMPLE[name]
    net = build_network(name, upsample).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                module.weight.normal_(1, 0.3)
                module.bias.normal_(0, 0.3)
    save_model(model_dir, net, {**SIDECAR, "network": name, "upsample": upsample})
    return net


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=["slim", "fast", "classic", "fast/pixelshuffle"])
def exported(request, tmp_path_factory):
    name, _, upsample = request.param.partition("/")
    tmp = tmp_path_factory.mktemp(name)
    net = make_model(tmp / "model", name, upsample=upsample or None)
    out = export_onnx(tmp / "model", tmp / "out" / f"{name}.onnx")
    return name, net, tmp / "model", out, session(out)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_onnxruntime_matches_pytorch(exported, shape):
    _, net, _, _, runtime = exported
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        expected = net(x).numpy()
    # the comparison means something only if the output is not stuck at 0 or 1
    assert expected.std() > 0.02 and ((expected > 0.01) & (expected < 0.99)).mean() > 0.9
    (got,) = runtime.run(["stylized"], {"image": x.numpy()})
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() < TOLERANCE


def test_graph_interface_and_metadata(exported):
    name, _, model_dir, path, _ = exported
    upsample = json.loads((model_dir / "model.json").read_text())["upsample"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["stylized"]
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
    assert {o.domain: o.version for o in model.opset_import}[""] == DEFAULT_OPSET
    assert {p.key: p.value for p in model.metadata_props} == {
        "style": "swirls", "network": name, "upsample": upsample, "code_version": "0.1.0+abc123",
        "weights_sha256": sha256_file(model_dir / WEIGHTS_FILE)}


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    make_model(tmp_path / "model", "fast")
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous export")

    def half_write(proto, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(proto.SerializeToString()[:1000])
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", half_write)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(tmp_path / "model", out)
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.onnx"]


def test_cli_exports_a_working_model(tmp_path, capsys):
    net = make_model(tmp_path / "model", "fast", seed=3)
    out = tmp_path / "exports" / "fast.onnx"
    assert main(["export-onnx", str(tmp_path / "model"), "--out", str(out), "--opset", "13"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        expected = net(x).numpy()
    (got,) = session(out).run(None, {"image": x.numpy()})
    assert np.abs(got - expected).max() < TOLERANCE


def test_cli_refuses_pickled_model(tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps({**SIDECAR, "network": "fast"}))
    torch.save(build_network("fast").state_dict(), model_dir / "model.pt")
    out = tmp_path / "fast.onnx"
    assert main(["export-onnx", str(model_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stylepipe export-onnx: ")
    assert "model.pt: pickled checkpoints are never loaded" in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["missing"], "missing: no such model folder"),
    (["model", "--opset", "9"], "opset 9: not supported; use 11 to 20"),
])
def test_cli_errors(tmp_path, capsys, args, message):
    make_model(tmp_path / "model", "fast")
    out = tmp_path / "x.onnx"
    args[0] = str(tmp_path / args[0])
    assert main(["export-onnx", *args, "--out", str(out)]) == 1
    assert message in capsys.readouterr().err and not out.exists()


def test_refuses_pickle_renamed_to_safetensors(tmp_path):
    model_dir = tmp_path / "model"
    make_model(model_dir, "fast")
    torch.save(build_network("fast").state_dict(), model_dir / WEIGHTS_FILE)
    with pytest.raises(StageError, match="never pickles"):
        export_onnx(model_dir, tmp_path / "x.onnx")


def test_help(capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["export-onnx", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: stylepipe export-onnx") and f"(default {DEFAULT_OPSET})" in text


@pytest.mark.parametrize("kernel, cin, cout, side", [(5, 16, 3, (20, 36)), (9, 32, 3, (24, 18)), (3, 4, 5, (8, 10))])
def test_phase_split_conv_is_the_conv(kernel, cin, cout, side):
    """The export's output conv: the same numbers as the conv it replaces, on inputs whose output
    sides are even (as the network's are)."""
    torch.manual_seed(kernel)
    conv = torch.nn.Conv2d(cin, cout, kernel)
    x = torch.randn(2, cin, side[0] + kernel - 1, side[1] + kernel - 1)
    with torch.no_grad():
        expected, got = conv(x), PhaseSplitConv(conv)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5
    with pytest.raises(ValueError, match="stride-1"):
        PhaseSplitConv(torch.nn.Conv2d(cin, cout, kernel, stride=2))
    with pytest.raises(ValueError, match="odd side"):  # it would lose a row
        PhaseSplitConv(conv)(x[..., 1:, :])


def test_phase_split_reaches_the_output_convs():
    """The export splits the johnson networks' (every decoder) and cyclegan's output convs, and gives
    the same numbers; pix2pix's U-Net, whose last registered conv does not fit, is the same object."""
    nets = [build_network(name, upsample).decoder for name in ("slim", "fast", "classic") for upsample in UPSAMPLE
            if (name, upsample) != ("slim", "pixelshuffle")]
    nets += [ResnetGenerator(ngf=8, n_blocks=1, upsample=u, residual=r) for u in ("transpose", "resize") for r in (False, True)]
    for net in nets:
        net.eval()
        split = with_phase_split_output(net)
        assert isinstance([m for m in split.modules() if isinstance(m, (torch.nn.Conv2d, PhaseSplitConv))][-1],
                          PhaseSplitConv)
        assert not any(isinstance(m, PhaseSplitConv) for m in net.modules())  # a copy: the model is untouched
        # a generator takes an image (sides multiples of 4); a decoder the stride-4 map
        first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        x = torch.rand(1, 3, 24, 28) if isinstance(net, ResnetGenerator) else torch.rand(1, first.in_channels, 6, 7)
        with torch.no_grad():
            assert (split(x) - net(x)).abs().max() < 1e-5
    for upsample in ("transpose", "resize"):
        unet = UNet(ngf=8, num_downs=3, upsample=upsample)
        assert with_phase_split_output(unet) is unet


@pytest.mark.parametrize("name", ["fast", "slim"])
def test_tile_graphs_run_tiles_with_the_thumbnails_statistics_as_pytorch_does(name, tmp_path):
    """models/export.py export_tile_graphs: the statistics graph records every instance norm's
    scale and shift on a thumbnail, the tile graph runs tiles with them: PyTorch's SharedStatsNorm
    path (models/shared_stats.py), not each tile's own statistics."""
    from models.export import export_tile_graphs, statistics_names
    from models.shared_stats import set_recording, shared_norms, with_shared_stats

    net = make_model(tmp_path / "model", name)
    export_tile_graphs(tmp_path / "model", tmp_path / "statistics.onnx", tmp_path / "tiles.onnx")
    tiled = with_shared_stats(net)
    thumb = torch.rand(1, 3, 90, 130, generator=torch.Generator().manual_seed(1))  # sides not multiples of 4
    tiles = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 0.5  # other statistics
    with torch.no_grad():
        set_recording(tiled, True)
        tiled(thumb)
        set_recording(tiled, False)
        expected, own = tiled(tiles).numpy(), net(tiles).numpy()
    recorder, runner = session(tmp_path / "statistics.onnx"), session(tmp_path / "tiles.onnx")
    names = statistics_names(len(shared_norms(tiled)))
    assert [o.name for o in recorder.get_outputs()] == names
    assert [i.name for i in runner.get_inputs()] == ["image", *names]
    statistics = dict(zip(names, recorder.run(None, {"image": thumb.numpy()})))
    got = runner.run(None, {"image": tiles.numpy(), **statistics})[0]
    assert np.abs(got - expected).max() < TOLERANCE
    assert np.abs(got - own).max() > 0.01  # the thumbnail's statistics, not the tiles' own
    props = {p.key: p.value for p in onnx.load(tmp_path / "tiles.onnx").metadata_props}
    assert props["graph"] == "tiles" and props["weights_sha256"] == sha256_file(tmp_path / "model" / WEIGHTS_FILE)
