"""Generator evaluation (tasks/evaluation/{distributions,judge,generation}.py): the distances are
right on cases with a known answer, the judge learns, and a sampler that draws real images
scores like the real data while one that draws the wrong class does not."""
import numpy as np
import pytest
import torch
from torch import nn

from stylepipe.config import GenerationGateParams
from tasks.evaluation import distributions as dist
from tasks.evaluation import generation, judge

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gaussian(n, d, mean=0.0, scale=1.0, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(mean, scale, (n, d))).float()


def test_frechet_distance_has_the_closed_form():
    a = gaussian(20000, 4, seed=1)
    assert dist.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # N(0, I) vs N(m, s^2 I): |m|^2 d + d (1 - s)^2
    b = gaussian(20000, 4, mean=0.5, scale=2.0, seed=2)
    assert dist.frechet_distance(a, b) == pytest.approx(4 * 0.25 + 4 * 1.0, rel=0.05)


def test_kernel_distance_is_near_zero_for_one_distribution_and_not_for_two():
    a, b = gaussian(2000, 8, seed=1), gaussian(2000, 8, seed=2)
    same = dist.kernel_distance(a, b, subsets=5, subset_size=500)
    other = dist.kernel_distance(a, gaussian(2000, 8, mean=1.0, seed=3), subsets=5, subset_size=500)
    assert abs(same) < 0.02 < other


def test_precision_and_recall_tell_a_collapsed_generator_from_a_good_one():
    real = gaussian(1000, 2, seed=1)
    good = gaussian(1000, 2, seed=2)
    collapsed = gaussian(1000, 2, scale=0.05, seed=3)  # every sample near one point
    far = gaussian(1000, 2, mean=8.0, seed=4)
    p, r = dist.precision_recall(real, good)
    assert p > 0.9 and r > 0.9
    p, r = dist.precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.2          # realistic but covers little of the data
    p, r = dist.precision_recall(real, far)
    assert p < 0.05 and r < 0.05


def bars(n: int, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labelled 28x28 images: a bright vertical bar whose position is the class, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 60, (n, 28, 28, 1)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, :, 4 + 6 * y: 8 + 6 * y] = 240
    return images, labels.astype(np.int64)


class Replay(nn.Module):
    """A 'generator' that draws real images of the asked-for class (or of class `wrong`)."""

    def __init__(self, images, labels, wrong=None):
        super().__init__()
        self.images, self.labels, self.wrong = judge.to_images(images), torch.from_numpy(labels), wrong
        self.anchor = nn.Parameter(torch.zeros(1))

    def sample(self, seeds, labels=None):
        out = []
        for seed, y in zip(seeds, labels or [None] * len(seeds)):
            want = self.wrong if self.wrong is not None else y
            pool = (self.labels == want).nonzero().flatten() if want is not None else torch.arange(len(self.labels))
            out.append(self.images[pool[seed % len(pool)]])
        return torch.stack(out)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("bars")
    train, val = bars(1500, seed=1), bars(600, seed=2)
    save_file({"images": train[0], "labels": train[1]}, str(folder / "train.safetensors"))
    save_file({"images": val[0], "labels": val[1]}, str(folder / "val.safetensors"))
    extractor = dist.effnet_extractor(torch.device("cpu"))
    data = generation.real_data(folder, 300, extractor, torch.device("cpu"), folder / "cache")
    return data, extractor, train, folder


def test_the_judge_learns_and_is_cached(real):
    data, _, _, folder = real
    assert data.judge_accuracy > 0.95  # held-out accuracy of the judge trained on the training split
    (cached,) = (folder / "cache").glob("judge-*.safetensors")
    again, accuracy = judge.load_or_train(folder / "train.safetensors", data.val_x, data.val_y, folder / "cache")
    assert accuracy == data.judge_accuracy and list((folder / "cache").glob("judge-*")) == [cached]


def test_the_real_features_are_cached_and_keyed_by_the_data(real, monkeypatch, tmp_path):
    data, extractor, _, folder = real
    assert len(list((folder / "cache").glob("real-features-*.safetensors"))) == 1

    def no_features(*a, **k):
        raise AssertionError("computed the real features again")

    monkeypatch.setattr(dist, "effnet_features", no_features)
    again = generation.real_data(folder, 300, extractor, torch.device("cpu"), folder / "cache")
    assert torch.equal(again.effnet_train, data.effnet_train) and again.floor == data.floor
    with pytest.raises(AssertionError, match="again"):  # fewer samples: another key
        generation.real_data(folder, 200, extractor, torch.device("cpu"), folder / "cache")


def test_fid_inception_only_with_its_network(real, tmp_path):
    """With the FID Inception (here with weights of its own: the real file cannot be fetched) the
    floor and the model get fid_inception; without it neither does."""
    from tasks.evaluation.inception import FIDInception

    data, extractor, (images, labels), folder = real
    assert "fid_inception" not in data.floor
    torch.manual_seed(0)
    with_fid = generation.real_data(folder, 40, extractor, torch.device("cpu"), tmp_path, FIDInception())
    sidecar = {"conditional": True, "num_classes": 4}
    good = generation.measure(Replay(images, labels), sidecar, with_fid, extractor, torch.device("cpu"), 40)
    bad = generation.measure(Replay(images, labels, wrong=0), sidecar, with_fid, extractor, torch.device("cpu"), 40)
    assert with_fid.floor["fid_inception"] >= 0 and good["floor_fid_inception"] == with_fid.floor["fid_inception"]
    assert bad["fid_inception"] > good["fid_inception"]
    assert "fid_inception" not in generation.measure(Replay(images, labels), sidecar, data, extractor,
                                                     torch.device("cpu"), 40)


def test_a_sampler_of_real_images_scores_like_the_real_data(real):
    data, extractor, (images, labels), _ = real
    sidecar = {"conditional": True, "num_classes": 4}
    m = generation.measure(Replay(images, labels), sidecar, data, extractor, torch.device("cpu"), 300)
    assert m["label_accuracy"] > 0.95 and m["classes_recognised"] == 4
    assert m["fd_effnetl0"] < 3 * m["floor_fd_effnetl0"] + 1
    checks = generation.gate_checks(m, "cgan", GenerationGateParams())
    assert all(c["passed"] for c in checks), checks

    wrong = generation.measure(Replay(images, labels, wrong=0), sidecar, data, extractor, torch.device("cpu"), 300)
    assert wrong["label_accuracy"] < 0.4 and wrong["class_share_max"] > 0.9
    assert wrong["fd_effnetl0"] > m["fd_effnetl0"] and wrong["recall"] < m["recall"]
    failed = {c["name"] for c in generation.gate_checks(wrong, "cgan", GenerationGateParams()) if not c["passed"]}
    assert "label_accuracy" in failed


def test_a_gan_with_a_latent_code_gets_one_grid_row_per_code_value(real, tmp_path):
    from PIL import Image

    from models.dcgan.network import Generator
    from models.gan import Sampler

    data = real[0]
    torch.manual_seed(0)
    coded = Sampler(Generator(nz=8, ngf=8, latent_categories=3).eval(), 8, conditional=False, latent_categories=3)
    grids = generation.write_grids(coded, {"conditional": False}, data, tmp_path / "coded")
    assert grids == {"samples": "samples.png", "codes": "codes.png"}
    with Image.open(tmp_path / "coded" / "codes.png") as im:  # 3 rows x 10 columns of 28 px, 1 px apart
        assert im.size == (10 * 29 + 1, 3 * 29 + 1)
    plain = Sampler(Generator(nz=8, ngf=8).eval(), 8, conditional=False)
    assert "codes" not in generation.write_grids(plain, {"conditional": False}, data, tmp_path / "plain")


def test_the_judge_is_the_same_whatever_the_callers_thread_count():
    """Trained on judge.THREADS threads whatever the caller set (otherwise 1 and 3 threads give
    different weights), and the caller's setting is restored."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(512, 1, 28, 28, generator=g), torch.randint(0, 10, (512,), generator=g)
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            weights.append(judge.train_judge(x, y).state_dict())
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
