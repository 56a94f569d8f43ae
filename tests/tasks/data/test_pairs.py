"""The (photo, painting) stream of the adain family (tasks/data/datasets.py ContentStylePairs)."""
import torch

from tasks.data.datasets import ContentStylePairs, RandomCrops, list_train_images
from tests.tiny_training import write_paintings, write_photos


def test_pairs_are_a_pure_function_of_seed_and_index_from_two_streams(tmp_path):
    photos = list_train_images(write_photos(tmp_path / "photos" / "train", 3))
    paintings = list_train_images(write_paintings(tmp_path / "paintings", train=3, val=1) / "train")
    a, b = ContentStylePairs(photos, paintings, 24, 16, seed=5), ContentStylePairs(photos, paintings, 24, 16, seed=5)
    for i in (0, 7, 123):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["style"], y["style"])
        assert x["image"].shape == (3, 24, 24) and x["style"].shape == (3, 16, 16)
        # the photos are the plain photo stream; the paintings a second, independent one
        assert torch.equal(x["image"], RandomCrops(photos, 24, 5)[i]["image"])
    same_stream = RandomCrops(paintings, 16, 5)
    assert any(not torch.equal(a[i]["style"], same_stream[i]["image"]) for i in range(6))
    other_seed = ContentStylePairs(photos, paintings, 24, 16, seed=6)
    assert any(not torch.equal(other_seed[i]["style"], a[i]["style"]) for i in range(6))
