"""Operations on real components: PostgreSQL, a real `prefect server start` on it, and a process
worker, as README's operator section sets them up.

The deployment is registered with `stylepipe nightly --pool`, a run is created through the REST API
(with a stage selection, download and preprocess@photos, so it takes seconds instead of a full
training run), a real `prefect worker start` executes it to Completed, and the flow run, its task
runs and its artifacts are read back with Prefect's own list commands (which fastapi 0.151-0.154
broke: HTTP 422 on every `ls`).

PostgreSQL comes from Debian's `postgresql` package (`make test` installs it, through the Makefile's
`postgres` target, when run as root); without it the test skips and says so. Everything listens on
127.0.0.1, each process is stopped at the end.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_project_copy

pytestmark = pytest.mark.slow

POOL = "stylepipe-test-pool"
STAGES = ["download", "preprocess@photos"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: {p.args[:4]} exited with {p.returncode}")
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<port>, trust authentication, database `prefect`.
    As root it runs as the `postgres` user (PostgreSQL refuses to run as root)."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.skip("PostgreSQL not installed (Debian's `postgresql`; `make test` installs it when "
                        "run as root): the server + worker test is skipped")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stylepipe-pg-"))
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"

    def run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True, cwd=self.dir)

    def start(self) -> str:
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "prefect", "--auth=trust", "-E", "UTF8")
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                 f"-h 127.0.0.1 -p {self.port} -k {self.dir}", "start")
        self.run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "prefect", "prefect")
        return f"postgresql+asyncpg://prefect@127.0.0.1:{self.port}/prefect"

    def query(self, sql: str) -> str:
        return subprocess.run([*self.as_user, str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "prefect", "-d", "prefect", "-tAc", sql],
                              check=True, capture_output=True, text=True, cwd=self.dir).stdout.strip()

    def stop(self) -> None:
        if self.data.is_dir():
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                            "stop"], capture_output=True, cwd=self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def prefect(env: dict, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    # the server's 422 on list endpoints (a fastapi it is not pinned to); as a word, so that an id
    # listed in the output (6cd...-125721422932) does not count
    assert not re.search(r"\b422\b", proc.stdout + proc.stderr), proc.stdout + proc.stderr
    return proc.stdout


def test_postgres_server_worker_runs_the_nightly_deployment(tmp_path):
    pg = Postgres()
    server = worker = None
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_API_URL=api,
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_LOGGING_LEVEL="INFO", COLUMNS="200",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    try:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.start()
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=open(home / "server.log", "w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 180, "the Prefect server",
                   [server])

        project = make_project_copy(tmp_path / "project")
        out = subprocess.run([sys.executable, "-m", "stylepipe.cli", "nightly", "--pool", POOL, "--repo",
                              str(project)], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert f"prefect worker start --pool {POOL}" in out.stdout

        # Trigger a run through the REST API, as the UI's "Run" button does.
        deployment = httpx.get(f"{api}/deployments/name/stylepipe-pipeline/nightly", timeout=10).json()
        assert deployment["work_pool_name"] == POOL
        created = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run",
                             json={"parameters": {"repo_root": str(project), "stages": STAGES}}, timeout=10)
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]

        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                                  env=env, stdout=open(home / "worker.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)

        def final_state():
            state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=5).json()["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = wait_until(final_state, 420, "the worker to finish the flow run", [server, worker])
        assert state["type"] == "COMPLETED", (state, (home / "worker.log").read_text()[-4000:])

        # The work was done, in the project copy, by the worker.
        assert (project / "data/processed/photos/manifest.parquet").is_file()
        assert "download" in (project / "dvc.lock").read_text()

        # Read it back with Prefect's list commands (the server's list endpoints).
        assert run_id in prefect(env, "flow-run", "ls", "--flow-name", "stylepipe-pipeline", "--limit", "5")
        assert "nightly" in prefect(env, "deployment", "ls")
        assert POOL in prefect(env, "work-pool", "ls")
        task_runs = prefect(env, "task-run", "ls", "--limit", "50")
        for stage in STAGES:
            assert stage in task_runs, task_runs
        artifacts = prefect(env, "artifact", "ls")
        assert "stylepipe-stages" in artifacts, artifacts

        # ... and it all lives in PostgreSQL.
        assert pg.query(f"SELECT state_type FROM flow_run WHERE id = '{run_id}'") == "COMPLETED"
        assert int(pg.query(f"SELECT count(*) FROM task_run WHERE flow_run_id = '{run_id}'")) >= len(STAGES)
    finally:
        stop(worker)
        stop(server)
        pg.stop()
