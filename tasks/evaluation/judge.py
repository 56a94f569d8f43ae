"""The judge: a small CNN classifier trained on a labelled dataset's own training split, used to
score generators of that dataset (is a sample recognisably some class? the class it was asked
for? are the classes balanced?) and as a second feature space for a Fréchet distance.

Its test accuracy on the held-out split is reported beside every figure it produces: a judge is
only as good as that number. Training is deterministic (seeded, CPU) and takes about a minute on
2 cores for MNIST; the result is cached under .cache/judges keyed by the training data's sha256,
this file's sha256 and the settings, so evaluate trains it once per dataset.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from stylepipe.hashing import sha256_file

log = logging.getLogger("stylepipe.evaluate")

SIZE = 28            # the judge looks at 28 px images
FEATURE_DIM = 128
EPOCHS, BATCH, LR, SHIFT, SEED = 1, 128, 2e-3, 2, 0
# The judge trains on this many threads on every machine: the order of a reduction, hence its
# weights and every score it gives, depends on the thread count (1 vs 2 threads: weights up to
# 0.005 apart, a model's confident share 0.6 points apart).
THREADS = 2


class Judge(nn.Module):
    def __init__(self, num_classes: int, channels: int = 1, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (SIZE // 4) ** 2, FEATURE_DIM), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (N, 128) of [0, 1] images of any size."""
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="area")
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


@torch.no_grad()
def predict(judge: Judge, x: Tensor, batch: int = 1000) -> tuple[Tensor, Tensor]:
    """(softmax probabilities (N, classes), features (N, 128))."""
    judge.eval()
    probs, feats = [], []
    for i in range(0, len(x), batch):
        f = judge.features(x[i:i + batch])
        feats.append(f)
        probs.append(F.softmax(judge.head(f), 1))
    return torch.cat(probs), torch.cat(feats)


def random_shift(x: Tensor, generator: torch.Generator, max_shift: int = SHIFT) -> Tensor:
    """Translate each image by up to +-max_shift pixels (zero fill): cheap augmentation."""
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train_judge(train_x: Tensor, train_y: Tensor) -> Judge:
    caller_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _train(train_x, train_y)
    finally:
        torch.set_num_threads(caller_threads)


def _train(train_x: Tensor, train_y: Tensor) -> Judge:
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    judge = Judge(int(train_y.max()) + 1, train_x.shape[1])
    opt = torch.optim.Adam(judge.parameters(), lr=LR)
    steps = EPOCHS * (len(train_x) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=max(steps, 1))
    judge.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(train_x), generator=gen)
        for i in range(0, len(perm) - BATCH + 1, BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(judge(random_shift(train_x[idx], gen)), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return judge.eval()


def to_images(images: np.ndarray) -> Tensor:
    """uint8 (N,H,W,C) -> float (N,C,H,W) in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def load_or_train(train_file: Path, val_x: Tensor, val_y: Tensor, cache: Path) -> tuple[Judge, float]:
    """The judge for one labelled dataset (trained on train_file, or from the cache) and its
    accuracy on the held-out split."""
    from tasks.data.datasets import load_labelled

    key = hashlib.sha256(json.dumps([sha256_file(train_file), sha256_file(Path(__file__)),
                                     EPOCHS, BATCH, LR, SHIFT, SEED, THREADS]).encode()).hexdigest()[:16]
    path = cache / f"judge-{key}.safetensors"
    images, labels = load_labelled(train_file)
    if path.is_file():
        judge = Judge(int(labels.max()) + 1, images.shape[3])
        judge.load_state_dict(load_file(str(path)))
        judge.eval()
    else:
        started = time.perf_counter()
        judge = train_judge(to_images(images), torch.from_numpy(labels))
        log.info("trained the judge on %d images in %.0f s (%d threads)", len(images),
                 time.perf_counter() - started, THREADS)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    probs, _ = predict(judge, val_x)
    return judge, float((probs.argmax(1) == val_y).float().mean())
