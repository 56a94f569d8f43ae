"""The nightly deployment of the pipeline flow, scheduled by cron (params.yaml `schedule`).

Two ways to run it:
- `serve` (one box): this process registers the deployment and runs its scheduled runs itself.
- a work pool (`register(..., pool=NAME)`): the deployment is registered on a process work pool and
  any `prefect worker start --pool NAME` on a machine with this checkout runs it. The worker starts
  each run in the project root (a `set_working_directory` pull step) and loads the flow from this
  checkout's `flows/pipeline.py`, so a run executes the code it was registered from.
"""
from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.pipeline import pipeline
from stylepipe.config import ConfigError

DEPLOYMENT_NAME = "nightly"
ENTRYPOINT = "flows/pipeline.py:pipeline"  # relative to the project root


def check_cron(cron: str, timezone: str) -> Cron:
    try:
        return Cron(cron, timezone=timezone)
    except ValueError as e:
        raise ConfigError(f"schedule.cron: {e}") from None


def nightly_deployment(repo_root: Path, cron: str, timezone: str, pool: str | None = None) -> RunnerDeployment:
    root = Path(repo_root).resolve()
    deployment = pipeline.to_deployment(
        name=DEPLOYMENT_NAME,
        schedule=check_cron(cron, timezone),
        parameters={"repo_root": str(root)},
        description="Nightly stylepipe run: dvc.yaml stages through Prefect.",
        tags=["stylepipe", "nightly"],
        work_pool_name=pool,
        job_variables={"env": {"PYTHONPATH": str(root)}} if pool else None,
    )
    if pool:
        deployment.entrypoint = ENTRYPOINT
        deployment._path = None  # no code copy: the pull step below runs it in place
    return deployment


def pull_steps(repo_root: Path) -> list[dict]:
    return [{"prefect.deployments.steps.set_working_directory": {"directory": str(Path(repo_root).resolve())}}]


def ensure_process_pool(name: str) -> None:
    """Create the process work pool `name` if the API has none of that name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
            return
        if pool.type != "process":
            raise ConfigError(f"--pool {name}: that work pool is of type {pool.type!r}, not 'process'")


def register(repo_root: Path, cron: str, timezone: str, pool: str | None = None) -> str:
    """Create or update the deployment on the Prefect API (on work pool `pool`, created as a
    process pool if missing); returns its id."""
    deployment = nightly_deployment(repo_root, cron, timezone, pool)
    if not pool:
        return str(deployment.apply())
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    ensure_process_pool(pool)
    deployment_id = deployment.apply()
    # RunnerDeployment.apply only writes pull steps that come from a storage object: set ours.
    with get_client(sync_client=True) as client:
        client.update_deployment(deployment_id, DeploymentUpdate(pull_steps=pull_steps(repo_root)))
    return str(deployment_id)


def serve(repo_root: Path, cron: str, timezone: str) -> None:
    """Register the deployment and run its scheduled flow runs from this process (blocks)."""
    from prefect import serve as prefect_serve

    prefect_serve(nightly_deployment(repo_root, cron, timezone))
