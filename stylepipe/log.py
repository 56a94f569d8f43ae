import logging
import sys


def setup(level: int = logging.INFO) -> None:
    """Stage processes log to stderr; the Prefect task that runs them forwards each line."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
