"""The nightly deployment of the pipeline flow, scheduled by cron (params.yaml `schedule`)."""
from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.pipeline import pipeline
from stylepipe.config import ConfigError

DEPLOYMENT_NAME = "nightly"


def nightly_deployment(repo_root: Path, cron: str, timezone: str) -> RunnerDeployment:
    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError as e:
        raise ConfigError(f"schedule.cron: {e}") from None
    return pipeline.to_deployment(
        name=DEPLOYMENT_NAME,
        schedule=schedule,
        parameters={"repo_root": str(repo_root.resolve())},
        description="Nightly stylepipe run: dvc.yaml stages through Prefect.",
        tags=["stylepipe", "nightly"],
    )


def register(repo_root: Path, cron: str, timezone: str) -> str:
    """Create or update the deployment on the Prefect API; returns its id."""
    return str(nightly_deployment(repo_root, cron, timezone).apply())


def serve(repo_root: Path, cron: str, timezone: str) -> None:
    """Register the deployment and run its scheduled flow runs from this process (blocks)."""
    from prefect import serve as prefect_serve

    prefect_serve(nightly_deployment(repo_root, cron, timezone))
