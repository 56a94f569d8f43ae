"""Translation metrics: paired scores and the identity baseline, distances to the target domain,
cycle error, the grid; and evaluate's translator hook on a (random) cyclegan model."""
from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from tasks.evaluation import translation as tr
from tests.tiny_training import write_pairs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stems(folder):
    return {p.stem: p for p in sorted(folder.glob("*.png"))}


def test_paired_metrics_against_the_identity_baseline(tmp_path):
    val = write_pairs(tmp_path / "val", 4)
    a, b = stems(val / "A"), stems(val / "B")
    perfect = tr.paired_metrics(b, a, b)      # outputs = the targets
    assert perfect["pairs"] == 4 and perfect["l1"] == 0 and perfect["psnr"] == 100 and perfect["ssim"] == pytest.approx(1)
    assert perfect["identity_l1"] > 0.1 and perfect["identity_psnr"] < 20
    lazy = tr.paired_metrics(a, a, b)         # outputs = the inputs: exactly the identity baseline
    for k in ("l1", "psnr", "ssim"):
        assert lazy[k] == pytest.approx(lazy[f"identity_{k}"])
    assert tr.paired_metrics(a, a, {}) == {}


def test_evaluate_translator(tmp_path, monkeypatch):
    from stylepipe.config import validate
    from tasks.evaluate import Paths, evaluate_translator
    from tasks.evaluation.distributions import effnet_extractor
    from tests.tasks.bulk.test_translate import random_translator

    params = validate({"datasets": {"d": {"kind": "unpaired", "sources": [{"url": "x"}]}},
                       "models": {"m": {"family": "cyclegan", "dataset": "d", "train": {"ngf": 4, "ndf": 4, "n_blocks": 1}}}})
    paths = Paths.under(tmp_path)
    random_translator(paths.models / "m", "cyclegan")
    write_pairs(paths.processed / "d" / "val", 6)
    write_pairs(paths.processed / "d" / "train", 6)
    shutil.copytree(paths.processed / "d" / "val" / "B", paths.stylized / "m")  # "outputs": the true targets
    r = evaluate_translator("m", params.models["m"], params.evaluate, paths, torch.device("cpu"),
                            effnet_extractor(torch.device("cpu")))
    m = r["metrics"]
    assert m["images"] == m["pairs"] == 6 and m["psnr"] == 100 and m["identity_psnr"] < 20
    assert m["fd_effnetl0"] == pytest.approx(0, abs=1e-3) and m["fd_effnetl0_inputs"] > 1
    assert abs(m["kid_effnetl0"]) < m["kid_effnetl0_inputs"] and "floor_kid_effnetl0" in m
    assert "floor_fd_effnetl0" in m and m["cycle_l1"] > 0   # a random model does not cycle back
    with Image.open(paths.report / r["grid"]) as grid:
        assert grid.size[1] > 6 * 64
    # the report shows it: its scores beside the baselines and the grid
    from tasks.evaluation import report

    summary = {"evaluation": {"encoder": "efficientnet_lite0", "style_layers": [], "content_layers": [],
                              "image_size": 256, "timing_repeats": 1,
                              "gate": params.evaluate.gate.model_dump()},
               "lpips": {"available": False, "note": ""}, "styles": {}, "generators": {}, "translators": {"m": r}}
    html = report.write_report(summary, paths.report, params.evaluate).read_text()
    assert 'id="model-m"' in html and r["grid"] in html and "identity" in html
