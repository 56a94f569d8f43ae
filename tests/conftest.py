"""Shared fixtures. Prefect gets a private PREFECT_HOME and one temporary server per test session
(it takes 10-20 s to start), started only when a test asks for `prefect_server`."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="stylepipe-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
# DVC would otherwise start a `dvc daemon analytics` process after each command of the pipeline tests.
os.environ["DVC_NO_ANALYTICS"] = "1"
# The user's cache (~/.cache/stylepipe: remote jobs' ledgers, ONNX exports, backend choices) stays
# untouched by the tests: theirs is a private one.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="stylepipe-cache-")

REPO_ROOT = Path(__file__).resolve().parents[1]
# What a clone of the project holds (plus its committed .dvc/config); never data/ or caches.
PROJECT_FILES = ["assets", "flows", "models", "stylepipe", "tasks", "sources", "dvc.yaml", "params.yaml",
                 ".dvcignore", ".gitignore", "pyproject.toml"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny tensors (use: pytestmark = pytest.mark.usefixtures("one_torch_thread")):
    one thread is faster than two there, and immune to a busy machine's scheduling."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, **kwargs)


def make_project_copy(dest: Path) -> Path:
    """A fresh git + DVC repository holding the project's files, as a clone would."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy2(REPO_ROOT / ".dvc/config", dest / ".dvc/config")
    shutil.copy2(REPO_ROOT / ".dvc/.gitignore", dest / ".dvc/.gitignore")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    return make_project_copy(tmp_path / "project")


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1 (tests/services/s3.py); AWS_ENDPOINT_URL points at it."""
    from tests.services.s3 import moto_server

    with moto_server() as url:
        yield url
