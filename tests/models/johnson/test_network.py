import pytest
import torch

from models.johnson.network import build_network, count_params, flops_per_pixel


@pytest.mark.parametrize("name", ["classic", "fast"])
@pytest.mark.parametrize("size", [(37, 53), (32, 32), (5, 7), (66, 41)])
def test_shape_kept_and_output_in_unit_range(name, size):
    torch.manual_seed(0)
    net = build_network(name).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()


def test_classic_is_johnsons_network_and_fast_is_cheaper():
    assert count_params(build_network("classic")) == 1_679_235  # pytorch/examples TransformerNet
    classic, fast = flops_per_pixel("classic", size=128), flops_per_pixel("fast", size=128)
    assert classic == pytest.approx(0.31e6, rel=0.05)
    assert fast * 5 <= classic
    assert count_params(build_network("fast")) < count_params(build_network("classic")) / 5


def test_unknown_network():
    with pytest.raises(ValueError, match="classic"):
        build_network("huge")
