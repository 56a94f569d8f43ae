"""The shared `main()` plumbing of every stage module (python -m tasks.<stage>)."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

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
