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


# Exit codes of a stage process. The Prefect flow never retries EXIT_BAD_INPUT (bad params, bad
# data: the same run fails the same way); it retries a crash once (EXIT_CRASH, or killed by a signal).
EXIT_BAD_INPUT = 1
EXIT_CRASH = 70  # EX_SOFTWARE


def run_main(name: str, body: Callable[[], None]) -> None:
    """Run a stage body; a ConfigError or StageError becomes one clear line and exit code
    EXIT_BAD_INPUT; any other exception is a crash (traceback, EXIT_CRASH)."""
    log.setup()
    logger = logging.getLogger(f"stylepipe.{name}")
    try:
        body()
    except (ConfigError, StageError) as e:
        logger.error("%s", e)
        sys.exit(EXIT_BAD_INPUT)
    except Exception:  # noqa: BLE001
        logger.exception("%s crashed", name)
        sys.exit(EXIT_CRASH)


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
