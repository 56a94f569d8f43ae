"""The shared `main()` plumbing of every stage module (python -m tasks.<stage>), and how to start
`dvc` on them from Python."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from stylepipe import log
from stylepipe.config import ConfigError
from stylepipe.errors import StageError


def run_main(name: str, body: Callable[[], None]) -> None:
    """Run a stage body; a ConfigError or StageError becomes one clear line and exit code 1."""
    log.setup()
    try:
        body()
    except (ConfigError, StageError) as e:
        logging.getLogger(f"stylepipe.{name}").error("%s", e)
        sys.exit(1)


def stage_env() -> dict[str, str]:
    """The environment for stage subprocesses: this interpreter's bin dir first, so dvc.yaml's
    `python` is the one stylepipe runs in even when the venv is not activated."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TQDM_MININTERVAL", "5")  # progress lines become log lines: keep them few
    env["PYTHONUNBUFFERED"] = "1"
    return env


def dvc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]
