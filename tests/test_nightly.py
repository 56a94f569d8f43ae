"""The nightly deployment is registered on a real (temporary) Prefect server with its cron."""
import asyncio

import pytest

from prefect.client.orchestration import get_client

from flows import nightly
from stylepipe.cli import main
from stylepipe.config import ConfigError
from tests.conftest import REPO_ROOT


async def _read_deployment(name: str):
    async with get_client() as client:
        return await client.read_deployment_by_name(name)


def test_register_nightly_deployment(prefect_server, project_copy):
    deployment_id = nightly.register(project_copy, cron="30 3 * * *", timezone="Europe/Paris")
    deployment = asyncio.run(_read_deployment(f"stylepipe-pipeline/{nightly.DEPLOYMENT_NAME}"))
    assert str(deployment.id) == deployment_id
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "30 3 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"
    assert schedule.active
    assert deployment.parameters == {"repo_root": str(project_copy.resolve())}


def test_cli_registers_with_params_schedule(prefect_server, capsys):
    assert main(["nightly", "--register-only", "--repo", str(REPO_ROOT)]) == 0
    assert "cron='0 2 * * *'" in capsys.readouterr().out
    deployment = asyncio.run(_read_deployment(f"stylepipe-pipeline/{nightly.DEPLOYMENT_NAME}"))
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"


def test_bad_cron_is_a_config_error(project_copy):
    with pytest.raises(ConfigError, match=r"schedule\.cron.*every night"):
        nightly.nightly_deployment(project_copy, cron="every night", timezone="UTC")
