"""Object storage for real: bulk jobs from s3:// to s3:// on moto's standalone S3 server, killed
with -9 mid-run and resumed (each object written exactly once: the output bucket is versioned, so a
second write of a key would leave a second version); `dvc push` / `dvc pull` through the same server."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

from tasks.bulk.plan import default_ledger
from tests.conftest import run
from tests.services.s3 import client
from tests.tasks.bulk.test_support import encoded, ledger_rows, photo, tiny_model  # noqa: F401

pytestmark = pytest.mark.slow

IMAGES = [f"{'sub/' if i % 3 == 0 else ''}{i:02d}.jpg" for i in range(60)]
SRC, OUT = "s3://stylepipe-src/photos", "s3://stylepipe-out/styled"


def objects(s3, bucket: str, prefix: str) -> dict[str, int]:
    """key -> number of versions."""
    counts: dict[str, int] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            counts[v["Key"]] = counts.get(v["Key"], 0) + 1
    return counts


def start(model: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "stylepipe.cli", "stylize", SRC, "--model", str(model), "--out", OUT,
           "--quiet", "--batch-size", "2", "--workers", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            children = psutil.Process(proc.pid).children(recursive=True)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            _, alive = psutil.wait_procs(children, timeout=20)
            assert alive == [], f"worker processes outlived the kill: {alive}"
            return True
        time.sleep(0.05)
    proc.communicate(timeout=timeout)
    return False


def test_s3_to_s3_kill_9_and_resume_writes_each_object_once(s3_server, tiny_model, tmp_path):
    s3 = client(s3_server)
    s3.create_bucket(Bucket="stylepipe-src")
    s3.create_bucket(Bucket="stylepipe-out")
    s3.put_bucket_versioning(Bucket="stylepipe-out", VersioningConfiguration={"Status": "Enabled"})
    for i, name in enumerate(IMAGES):
        s3.put_object(Bucket="stylepipe-src", Key=f"photos/{name}", Body=encoded(photo(224, 160, seed=i)))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def written() -> int:
        return len(objects(s3, "stylepipe-out", "styled/"))

    counts = []
    for more in (1, 8):  # kill as the first objects land, then well into the run
        before = written()
        killed = kill_when(start(tiny_model, env), lambda: written() >= before + more)
        counts.append(written())
        assert killed, "the job finished before the kill; make the work bigger"
    assert 0 < counts[-1] < len(IMAGES)

    done = start(tiny_model, env)
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    versions = objects(s3, "stylepipe-out", "styled/")
    assert sorted(versions) == sorted(f"styled/{n}" for n in IMAGES)
    assert set(versions.values()) == {1}, {k: v for k, v in versions.items() if v != 1}
    for key in list(versions)[:10]:
        body = s3.get_object(Bucket="stylepipe-out", Key=key)["Body"].read()
        Image.open(io.BytesIO(body)).load()

    # The ledger lives on the local disk ($XDG_CACHE_HOME/stylepipe/bulk/...), one done row per image.
    os.environ["XDG_CACHE_HOME"], saved = str(tmp_path / "cache"), os.environ.get("XDG_CACHE_HOME")
    try:
        ledger = default_ledger(OUT)
    finally:
        os.environ.pop("XDG_CACHE_HOME") if saved is None else os.environ.__setitem__("XDG_CACHE_HOME", saved)
    assert ledger.is_relative_to(tmp_path / "cache")
    rows = ledger_rows(ledger)
    assert len(rows) == len(IMAGES) and {r["status"] for r in rows} == {"done"}

    # A fourth run has nothing left to do and writes nothing.
    again = start(tiny_model, env)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "stylized 0 inputs" in out
    assert objects(s3, "stylepipe-out", "styled/") == versions
    adopted = sum(r["reason"] == "found in object storage" for r in rows)
    print(f"objects after each kill: {counts}; after resume: {len(versions)}, versions per key: 1; "
          f"{adopted} uploaded before a kill and recorded on resume without a second write")


def test_dvc_push_pull_through_s3(s3_server, tmp_path):
    client(s3_server).create_bucket(Bucket="stylepipe-dvc")
    repo = tmp_path / "repo"
    repo.mkdir()
    data = repo / "data"
    data.mkdir()
    (data / "a.bin").write_bytes(os.urandom(50_000))
    (data / "b.txt").write_text("hello\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "add", "data"],
                ["dvc", "remote", "add", "-d", "store", "s3://stylepipe-dvc/cache"],
                ["dvc", "remote", "modify", "store", "endpointurl", s3_server]):
        result = run(cmd, cwd=repo)
        assert result.returncode == 0, result.stderr
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    result = run(["dvc", "push"], cwd=repo)
    assert result.returncode == 0, result.stderr
    assert client(s3_server).list_objects_v2(Bucket="stylepipe-dvc")["KeyCount"] >= 3  # 2 files + the .dir

    subprocess.run(["rm", "-rf", "data", ".dvc/cache"], cwd=repo, check=True)
    result = run(["dvc", "pull"], cwd=repo)
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_tars_to_s3_one_object_per_tar_and_a_lost_tar_is_redone(s3_server, tiny_model, tmp_path, monkeypatch):
    """--tar-size with an object-storage --out: each tar is uploaded once it is complete, in one
    request (tasks/bulk/tar_output.py); the ledger, local, names each output in its tar."""
    import tarfile

    from tasks.bulk.engine import stylize
    from tasks.bulk.tar_output import split_output
    from tests.tasks.bulk.test_support import make_job, make_photos

    s3 = client(s3_server)
    s3.create_bucket(Bucket="stylepipe-tars")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_photos(tmp_path / "src", IMAGES[:30])
    out = "s3://stylepipe-tars/styled"
    job = make_job(tmp_path / "src", out, tiny_model, tar_size=12)
    assert stylize(job, progress=False).done == 30

    def tars() -> dict[str, list[str]]:
        found = {}
        for key in objects(s3, "stylepipe-tars", "styled/"):
            body = s3.get_object(Bucket="stylepipe-tars", Key=key)["Body"].read()
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                found[key] = tar.getnames()
        return found

    first = tars()
    assert [len(names) for names in first.values()] == [12, 12, 6]
    assert all(key.startswith("styled/tar/") for key in first)
    rows = ledger_rows(default_ledger(out))
    assert sorted(split_output(r["output"])[1] for r in rows) == sorted(n for names in first.values() for n in names)
    assert {f"styled/{split_output(r['output'])[0]}" for r in rows} == set(first)
    assert stylize(job, progress=False).run.processed == 0

    lost = sorted(first)[0]
    s3.delete_object(Bucket="stylepipe-tars", Key=lost)
    again = stylize(job, progress=False)
    assert again.run.processed == len(first[lost]) and again.done == 30
    after = tars()
    assert sorted(n for names in after.values() for n in names) == sorted(n for names in first.values() for n in names)
