"""AdaIN's controls (models/adain/network.py): alpha, style interpolation, masks, colour
preservation, on the pretrained encoder and a small untrained decoder (the controls act on
features, whatever the decoder learned), and the saved network's round trip."""
import pytest
import torch

from models.adain.network import (AdaINNet, adain_target, build_adain, luma, mean_std, mix, probe,
                                  stylize)
from models.encoders import build_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net() -> AdaINNet:
    torch.manual_seed(0)
    encoder = build_encoder("efficientnet_lite0", ["block5.expand"], pretrained=False)
    channels, stride = probe(encoder, "block5.expand")
    assert (channels, stride) == (240, 8)
    net = build_adain("efficientnet_lite0", "block5.expand", ["stem", "block5.expand"], channels, stride,
                      [16, 8, 8, 8], pretrained=True).eval()
    for m in net.decoder.modules():  # variance-keeping init: the untrained decoder's image follows its input
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    return net


def painting(seed: int, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(1, 3, 1, 1, generator=g)
    return (colour + 0.3 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def styles(net):
    with torch.no_grad():
        return [net.style_of(painting(s)) for s in (1, 2)]


def photo() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0.2, 0.8, 40), torch.linspace(0.3, 0.7, 56), indexing="ij")
    return torch.stack([xx, yy, (xx + yy) / 2])[None]


def test_alpha_zero_is_the_content_features_and_one_the_style(net, styles):
    with torch.no_grad():
        f = net.encode(photo())
        assert torch.equal(adain_target(f, [(styles[0], 1.0)], alpha=0.0), f)
        full = adain_target(f, [(styles[0], 1.0)], alpha=1.0)
        half = adain_target(f, [(styles[0], 1.0)], alpha=0.5)
    mean, std = mean_std(full)
    torch.testing.assert_close(mean, styles[0][0], atol=1e-4, rtol=1e-4)
    # a channel constant over the photo (a ReLU6 at 0 everywhere) stays constant: compare the others
    alive = mean_std(f)[1] > 0.1  # (and the eps inside the std blurs nearly constant ones)
    assert alive.float().mean() > 0.5
    torch.testing.assert_close(std[alive], styles[0][1][alive], atol=2e-3, rtol=1e-2)
    torch.testing.assert_close(half, (f + full) / 2)
    # so at alpha 0 the painting does not matter: the image is the decoded photo
    with torch.no_grad():
        a = stylize(net, photo(), [(styles[0], 1.0)], alpha=0.0)
        b = stylize(net, photo(), [(styles[1], 1.0)], alpha=0.0)
        c = stylize(net, photo(), [(styles[1], 1.0)], alpha=1.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError):
        adain_target(f, [(styles[0], 1.0)], alpha=1.5)


def test_interpolation_weights(net, styles):
    x = photo()
    with torch.no_grad():
        one = stylize(net, x, [(styles[0], 1.0)])
        also_one = stylize(net, x, [(styles[0], 1.0), (styles[1], 0.0)])
        mixed = stylize(net, x, [(styles[0], 0.3), (styles[1], 0.7)])
        other = stylize(net, x, [(styles[1], 1.0)])
        f = net.encode(x)
        mixed_mean, mixed_std = mean_std(adain_target(f, [(styles[0], 3.0), (styles[1], 7.0)]))  # weights normalised
    torch.testing.assert_close(one, also_one)
    assert not torch.allclose(mixed, one, atol=1e-3) and not torch.allclose(mixed, other, atol=1e-3)
    torch.testing.assert_close(mixed_mean, 0.3 * styles[0][0] + 0.7 * styles[1][0], atol=1e-4, rtol=1e-4)
    alive = mean_std(f)[1] > 0.1
    torch.testing.assert_close(mixed_std[alive], (0.3 * styles[0][1] + 0.7 * styles[1][1])[alive], atol=2e-3, rtol=1e-2)
    with pytest.raises(ValueError):
        mix([(styles[0], 0.0)])


def test_mask_gives_each_region_its_painting_or_none(net, styles):
    x = photo()
    mask = torch.zeros(40, 56, dtype=torch.long)
    mask[:, :24] = 1                      # left: painting 1
    mask[:, 32:] = 2                      # right: painting 2; the middle: no painting
    with torch.no_grad():
        f = net.encode(x)
        t = adain_target(f, [(styles[0], 1.0), (styles[1], 1.0)], mask=mask)
    cols = torch.arange(f.shape[-1])      # 7 feature columns, 8 px each
    left, middle, right = cols < 3, (cols >= 3) & (cols < 4), cols >= 4
    for region, (mean, _) in ((left, styles[0]), (right, styles[1])):
        region_mean = t[..., region].mean(dim=(2, 3), keepdim=True)
        torch.testing.assert_close(region_mean, mean, atol=1e-4, rtol=1e-4)
    assert torch.equal(t[..., middle], f[..., middle])
    # one painting: label 2 has none, so the right keeps the photo's features too
    with torch.no_grad():
        t1 = adain_target(f, [(styles[0], 1.0)], mask=mask)
    assert torch.equal(t1[..., right], f[..., right]) and not torch.equal(t1[..., left], f[..., left])
    with torch.no_grad():
        out = stylize(net, x, [(styles[0], 1.0), (styles[1], 1.0)], mask=mask)
    assert out.shape == x.shape
    assert (out[..., :16].mean(dim=(0, 2, 3)) - out[..., 40:].mean(dim=(0, 2, 3))).abs().max() > 1e-3


def test_preserve_colors_keeps_the_photos_chroma(net, styles):
    x = photo()
    with torch.no_grad():
        plain = stylize(net, x, [(styles[0], 1.0)])
        kept = stylize(net, x, [(styles[0], 1.0)], preserve_colors=True)

    def chroma(img):
        return img - luma(img)  # R-Y, G-Y, B-Y: what changing Y alone leaves unchanged

    inside = ((kept > 0) & (kept < 1)).all(dim=1, keepdim=True).expand_as(kept)  # not clamped
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(chroma(kept)[inside], chroma(x)[inside], atol=1e-5, rtol=0)
    torch.testing.assert_close(luma(kept), luma(plain).clamp(0, 1), atol=0.05, rtol=0)
    assert (chroma(plain) - chroma(x)).abs().max() > 1e-2  # without it the colours do change


def test_saved_network_round_trip(net, tmp_path):
    from models.weights import load_model, save_model

    sidecar = {"family": "adain", "encoder": "efficientnet_lite0", "layer": "block5.expand",
               "style_layers": ["stem", "block5.expand"], "channels": 240, "stride": 8, "widths": [16, 8, 8, 8]}
    save_model(tmp_path, net, sidecar)
    loaded, _ = load_model(tmp_path)
    x = photo()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    # the encoder is trimmed after the deepest layer it needs: no head, no classifier
    assert not any(k.startswith(("encoder.net._fc", "encoder.net._conv_head")) for k in loaded.state_dict())
