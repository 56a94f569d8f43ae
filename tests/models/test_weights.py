import json
import pickle

import pytest
import torch

from models.johnson.network import DEFAULT_UPSAMPLE, build_network
from models.weights import load_model, save_model
from stylepipe.errors import StageError


@pytest.mark.parametrize("name", ["slim", "fast", "classic"])
def test_round_trip_bit_exact(tmp_path, name):
    torch.manual_seed(1)
    net = build_network(name)
    for p in net.parameters():  # non-default values everywhere (norm affine params included)
        p.data.normal_()
    written = {"network": name, "upsample": DEFAULT_UPSAMPLE[name], "style": "x"}
    save_model(tmp_path / "m", net, written)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    loaded, sidecar = load_model(tmp_path / "m")
    assert sidecar == written
    assert not loaded.training
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), loaded(x))


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def _write_sidecar(d):
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"network": "fast"}))


def test_refuses_pickle_renamed_to_safetensors(tmp_path):
    d = tmp_path / "m"
    _write_sidecar(d)
    (d / "model.safetensors").write_bytes(pickle.dumps(build_network("fast").state_dict()))
    with pytest.raises(StageError, match="not a safetensors file"):
        load_model(d)


def test_refuses_torch_save_with_code(tmp_path, capsys):
    d = tmp_path / "m"
    _write_sidecar(d)
    torch.save({"net": Payload()}, d / "model.safetensors")
    with pytest.raises(StageError, match="never pickles"):
        load_model(d)
    assert "pwned" not in capsys.readouterr().out


def test_pt_file_only_is_not_loaded(tmp_path):
    d = tmp_path / "m"
    _write_sidecar(d)
    torch.save(build_network("fast").state_dict(), d / "model.pt")
    with pytest.raises(StageError, match="model.pt: pickled checkpoints are never loaded"):
        load_model(d)


def test_a_sidecar_nested_too_deeply_is_refused_clearly(tmp_path):
    save_model(tmp_path / "m", build_network("fast"), {"network": "fast"})
    (tmp_path / "m" / "model.json").write_text("[" * 100_000)  # json.loads: RecursionError
    with pytest.raises(StageError, match="not a valid JSON sidecar: nested too deeply"):
        load_model(tmp_path / "m")


def test_wrong_network_in_sidecar(tmp_path):
    save_model(tmp_path / "m", build_network("fast"), {"family": "johnson", "network": "classic"})
    with pytest.raises(StageError, match="does not match the 'johnson' network its sidecar describes"):
        load_model(tmp_path / "m")


def test_a_sidecar_without_a_family_is_johnson(tmp_path):
    """Sidecars written before model families existed name no family: they are johnson models."""
    save_model(tmp_path / "m", build_network("fast", "bilinear"), {"network": "fast", "upsample": "bilinear"})
    net, _ = load_model(tmp_path / "m")
    assert type(net) is type(build_network("fast"))


def test_a_fast_model_from_before_the_upsample_option_loads_as_it_was_trained(tmp_path):
    """Sidecars written before issue 15 have no `upsample`: their fast network had the pixel-shuffle
    decoder, and that is what is rebuilt, with the same outputs."""
    torch.manual_seed(2)
    old = build_network("fast", "pixelshuffle").eval()
    save_model(tmp_path / "m", old, {"network": "fast", "style": "x"})
    loaded, _ = load_model(tmp_path / "m")
    x = torch.rand(1, 3, 24, 28)
    with torch.no_grad():
        assert torch.equal(old(x), loaded(x))


def test_new_weights_under_an_old_sidecar_fail_clearly(tmp_path):
    save_model(tmp_path / "m", build_network("fast"), {"network": "fast"})
    with pytest.raises(StageError, match="does not match the 'johnson' network its sidecar describes"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("sidecar,message", [
    ({"family": "stylegan", "network": "fast"}, r"cannot rebuild the 'stylegan' network: .*unknown model family"),
    ({"family": "johnson", "network": "huge"}, r"cannot rebuild the 'johnson' network: 'network' must be one of"),
    ({"family": "johnson"}, r"cannot rebuild the 'johnson' network: 'network' must be one of .*None"),
    ({"family": "johnson", "network": "fast", "upsample": "cubic"},
     r"cannot rebuild the 'johnson' network: 'upsample' must be one of .*cubic"),
])
def test_a_sidecar_that_cannot_be_rebuilt_is_named(tmp_path, sidecar, message):
    save_model(tmp_path / "m", build_network("fast"), sidecar)
    with pytest.raises(StageError, match=message):
        load_model(tmp_path / "m")


def test_a_sidecar_that_is_not_an_object(tmp_path):
    save_model(tmp_path / "m", build_network("fast"), {"network": "fast"})
    (tmp_path / "m" / "model.json").write_text("[1, 2]")
    with pytest.raises(StageError, match="must be a JSON object"):
        load_model(tmp_path / "m")
