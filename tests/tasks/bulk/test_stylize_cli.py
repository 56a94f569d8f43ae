"""`stylepipe stylize`: dry run, limit, exit codes by threshold, option errors that name the flag."""
from __future__ import annotations

import pytest

from stylepipe.cli import main
from tests.tasks.bulk.test_support import make_photos, output_files, tiny_model  # noqa: F401


@pytest.fixture
def src(tmp_path):
    make_photos(tmp_path / "src", ["a.jpg", "b.jpg", "c/d.png"])
    return tmp_path / "src"


def stylize(*args: str) -> int:
    return main(["stylize", *map(str, args), "--quiet", "--workers", "0"])


def test_dry_run_counts_and_writes_nothing(src, tmp_path, tiny_model, capsys):
    out = tmp_path / "out"
    assert stylize(src, "--model", tiny_model, "--out", out, "--dry-run") == 0
    assert "3 inputs (3 outputs) to stylize" in capsys.readouterr().out
    assert not out.exists()


def test_limit_then_resume(src, tmp_path, tiny_model, capsys):
    out = tmp_path / "out"
    assert stylize(src, "--model", tiny_model, "--out", out, "--limit", "2") == 0
    assert len(output_files(out)) == 2 and "1 pending" in capsys.readouterr().out
    assert stylize(src, "--model", tiny_model, "--out", out) == 0
    assert "stylized 1 inputs" in capsys.readouterr().out
    assert output_files(out) == ["a.jpg", "b.jpg", "c/d.jpg"]


def test_exit_code_follows_the_failure_threshold(src, tmp_path, tiny_model, capsys):
    (src / "bad.jpg").write_bytes(b"nope")
    assert stylize(src, "--model", tiny_model, "--out", tmp_path / "o1") == 1  # 1 of 4 > 0.01
    assert "more than --max-failed-fraction" in capsys.readouterr().err
    assert stylize(src, "--model", tiny_model, "--out", tmp_path / "o2", "--max-failed-fraction", "0.3") == 0


@pytest.mark.parametrize("extra,message", [
    (["--tile-size", "1024", "--tile-overlap", "600"], "--tile-overlap"),
    (["--strength", "0.5", "0.5"], "one per --model"),
    (["--strength", "1.5"], "between 0 and 1"),
])
def test_bad_options_name_the_flag(src, tmp_path, tiny_model, capsys, extra, message):
    assert stylize(src, "--model", tiny_model, "--out", tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err


def test_missing_source_and_model(tmp_path, tiny_model, capsys):
    assert stylize(tmp_path / "nothing", "--model", tiny_model, "--out", tmp_path / "out") == 1
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "src").mkdir()
    assert stylize(tmp_path / "src", "--model", tmp_path / "no-model", "--out", tmp_path / "out") == 1
    assert "model.safetensors: no such file" in capsys.readouterr().err


def test_output_folder_may_not_contain_the_source(src, tiny_model, capsys):
    assert stylize(src, "--model", tiny_model, "--out", src) == 1
    assert "could overwrite inputs" in capsys.readouterr().err


def test_out_naming_an_existing_file_is_refused(src, tmp_path, tiny_model, capsys):
    target = tmp_path / "taken.jpg"
    target.write_bytes(b"mine")
    assert stylize(src / "a.jpg", "--model", tiny_model, "--out", target) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not a folder" in err and len(err.strip().splitlines()) == 1
    assert target.read_bytes() == b"mine"


@pytest.mark.parametrize("flag", ["--limit", "--max-input-bytes"])
def test_negative_counts_are_refused(src, tmp_path, tiny_model, capsys, flag):
    assert stylize(src, "--model", tiny_model, "--out", tmp_path / "out", flag, "-1") == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ledger_command_says_what_a_job_did(src, tmp_path, tiny_model, capsys):
    out = tmp_path / "out"
    (src / "bad.jpg").write_bytes(b"nope")
    (src / "notes.txt").write_text("not an image")
    stylize(src, "--model", tiny_model, "--out", out)
    capsys.readouterr()

    assert main(["ledger", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 done" in text and "1 failed" in text and "1 ignored" in text
    assert "not-an-image" in text and "bad.jpg" in text

    assert main(["ledger", str(out), "--failed", "--csv"]) == 0
    import csv
    import io
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["relpath"], r["status"], r["code"]) for r in rows] == [("bad.jpg", "failed", "not-an-image")]
    assert rows[0]["reason"].startswith("not-an-image")

    assert main(["ledger", str(tmp_path / "nowhere")]) == 2
    assert "no ledger" in capsys.readouterr().err
