"""The evaluate stage end to end on a tiny data/ tree: metrics.json, the per-image table, the gate,
promotion, and the HTML report (rendered by headless Chromium when it is installed)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.johnson.network import build_network
from models.weights import save_model
from stylepipe.config import validate
from stylepipe.errors import StageError
from tasks import evaluate as ev
from tests.tasks.evaluation.test_metrics import photo

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STYLE = "stripes"
DATASET = "photos"
NAMES = ["aaa0", "bbb1", "ccc2"]


def save(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


def make_params(**evaluate) -> object:
    settings = {"image_size": 48, "report_images": 2, "thumb_size": 64, "device": "cpu",
                "timing_sizes": [32], "timing_repeats": 1,
                "gate": {"latency_size": 32, "max_latency_ms": 60000}}
    gate = evaluate.pop("gate", {})
    settings.update(evaluate)
    settings["gate"].update(gate)
    return validate({"datasets": {DATASET: {"kind": "photos", "sources": [{"url": "unused"}]}},
                     # a johnson model is evaluated; a Gatys one (no trained network) is not
                     "models": {STYLE: {"family": "johnson", "dataset": DATASET, "style": {"url": "unused"}},
                                "optimised": {"family": "gatys", "dataset": DATASET, "style": {"url": "unused"}}},
                     "evaluate": settings})


def val_dir(paths: ev.Paths) -> Path:
    return paths.processed / DATASET / "val"


def make_model(model_dir: Path, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_network("fast", "bilinear").eval()
    save_model(model_dir, net, {
        "family": "johnson", "style": STYLE, "model": STYLE, "dataset": DATASET, "network": "fast", "upsample": "bilinear", "encoder": "efficientnet_lite0", "style_layers": [],
        "content_layers": [], "weights": {}, "steps": 0, "image_size": 64, "train_data_sha256": "0" * 64,
        "style_image_sha256": "0" * 64, "code_version": "test", "seconds": 1.5, "device": "cpu",
        "final_losses": {"total": 1.0},
    })
    return net


@pytest.fixture
def tree(tmp_path) -> ev.Paths:
    """data/ with 3 validation photos, a striped style image, an untrained model, and stylized
    outputs that are exact copies of the photos (an identity 'stylization': no style at all)."""
    paths = ev.Paths.under(tmp_path)
    (paths.stylized / STYLE).mkdir(parents=True)
    for i, name in enumerate(NAMES):
        src = save(photo(56 + 8 * i, 72, seed=i), val_dir(paths) / f"{name}.png")
        shutil.copy(src, paths.stylized / STYLE / f"{name}.png")
    y, x = np.mgrid[0:96, 0:96]
    stripes = np.where(((x + y) // 6 % 2)[..., None] == 1, [0.95, 0.8, 0.1], [0.1, 0.2, 0.7])
    save(stripes, paths.styles / STYLE / "files" / "src-0123abcd" / "stripes.jpg")
    make_model(paths.models / STYLE, seed=0)
    paths.train_logs.mkdir(parents=True)
    (paths.train_logs / f"{STYLE}.tsv").write_text(
        "step\ttotal\tcontent\tstyle\ttv\n" + "".join(
            f"{s}\t{10 / s}\t{1.0}\t{9 / s}\t{0.1}\n" for s in range(5, 55, 5)))
    return paths


def write_results(paths: ev.Paths, make) -> None:
    """Replace the stylized outputs with make(photo array) for every validation image (JPEG)."""
    shutil.rmtree(paths.stylized / STYLE)
    for name in NAMES:
        arr = np.asarray(Image.open(val_dir(paths) / f"{name}.png").convert("RGB"), dtype=np.float32) / 255
        save(make(arr), paths.stylized / STYLE / f"{name}.jpg")


def style_blend(paths: ev.Paths, weight: float):
    style = Image.open(next((paths.styles / STYLE).rglob("*.jpg"))).convert("RGB")

    def make(arr):
        s = np.asarray(style.resize((arr.shape[1], arr.shape[0])), dtype=np.float32) / 255
        return (1 - weight) * arr + weight * s
    return make


LOOSE = {"min_style_drop": 0.2, "min_ssim": 0.05}


def test_identity_outputs_are_blocked_and_nothing_is_published(tree):
    summary = ev.evaluate(make_params(), tree)

    m = json.loads(tree.metrics.read_text())[STYLE]
    assert m["images"] == 3
    assert m["content_loss"] == pytest.approx(0.0, abs=1e-6)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["style_loss"] == pytest.approx(m["style_loss_content"])
    assert m["gate_passed"] == 0 and m["promoted"] == 0
    assert summary["styles"][STYLE]["metrics"]["gate_style"] == 0
    assert summary["styles"][STYLE]["decision"] == "blocked"
    assert "style loss" in summary["styles"][STYLE]["reason"]
    assert not (tree.published / STYLE).exists()


def test_metrics_json_is_flat_numbers_per_style(tree):
    write_results(tree, style_blend(tree, 0.5))
    ev.evaluate(make_params(gate=LOOSE), tree)

    metrics = json.loads(tree.metrics.read_text())
    assert list(metrics) == [STYLE]
    m = metrics[STYLE]
    assert all(type(v) in (int, float) for v in m.values()), m
    for key in ("images", "style_loss", "style_loss_content", "style_loss_drop", "content_loss", "ssim",
                "colour_distance", "colour_distance_content", "params", "gflops_512",
                "train_steps", "gate_passed", "promoted"):
        assert key in m, key
    # each check's flag is in the report's summary, not a metrics column
    assert not any(k.startswith("gate_") and k != "gate_passed" for k in m)
    # timings are the machine's, kept apart from the DVC-tracked metrics
    assert not any(k.startswith("ms_") or k.endswith("_seconds") for k in m)
    assert json.loads((tree.metrics.parent / "timings.json").read_text())[STYLE]["ms_32"] > 0
    assert "lpips" not in m  # unavailable offline: left out, never estimated
    assert m["style_loss"] < m["style_loss_content"]
    assert 0 < m["ssim"] < 1 and m["params"] > 1000


def test_a_passing_model_is_published_then_compared_with_the_next_one(tree):
    write_results(tree, style_blend(tree, 0.5))
    summary = ev.evaluate(make_params(gate=LOOSE), tree)
    assert summary["styles"][STYLE]["decision"] == "promoted"
    published = tree.published / STYLE
    assert (published / "model.safetensors").read_bytes() == (tree.models / STYLE / "model.safetensors").read_bytes()
    lineage = json.loads((published / "lineage.json").read_text())
    assert lineage["model"]["code_version"] == "test" and lineage["evaluation"]["val_images"] == NAMES
    assert json.loads((published / "metrics.json").read_text())["promoted"] == 1

    # the same model again: nothing to compare, nothing copied
    again = ev.evaluate(make_params(gate=LOOSE), tree)
    assert again["styles"][STYLE]["decision"] == "already_published"
    assert json.loads(tree.metrics.read_text())[STYLE]["promoted"] == 1

    # a different model: compared head to head with the published one on the same images
    make_model(tree.models / STYLE, seed=1)
    strict = make_params(gate={**LOOSE, "max_style_regression": 0.0, "max_ssim_drop": 0.0})
    third = ev.evaluate(strict, tree)["styles"][STYLE]
    comp = third["comparison"]
    assert comp is not None and comp["published_sha256"] == lineage["model_sha256"]
    m = third["metrics"]  # the head-to-head is in the summary (metrics.json keeps the headline)
    assert m["vs_published_style_loss_ratio"] == pytest.approx(
        comp["candidate"]["style_loss"] / comp["published"]["style_loss"], rel=1e-4)
    worse = comp["candidate"]["style_loss"] > comp["published"]["style_loss"] or (
        comp["candidate"]["ssim"] < comp["published"]["ssim"])
    assert m["gate_regression"] == int(not worse)
    if worse:  # two untrained networks: one of them is worse on some count
        assert third["decision"] == "blocked"
        assert eval_sha(published) == lineage["model_sha256"]


def eval_sha(published: Path) -> str:
    from tasks.evaluation.gate import published_sha
    return published_sha(published)


def test_an_untrained_network_is_blocked(tree):
    """A deliberately bad model: the untrained network's own outputs are what gets evaluated."""
    net = make_model(tree.models / STYLE, seed=0)

    def run(arr):
        with torch.no_grad():
            return net(torch.from_numpy(arr).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    write_results(tree, run)
    summary = ev.evaluate(make_params(), tree)
    assert summary["styles"][STYLE]["decision"] == "blocked"
    assert json.loads(tree.metrics.read_text())[STYLE]["gate_passed"] == 0
    assert not (tree.published / STYLE).exists()


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
        if tag == "a" and not a.get("href", "#").startswith("#"):
            self.links.append(a["href"])


def test_report_has_one_grid_row_per_shown_image_with_its_files(tree):
    ev.evaluate(make_params(report_images=2), tree)
    report = tree.report
    page = (report / "index.html").read_text()
    parser = Images()
    parser.feed(page)
    for src in parser.srcs + parser.links:
        assert (report / src).is_file(), src
    shown = NAMES[:2]
    assert [s for s in parser.srcs if s.startswith("images/content/")] == [f"images/content/{n}.jpg" for n in shown]
    assert [s for s in parser.srcs if re.fullmatch(rf"images/{STYLE}/\w+\.jpg", s) and "style" not in s] == [
        f"images/{STYLE}/{n}.jpg" for n in shown]
    assert parser.srcs.count(f"images/{STYLE}/style.jpg") == len(shown)
    assert f"images/{STYLE}/losses.png" in parser.srcs
    assert "Blocked by the gate" in page and "unavailable" in page
    # every card shows a value: timings stay out of this DVC output, so no card may wait for one
    cards = re.findall(r'<div class="v(?: text)?">([^<]*)</div>', page)
    assert cards and "–" not in cards, cards
    with open(report / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == NAMES and {r["style"] for r in rows} == {STYLE}
    assert float(rows[0]["ssim"]) == pytest.approx(1.0, abs=1e-6)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["styles"][STYLE]["gate"]["passed"] is False


def test_missing_training_log_is_reported_not_fatal(tree):
    (tree.train_logs / f"{STYLE}.tsv").unlink()
    ev.evaluate(make_params(), tree)
    assert "No training log" in (tree.report / "index.html").read_text()


def test_missing_inputs_are_stage_errors(tree):
    (tree.stylized / STYLE / f"{NAMES[1]}.png").unlink()
    with pytest.raises(StageError, match="run the infer stage"):
        ev.evaluate(make_params(), tree)
    shutil.rmtree(tree.styles / STYLE)
    with pytest.raises(StageError, match="style image.*run the download stage"):
        ev.evaluate(make_params(), tree)


def test_a_style_image_without_an_extension_is_found_by_its_content(tmp_path):
    folder = tmp_path / "models" / "p" / "files" / "painting-0123abcd"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "painting", "JPEG")  # from .../painting?id=3
    (folder / "notes").write_text("not an image")
    assert ev.find_style_image(tmp_path / "models", "p") == folder / "painting"
    (folder / "copy").write_bytes((folder / "painting").read_bytes())
    with pytest.raises(StageError, match="exactly one style image, found 2 images"):
        ev.find_style_image(tmp_path / "models", "p")


def test_main_exits_1_with_a_clear_message(tree, tmp_path, monkeypatch, caplog):
    (tmp_path / "params.yaml").write_text(json.dumps(make_params().model_dump(mode="json")))
    shutil.rmtree(val_dir(tree))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        ev.main([])
    assert exit_info.value.code == 1
    assert "no validation images" in caplog.text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
# Appended to a copy of the page: once everything has loaded, the title says how many images
# there are and how many decoded to a real picture.
PROBE = """<script>window.addEventListener("load", () => {
  const all = [...document.images];
  const ok = all.filter(i => i.complete && i.naturalWidth > 0);
  document.title = `IMAGES ${all.length} LOADED ${ok.length}`;
});</script>"""


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": profile})


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium_with_every_image_loaded(tree, tmp_path):
    write_results(tree, style_blend(tree, 0.5))
    ev.evaluate(make_params(gate=LOOSE, report_images=3), tree)
    page = (tree.report / "index.html").read_text()
    probe = tree.report / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))

    done = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    title = re.search(r"<title>(.*?)</title>", done.stdout)
    assert title, done.stderr[-2000:]
    # 3 photos + 3 style thumbnails + 3 results + the loss curve
    assert title.group(1) == "IMAGES 10 LOADED 10"

    shot = tmp_path / "report.png"
    chromium("--window-size=1280,1800", f"--screenshot={shot}", (tree.report / "index.html").as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1800, 1280)
    assert pixels.std() > 10  # a rendered page, not a blank one


def with_adain_model(tree: ev.Paths):
    """An untrained adain model `any` in the tree (a paintings dataset `paintings` beside the
    photos), and params that hold it."""
    from models.adain.network import build_adain

    torch.manual_seed(0)
    net = build_adain("efficientnet_lite0", "block3.expand", ["stem", "block3.expand"], 144, 4, [16, 8, 8],
                      pretrained=True)
    save_model(tree.models / "any", net, {"family": "adain", "encoder": "efficientnet_lite0",
                                          "layer": "block3.expand", "style_layers": ["stem", "block3.expand"],
                                          "channels": 144, "stride": 4, "widths": [16, 8, 8], "steps": 7})
    raw = make_params(gate=LOOSE).model_dump()
    raw["datasets"]["paintings"] = {"kind": "photos", "sources": [{"url": "unused"}]}
    raw["models"]["any"] = {"family": "adain", "dataset": DATASET, "train": {"styles": "paintings"}}
    return validate(raw)


def test_an_adain_model_is_scored_per_held_out_painting(tree):
    """An adain model: every held-out painting (its paintings dataset's val split) x the held-out
    photos, with the style models' yardstick; training paintings are not scored."""
    from tests.tiny_training import write_paintings

    write_paintings(tree.processed / "paintings", train=1, val=2)
    write_results(tree, style_blend(tree, 0.5))
    summary = ev.evaluate(with_adain_model(tree), tree)

    m = json.loads(tree.metrics.read_text())["any"]
    held_out = sorted(p.stem for p in (tree.processed / "paintings" / "val").glob("*.png"))
    assert m["paintings"] == 2 and m["images"] == len(NAMES) and m["train_steps"] == 7
    for key in ("style_loss_drop", "ssim", "colour_distance"):
        per = [m[f"{key}_{p}"] for p in held_out]
        assert m[key] == pytest.approx(np.mean(per), abs=1e-5)
    assert not any(k.endswith("0000000000000000") for k in m)  # the training painting is not scored
    assert m["style_loss_drop_" + held_out[0]] != m["style_loss_drop_" + held_out[1]]
    assert -1 < m["ssim"] < 1
    rows = summary["adain"]["any"]["images"]
    assert len(rows) == 2 * len(NAMES) and {r["painting"] for r in rows} == set(held_out)
    assert json.loads((tree.report / "summary.json").read_text())["adain"]["any"]["paintings"].keys() == set(held_out)
    page = (tree.report / "index.html").read_text()
    assert 'id="model-any"' in page
    shown = re.findall(r'src="(images/any/[^"]+)"', page)
    # the table's 2 paintings, then per painting a row per photo (report_images: 2): painting, photo, result
    assert len(shown) == 2 + 2 * 2 * 3 and all((tree.report / s).is_file() for s in shown)


def test_adain_is_shown_beside_the_per_style_network_of_the_same_painting(tree):
    """A held-out painting that a johnson model was trained on (preprocess names it by its file's
    sha256[:16]): that network is run on the same photos and scored against the same painting."""
    from stylepipe.hashing import sha256_file
    from tests.tiny_training import write_paintings

    write_paintings(tree.processed / "paintings", train=1, val=1)
    style_file = next((tree.styles / STYLE).rglob("stripes.jpg"))
    twin = sha256_file(style_file)[:16]
    Image.open(style_file).save(tree.processed / "paintings" / "val" / f"{twin}.png")
    write_results(tree, style_blend(tree, 0.5))
    summary = ev.evaluate(with_adain_model(tree), tree)

    per_painting = summary["adain"]["any"]["paintings"]
    assert [p for p, pm in per_painting.items() if "per_style" in pm] == [twin]
    side = per_painting[twin]["per_style"]
    assert side["model"] == STYLE and side["ssim"] != per_painting[twin]["ssim"]
    # the johnson network's own numbers on the same photos and painting, computed here by hand
    tools, _ = ev.build_tools(make_params(gate=LOOSE).evaluate, tree)
    johnson = make_model(tree.models / "again", seed=0)  # the tree's johnson model: the same seed
    ssims = [ev.em.ssim(c.arr, ev.em.run_network(johnson, c.arr, tools.device))
             for c in (ev.load_content(p, 48, tools) for p in ev.find_val_images(val_dir(tree)))]
    assert side["ssim"] == pytest.approx(np.mean(ssims), abs=1e-6)
    m = json.loads(tree.metrics.read_text())["any"]
    assert m[f"ssim_{twin}_{STYLE}"] == pytest.approx(side["ssim"], abs=1e-5)
    page = (tree.report / "index.html").read_text()
    assert f"{STYLE} (per-style network)" in page
    assert len(re.findall(r'src="images/any/[^"]+-per-style\.jpg"', page)) == 2  # report_images photos
