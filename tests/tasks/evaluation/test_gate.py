"""The quality gate's decisions and the promotion of a model to the published folder."""
from __future__ import annotations

import json
from pathlib import Path

from stylepipe.config import GateParams
from stylepipe.hashing import sha256_file
from tasks.evaluation import gate as eval_gate

GATE = GateParams(min_style_drop=0.2, min_ssim=0.1, max_latency_ms=1000, latency_size=512,
                  max_style_regression=0.1, max_ssim_drop=0.05)


def metrics(**over) -> dict:
    m = {"style_loss": 0.05, "style_loss_content": 0.4, "style_loss_drop": 0.875, "ssim": 0.3, "ms_512": 200.0}
    m.update(over)
    return m


def failed(checks: list[dict]) -> set[str]:
    return {c["name"] for c in checks if not c["passed"]}


def test_a_good_first_model_passes_every_check():
    checks = eval_gate.gate_checks(metrics(), GATE, comparison=None)
    assert [c["name"] for c in checks] == ["style", "ssim", "latency", "regression"]
    assert failed(checks) == set()


def test_each_threshold_blocks_on_its_own():
    assert failed(eval_gate.gate_checks(metrics(style_loss=0.4, style_loss_drop=0.0), GATE, None)) == {"style"}
    assert failed(eval_gate.gate_checks(metrics(ssim=0.05), GATE, None)) == {"ssim"}
    assert failed(eval_gate.gate_checks(metrics(ms_512=1500.0), GATE, None)) == {"latency"}
    # on the threshold itself: passes
    assert failed(eval_gate.gate_checks(metrics(style_loss_drop=0.2, ssim=0.1, ms_512=1000.0), GATE, None)) == set()


def test_the_style_message_gives_both_losses_and_the_requirement():
    (style,) = [c for c in eval_gate.gate_checks(metrics(style_loss=0.39, style_loss_drop=0.025), GATE, None)
                if c["name"] == "style"]
    assert "0.39" in style["message"] and "0.4" in style["message"] and "20%" in style["message"]
    assert style["value"] == 0.025 and style["threshold"] == 0.2


def comparison(cand_style: float, pub_style: float, cand_ssim: float, pub_ssim: float) -> dict:
    return {"candidate": {"style_loss": cand_style, "ssim": cand_ssim, "content_loss": 0.5},
            "published": {"style_loss": pub_style, "ssim": pub_ssim, "content_loss": 0.5},
            "published_sha256": "ab" * 32}


def test_regression_against_the_published_model():
    assert failed(eval_gate.gate_checks(metrics(), GATE, comparison(0.105, 0.1, 0.3, 0.3))) == set()
    assert failed(eval_gate.gate_checks(metrics(), GATE, comparison(0.12, 0.1, 0.3, 0.3))) == {"regression"}
    assert failed(eval_gate.gate_checks(metrics(), GATE, comparison(0.09, 0.1, 0.2, 0.3))) == {"regression"}
    # better on both counts
    assert failed(eval_gate.gate_checks(metrics(), GATE, comparison(0.05, 0.1, 0.35, 0.3))) == set()


def make_model(path: Path, tag: str) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(f"weights {tag}".encode())
    (path / "model.json").write_text(json.dumps({"tag": tag}))
    return path


def test_promote_copies_the_model_with_metrics_lineage_and_history(tmp_path):
    published = tmp_path / "published" / "swirls"
    first = make_model(tmp_path / "m1", "one")
    sha1 = sha256_file(first / "model.safetensors")
    assert eval_gate.published_sha(published) is None

    eval_gate.promote(first, published, {"style_loss": 0.1},
                      {"promoted_at": "t1", "model_sha256": sha1, "replaces_sha256": None})
    assert eval_gate.published_sha(published) == sha1
    assert json.loads((published / "metrics.json").read_text()) == {"style_loss": 0.1}
    assert json.loads((published / "model.json").read_text()) == {"tag": "one"}

    second = make_model(tmp_path / "m2", "two")
    sha2 = sha256_file(second / "model.safetensors")
    eval_gate.promote(second, published, {"style_loss": 0.05},
                      {"promoted_at": "t2", "model_sha256": sha2, "replaces_sha256": sha1})
    assert eval_gate.published_sha(published) == sha2
    assert json.loads((published / "lineage.json").read_text())["replaces_sha256"] == sha1
    history = [json.loads(line) for line in (published / "history.jsonl").read_text().splitlines()]
    assert [h["model_sha256"] for h in history] == [sha1, sha2]
    # no staging or retired folders left beside it
    assert sorted(p.name for p in published.parent.iterdir()) == ["swirls"]


def test_decide_covers_every_outcome():
    ok = eval_gate.gate_checks(metrics(), GATE, None)
    bad = eval_gate.gate_checks(metrics(ssim=0.0), GATE, None)
    assert eval_gate.decide(ok, "c" * 64, None, True) == (
        "promoted", "passed the gate; first published model of this style")
    assert eval_gate.decide(ok, "c" * 64, "p" * 64, True)[0] == "promoted"
    assert eval_gate.decide(ok, "c" * 64, None, False)[0] == "passed_not_promoted"
    decision, reason = eval_gate.decide(bad, "c" * 64, "p" * 64, True)
    assert decision == "blocked" and "SSIM" in reason
    decision, reason = eval_gate.decide(bad, "c" * 64, "c" * 64, True)
    assert decision == "already_published" and "no longer passes" in reason
