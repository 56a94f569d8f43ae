"""The FID network (tasks/evaluation/inception.py) is pytorch-fid's, fed the way pytorch-fid feeds it,
and only a weights file whose sha256 matches its name is used. The real weights cannot be fetched
here: the tests use weights they make, which is enough to compare the two code paths."""
import hashlib

import pytest
import torch

from stylepipe.errors import StageError
from tasks.evaluation import inception

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    state = {k.removeprefix("net."): v for k, v in inception.FIDInception().state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    tmp = folder / "w.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"pt_inception-2015-12-05-{digest[:8]}.pth"
    tmp.rename(path)
    return path, state


def test_features_equal_pytorch_fids_own_network(weights, monkeypatch):
    from pytorch_fid import inception as fid

    path, state = weights
    monkeypatch.setattr(fid, "load_state_dict_from_url", lambda *a, **k: state)  # no download: these weights
    reference = fid.InceptionV3([3]).eval()
    ours = inception.load(inception.find_weights(path.parent))
    images = torch.rand(3, 3, 64, 48)
    with torch.no_grad():
        expected = reference(images)[0].flatten(1)
    got = inception.features(ours, images, torch.device("cpu"))
    assert got.shape == (3, 2048)
    torch.testing.assert_close(got, expected)
    grey = inception.features(ours, images[:, :1], torch.device("cpu"))  # grey inputs: repeated to RGB
    torch.testing.assert_close(grey, reference(images[:, :1].expand(-1, 3, -1, -1))[0].flatten(1))


def test_no_file_no_fid_and_a_file_that_is_not_its_name_is_refused(weights, tmp_path):
    assert inception.find_weights(tmp_path) is None
    path, _ = weights
    (tmp_path / "pt_inception-2015-12-05-6726825d.pth").write_bytes(path.read_bytes())
    with pytest.raises(StageError, match="does not match"):
        inception.find_weights(tmp_path)
