import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from models.encoders import (VGG_FILES, build_encoder, default_layers,
                             efficientnet_lite0_weights, layer_names, load_efficientnet_lite0)
from stylepipe.errors import StageError


@pytest.fixture(scope="module")
def lite0():
    return load_efficientnet_lite0()


def test_lite0_wheel_weights_load_strictly(lite0):
    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    assert set(state) == set(lite0.state_dict())  # load_state_dict(strict=True) already passed
    assert sum(p.numel() for p in lite0.parameters()) == pytest.approx(4.65e6, rel=0.02)


def test_lite0_classifies_a_cat(lite0):
    import skimage.data

    img = Image.fromarray(skimage.data.chelsea()).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None]
    with torch.no_grad():
        probs = lite0((x - 127) / 128).softmax(-1)[0]
    cats = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert probs.argmax().item() in cats
    assert probs[list(cats)].sum() > 0.5


def test_lite0_layers_strides_and_channels():
    style, content = default_layers("efficientnet_lite0")
    enc = build_encoder("efficientnet_lite0", style + content)
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    with torch.no_grad():
        feats = enc(torch.rand(2, 3, 64, 96))
    assert list(feats) == list(dict.fromkeys(style + content))
    expect = {"stem": (32, 2), "block1.expand": (96, 2), "block3.expand": (144, 4),
              "block5.expand": (240, 8), "block8.expand": (480, 16)}
    for name, (channels, stride) in expect.items():
        assert feats[name].shape == (2, channels, 64 // stride, 96 // stride), name


def test_lite0_stops_after_deepest_requested_layer():
    enc = build_encoder("efficientnet_lite0", ["block3.expand"])
    ran = []
    for i, block in enumerate(enc.net._blocks):
        block.register_forward_hook(lambda *a, i=i: ran.append(i))
    with torch.no_grad():
        enc(torch.rand(1, 3, 32, 32))
    assert ran == [0, 1, 2, 3]


def test_unknown_layer_lists_valid_names():
    with pytest.raises(StageError, match=r"'block99'.*valid names: stem, "):
        build_encoder("efficientnet_lite0", ["stem", "block99"])
    assert "relu4_3" in layer_names("vgg16") and "relu5_4" in layer_names("vgg19")


def test_vgg_missing_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(StageError) as e:
        build_encoder("vgg16", ["relu2_2"], weights_dir=tmp_path / "weights")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "run the download stage with download.weights including VGG" in msg


@pytest.mark.parametrize("name", ["efficientnet_lite0", "vgg16", "vgg19"])
def test_pretrained_false_builds_the_same_network_without_reading_weights(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no VGG file anywhere
    style, content = default_layers(name)
    enc = build_encoder(name, style + content, weights_dir=tmp_path / "none", pretrained=False)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, 64, 64))
    assert list(feats) == list(dict.fromkeys(style + content))
    if name == "efficientnet_lite0":  # same architecture as the pretrained one: its state dict fits
        enc.net.load_state_dict(load_efficientnet_lite0().state_dict(), strict=True)
    else:
        assert feats[content[0]].shape[1] in (128, 512)


@pytest.mark.parametrize("name", ["vgg16", "vgg19"])
def test_vgg_loads_from_weights_dir(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None)
    (tmp_path / "w").mkdir()
    # torchvision's key names; the classifier (100M+ parameters, unused) is left out to keep it fast
    features = {k: v for k, v in ref.state_dict().items() if k.startswith("features.")}
    torch.save(features, tmp_path / "w" / VGG_FILES[name])
    style, content = default_layers(name)
    enc = build_encoder(name, style + content, weights_dir=tmp_path / "w")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        feats = enc(x)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        want = ref.features[:2]((x - mean) / std)  # conv1_1 + relu1_1
    assert torch.equal(enc.net[0].weight, ref.features[0].weight)
    if "relu1_1" in feats:
        assert torch.allclose(feats["relu1_1"], want)
    assert feats[content[0]].shape[1] in (128, 512)


def test_vgg_found_in_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).state_dict()
    torch.save(features, hub / VGG_FILES["vgg16"])
    with pytest.raises(StageError, match="could not load"):  # keys lack the "features." prefix
        build_encoder("vgg16", ["relu1_2"], weights_dir=tmp_path / "nowhere")
    torch.save({f"features.{k}": v for k, v in features.items()}, hub / VGG_FILES["vgg16"])
    enc = build_encoder("vgg16", ["relu1_2"], weights_dir=tmp_path / "nowhere")
    assert enc.name == "vgg16"
