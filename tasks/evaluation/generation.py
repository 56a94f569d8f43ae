"""Evaluation of generators (the "sample" families: dcgan, cgan, vae) on their labelled dataset.

Measured on `samples` images drawn from the model (seeds 0..n-1; a conditional model's labels dealt
round-robin, so every class gets n/classes) against the same number of real images:
- fd_effnetl0, kid_effnetl0, precision, recall: in EfficientNet-Lite0 features
  (tasks/evaluation/distributions.py), each beside its real-vs-real floor (training split vs
  held-out split);
- from the judge (tasks/evaluation/judge.py, trained on the training split; its held-out accuracy
  is reported): the confident fraction (max p >= 0.9), the class shares (min/max) and classes
  present, fd_judge (Fréchet distance in the judge's features) with its floor, and for a
  conditional model the label accuracy (the judge agrees with the label asked for);
- for a VAE: the held-out ELBO (nats per image) and reconstructions and interpolations.
The judge and the real images' features are cached in `cache` (.cache/judges), keyed by the data
and the code that computes them.
A real FID (`fid_inception`, tasks/evaluation/inception.py) only when the user supplies the FID
Inception weights through download.weights; no other network's distance is given that name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torchvision.utils import save_image

from stylepipe.config import GenerationGateParams
from stylepipe.hashing import sha256_file
from tasks.data.datasets import LABELLED_FILES, load_labelled
from tasks.evaluation import distributions as dist
from tasks.evaluation import inception
from tasks.evaluation import judge as judges

log = logging.getLogger("stylepipe.evaluate")

CONFIDENT = 0.9
GRID_SAMPLES = 100


@dataclass
class RealData:
    """A labelled dataset's reference images and their features (computed once per dataset)."""

    train_x: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    judge: judges.Judge
    judge_accuracy: float
    effnet_train: torch.Tensor
    effnet_val: torch.Tensor
    judge_train: torch.Tensor
    judge_val: torch.Tensor
    floor: dict
    inception: torch.nn.Module | None = None     # tasks/evaluation/inception.py, when its weights are there
    inception_train: torch.Tensor | None = None


def real_data(data_dir: Path, samples: int, extractor, device: torch.device, cache: Path,
              inception_net=None) -> RealData:
    train_images, _ = load_labelled(data_dir / LABELLED_FILES["train"])
    val_images, val_labels = load_labelled(data_dir / LABELLED_FILES["val"])
    val_x, val_y = judges.to_images(val_images), torch.from_numpy(val_labels)
    judge, accuracy = judges.load_or_train(data_dir / LABELLED_FILES["train"], val_x, val_y, cache)
    rng = np.random.default_rng(0)
    n = min(samples, len(train_images), len(val_images))
    train_x = judges.to_images(train_images[np.sort(rng.choice(len(train_images), n, replace=False))])
    val_sub = val_x[torch.from_numpy(np.sort(rng.choice(len(val_images), n, replace=False)))]
    key = feature_key(data_dir, n, extractor, device)
    features = load_features(cache, key)
    if features is None:
        features = {"effnet_train": dist.effnet_features(extractor, train_x, device),
                    "effnet_val": dist.effnet_features(extractor, val_sub, device),
                    "judge_train": judges.predict(judge, train_x)[1], "judge_val": judges.predict(judge, val_sub)[1]}
        save_features(cache, key, features)
    e_train, e_val, j_train, j_val = (features[k] for k in ("effnet_train", "effnet_val", "judge_train", "judge_val"))
    p, r = dist.precision_recall(e_train, e_val)
    floor = {"fd_effnetl0": dist.frechet_distance(e_val, e_train), "kid_effnetl0": dist.kernel_distance(e_val, e_train),
             "fd_judge": dist.frechet_distance(j_val, j_train), "precision": p, "recall": r}
    i_train = None
    if inception_net is not None:
        log.info("FID Inception features of %d + %d real images", n, n)
        i_train, i_val = inception.features(inception_net, train_x, device), inception.features(inception_net, val_sub, device)
        floor["fid_inception"] = dist.frechet_distance(i_val, i_train)
    return RealData(train_x, val_x, val_y, judge, accuracy, e_train, e_val, j_train, j_val, floor,
                    inception_net, i_train)


def feature_key(data_dir: Path, n: int, extractor, device: torch.device) -> str:
    """What the real images' features depend on: the data, how many, and the code that computes them
    (the judge's training is judge.py's and the training file's)."""
    code = [Path(m.__file__) for m in (dist, judges, sys.modules[type(extractor).__module__])]
    parts = [sha256_file(data_dir / LABELLED_FILES[s]) for s in ("train", "val")] + [n, device.type]
    return hashlib.sha256(json.dumps(parts + [sha256_file(f) for f in code]).encode()).hexdigest()[:16]


def load_features(cache: Path, key: str) -> dict[str, torch.Tensor] | None:
    path = cache / f"real-features-{key}.safetensors"
    return load_file(str(path)) if path.is_file() else None


def save_features(cache: Path, key: str, features: dict[str, torch.Tensor]) -> None:
    """The real images' features, kept beside the judges: computing them is most of an evaluation
    of a small generator, and they only change with the data or the code."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"real-features-{key}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))
    os.replace(tmp, path)


def sample_labels(n: int, sidecar: dict) -> list[int] | None:
    if not sidecar.get("conditional"):
        return None
    classes = int(sidecar["num_classes"])
    return [i % classes for i in range(n)]


@torch.no_grad()
def draw(net, n: int, sidecar: dict, batch: int = 500) -> tuple[torch.Tensor, list[int] | None]:
    labels = sample_labels(n, sidecar)
    images = torch.cat([net.sample(list(range(i, min(i + batch, n))), labels[i:i + batch] if labels else None).cpu()
                        for i in range(0, n, batch)])
    return images, labels


def measure(net, sidecar: dict, real: RealData, extractor, device: torch.device, samples: int) -> dict:
    fakes, labels = draw(net, samples, sidecar)
    e_fake = dist.effnet_features(extractor, fakes, device)
    probs, j_fake = judges.predict(real.judge, fakes)
    prec, rec = dist.precision_recall(real.effnet_train, e_fake)
    classes = probs.shape[1]
    predicted = probs.argmax(1)
    shares = torch.bincount(predicted, minlength=classes).float() / len(predicted)
    m = {
        "samples": samples,
        "fd_effnetl0": dist.frechet_distance(e_fake, real.effnet_train),
        "kid_effnetl0": dist.kernel_distance(e_fake, real.effnet_train),
        "precision": prec, "recall": rec,
        "fd_judge": dist.frechet_distance(j_fake, real.judge_train),
        "judge_test_accuracy": real.judge_accuracy,
        "confident_fraction": float((probs.max(1).values >= CONFIDENT).float().mean()),
        "class_share_min": float(shares.min()), "class_share_max": float(shares.max()),
        "classes_present": int((shares > 0).sum()),
    }
    if labels is not None:
        asked = torch.tensor(labels)
        m["label_accuracy"] = float((predicted == asked).float().mean())
        per_class = [float((predicted[asked == c] == c).float().mean()) for c in range(classes)]
        m["label_accuracy_min_class"] = min(per_class)
        m["classes_recognised"] = int(sum(a >= 0.5 for a in per_class))  # half its samples judged right
    if real.inception is not None:  # a real FID: the user supplied the Inception weights
        m["fid_inception"] = dist.frechet_distance(inception.features(real.inception, fakes, device), real.inception_train)
    if hasattr(net, "elbo"):
        m["heldout_elbo"] = net.elbo(real.val_x.to(device))
    m.update({f"floor_{k}": v for k, v in real.floor.items()})
    return m


def gate_checks(m: dict, family: str, gate: GenerationGateParams) -> list[dict]:
    def check(name: str, passed: bool, value, threshold, message: str) -> dict:
        return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "message": message}

    checks = []
    if "label_accuracy" in m:
        checks.append(check("label_accuracy", m["label_accuracy"] >= gate.min_label_accuracy, m["label_accuracy"],
                            gate.min_label_accuracy, f"the judge agrees with the asked-for label on "
                            f"{m['label_accuracy']:.1%} of samples (needs >= {gate.min_label_accuracy:.0%})"))
    if family != "vae":
        checks.append(check("confident", m["confident_fraction"] >= gate.min_confident_fraction,
                            m["confident_fraction"], gate.min_confident_fraction,
                            f"{m['confident_fraction']:.1%} of samples judged with p >= {CONFIDENT} "
                            f"(needs >= {gate.min_confident_fraction:.0%})"))
    else:
        checks.append(check("elbo", m["heldout_elbo"] >= gate.min_heldout_elbo, m["heldout_elbo"],
                            gate.min_heldout_elbo, f"held-out ELBO {m['heldout_elbo']:.1f} nats "
                            f"(needs >= {gate.min_heldout_elbo:.0f})"))
    ratio = m["fd_effnetl0"] / max(m["floor_fd_effnetl0"], 1e-12)
    checks.append(check("fd_effnetl0", ratio <= gate.max_fd_ratio, ratio, gate.max_fd_ratio,
                        f"fd_effnetl0 {m['fd_effnetl0']:.2f} = x{ratio:.1f} the real-vs-real floor "
                        f"{m['floor_fd_effnetl0']:.2f} (needs <= x{gate.max_fd_ratio:.0f})"))
    return checks


def write_grids(net, sidecar: dict, real: RealData, out: Path) -> dict[str, str]:
    """PNG grids for the report: samples (one row per class for a conditional model), one row per
    value of a GAN's categorical latent code, and for a VAE reconstructions (real | reconstruction
    rows) and latent interpolations."""
    out.mkdir(parents=True, exist_ok=True)
    grids = {}
    images, _ = draw(net, GRID_SAMPLES, sidecar)
    if sidecar.get("conditional"):  # sample i has label i % classes: reorder into one row per class
        classes = int(sidecar["num_classes"])
        per = GRID_SAMPLES // classes
        order = [c + classes * j for c in range(classes) for j in range(per)]
        images, nrow = images[order], per
    else:
        nrow = int(GRID_SAMPLES ** 0.5)
    save_image(images, str(out / "samples.png"), nrow=nrow, padding=1)
    grids["samples"] = "samples.png"
    if getattr(net, "latent_categories", 0):
        save_image(net.code_rows(10).cpu(), str(out / "codes.png"), nrow=10, padding=1)
        grids["codes"] = "codes.png"
    if hasattr(net, "reconstruct"):
        device = next(net.parameters()).device
        real_x = real.val_x[:50].to(device)
        rows = torch.cat([torch.stack([real_x[i], net.reconstruct(real_x[i:i + 1])[0]]) for i in range(10)])
        save_image(rows.cpu(), str(out / "reconstructions.png"), nrow=10, padding=1)
        save_image(net.interpolate(real_x[:20], steps=10).cpu(), str(out / "interpolations.png"), nrow=10, padding=1)
        grids.update(reconstructions="reconstructions.png", interpolations="interpolations.png")
    return grids
