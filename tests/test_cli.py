import difflib
import os
import re
import subprocess
import sys

import pytest

from models.sidecar import SIDECAR_FILE
from stylepipe.cli import build_parser, main


@pytest.mark.parametrize("command", [[], ["run"], ["stylize"], ["sample"], ["styles"], ["nightly"], ["dag"]])
def test_every_command_has_help(command):
    out = subprocess.run([sys.executable, "-m", "stylepipe.cli", *command, "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: stylepipe")


def test_commands_listed():
    help_text = build_parser().format_help()
    for name in ("run", "stylize", "sample", "styles", "nightly", "dag"):
        assert name in help_text


def test_bad_set_fails_before_running(project_copy, capsys):
    before = (project_copy / "params.yaml").read_bytes()
    assert main(["run", "--repo", str(project_copy), "--set", "models.swirls.train.steps=zero"]) == 2
    err = capsys.readouterr().err
    assert "models.swirls.train.steps: Input should be a valid integer" in err and "zero" in err
    # the layout before models: (a top-level train section) is refused too, not silently ignored
    assert main(["run", "--repo", str(project_copy), "--set", "train.steps=10"]) == 2
    assert "train: Extra inputs are not permitted" in capsys.readouterr().err
    assert (project_copy / "params.yaml").read_bytes() == before


def test_run_outside_project(tmp_path, capsys):
    assert main(["run", "--repo", str(tmp_path)]) == 2
    assert "no dvc.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("set_by_user", [None, "45"])
def test_the_embedded_server_gets_time_to_start_unless_the_user_said(tmp_path, monkeypatch, set_by_user):
    """Prefect's 20 s for its temporary server failed `stylepipe run` on 2 busy cores."""
    name = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    if set_by_user:
        monkeypatch.setenv(name, set_by_user)
    else:
        monkeypatch.delenv(name, raising=False)
    main(["run", "--repo", str(tmp_path)])  # fails (no dvc.yaml) after the environment is set
    assert os.environ[name] == (set_by_user or "120")


def test_dag_prints_stage_order(project_copy, capsys):
    assert main(["dag", "--repo", str(project_copy)]) == 0
    lines = capsys.readouterr().out.split()
    assert lines[0] == "download" and lines[-1] == "evaluate"


def test_set_keeps_params_yaml_byte_for_byte(project_copy, monkeypatch):
    """--set changes the value's bytes and nothing else: comments, quoting, flow-style lines."""
    from stylepipe.config import write_overrides

    path = project_copy / "params.yaml"
    before = path.read_text()
    write_overrides(path, ["models.swirls.train.batch_size=2", "models.digits.train.steps=5",
                           "schedule.cron=30 1 * * *", "evaluate.timing_sizes=[256]"])
    after = path.read_text()
    expected = before
    for pattern, replacement in [(r"(?m)^(      batch_size: )\d+$", r"\g<1>2"),     # swirls' block style
                                 (r"train: \{steps: \d+\}", "train: {steps: 5}"),  # digits' flow style
                                 (r'cron: "0 2 \* \* \*"', 'cron: "30 1 * * *"'),
                                 (r"timing_sizes: \[256, 512, 1024\]", "timing_sizes: [256]")]:
        expected, n = re.subn(pattern, replacement, expected, count=1)
        assert n == 1, f"params.yaml no longer has {pattern!r}: update this test"
    assert after == expected


def test_set_of_a_new_key_adds_only_that_line(project_copy):
    """A key params.yaml does not have yet (a preset's steps, say) is added; the rest, its `null`s
    included, stays as it was."""
    from stylepipe.config import write_overrides

    path = project_copy / "params.yaml"
    before = path.read_text()
    assert "      steps:" not in before.split("digits:")[0] and ": null" in before
    write_overrides(path, ["models.swirls.train.steps=800"])
    added = [line for line in difflib.ndiff(before.splitlines(), path.read_text().splitlines()) if line[:1] in "+-"]
    assert added == ["+       steps: 800"]


def test_bad_cron_rejected_before_anything_starts(project_copy, capsys):
    before = (project_copy / "params.yaml").read_bytes()
    assert main(["run", "--repo", str(project_copy), "--set", "schedule.cron=not a cron"]) == 2
    assert "schedule.cron" in capsys.readouterr().err
    assert (project_copy / "params.yaml").read_bytes() == before


def test_unknown_stage_is_one_line_with_the_valid_names(project_copy, capsys):
    assert main(["run", "--repo", str(project_copy), "--stage", "trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "trian" in err and "train@swirls" in err and "evaluate" in err


def test_experiments_view_drops_dependency_hashes_floors_and_gate_checks():
    from stylepipe.cli import EXPERIMENT_DROP

    dropped = ["Created", "data/models/swirls", "models/family.py", "tasks/bulk", "sources",
               "digits.floor_fd_effnetl0", "swirls.gate_ssim", "digits.gate_label_accuracy", "digits.recall",
               "digits.label_accuracy_min_class", "swirls.style_loss", "swirls.ms_512"]
    kept = ["models.swirls.train.steps", "evaluate.generation_samples", "swirls.style_loss_drop",
            "digits.label_accuracy", "digits.gate_passed", "swirls.gate_passed", "digits.confident_fraction",
            "digits.fd_effnetl0", "swirls.ssim", "digits.classes_recognised", "models.swirls.train.style_weight"]
    # dvc exp show --drop matches at the start of a column name (re.match)
    assert [c for c in dropped if not re.match(EXPERIMENT_DROP, c)] == []
    assert [c for c in kept if re.match(EXPERIMENT_DROP, c)] == []
    args = build_parser().parse_args(["experiments", "--repo", "."])
    assert args.func.__name__ == "cmd_experiments"


def test_experiments_runs_this_interpreters_dvc_without_it_on_path(monkeypatch, tmp_path):
    import stylepipe.cli as cli

    calls = []
    monkeypatch.setenv("PATH", str(tmp_path))  # no dvc, no venv
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, cwd: calls.append(cmd) or 0)
    assert main(["experiments", "--repo", "."]) == 0
    assert calls[0][:5] == [sys.executable, "-m", "dvc", "exp", "show"]


@pytest.mark.parametrize("options, says", [
    (["--labels", "a,b"], "--labels a,b: comma-separated class numbers"),
    (["--labels", "1,,2"], "--labels 1,,2: comma-separated class numbers"),
    (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1"),
    (["--workers", "-1"], "--workers: Input should be greater than or equal to 0"),
    (["--tar-size", "-1"], "--tar-size: Input should be greater than or equal to 0"),
])
def test_sample_refuses_bad_options_in_one_line(tmp_path, capsys, options, says):
    """(each was a traceback, and --batch-size 0 silently meant 256)"""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / SIDECAR_FILE).write_text('{"family": "cgan", "conditional": true, "num_classes": 3}')
    assert main(["sample", str(tmp_path / "m"), "--count", "2", "--out", str(tmp_path / "out"), "--quiet",
                 *options]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
