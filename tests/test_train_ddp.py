"""torchrun DDP on CPU: two gloo processes train the tiny config and match a one-process run's
step count and loss range. Real processes, real process group, through `python -m tasks.train`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT
from tests.tiny_training import TINY_TRAIN, write_painting, write_photos

TRAIN = {**TINY_TRAIN, "steps": 12, "log_every": 4, "checkpoint_every": 4, "device": "cpu"}


def make_workspace(root: Path) -> Path:
    """params.yaml + the data/ layout train reads (data/processed/train, data/raw/styles/<style>)."""
    write_photos(root / "data" / "processed" / "train", 6)
    write_painting(root / "data" / "raw" / "styles" / "tiny" / "files" / "src-0" / "paint.png")
    params = {"download": {"content": [{"url": "x"}]}, "styles": {"tiny": {"source": {"url": "y"}}},
              "train": TRAIN}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def train_in(workdir: Path, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    if processes == 1:
        cmd = [sys.executable, "-m", "tasks.train", "--style", "tiny"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "tasks.train", "--style", "tiny"]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)

def read_log(path: Path) -> list[list[float]]:
    lines = path.read_text().splitlines()
    return [[float(v) for v in line.split("\t")] for line in lines[1:]]

def test_two_gloo_processes_match_the_single_process_run(tmp_path):
    single, ddp = make_workspace(tmp_path / "single"), make_workspace(tmp_path / "ddp")
    for workdir, n in ((single, 1), (ddp, 2)):
        result = train_in(workdir, n)
        assert result.returncode == 0, result.stderr[-3000:]

    one = json.loads((single / "data/models/tiny/model.json").read_text())
    two = json.loads((ddp / "data/models/tiny/model.json").read_text())
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["steps"] == two["steps"] == TRAIN["steps"]

    log_one, log_two = read_log(single / "metrics/train/tiny.tsv"), read_log(ddp / "metrics/train/tiny.tsv")
    assert [r[0] for r in log_one] == [r[0] for r in log_two] == [4, 8, 12]
    for rows in (log_one, log_two):
        assert rows[-1][1] < rows[0][1]  # both learn
    # same task, twice the crops per step: the losses stay in the same range
    for a, b in zip(log_one, log_two):
        assert 0.5 < b[1] / a[1] < 2, (a, b)
    assert not (ddp / ".cache/checkpoints/tiny").exists()  # rank 0 cleaned up after the final save
