"""The Prefect bulk flow: shards mapped over the default task runner and over a 2-worker Dask
LocalCluster (prefect-dask); the shards' ledger segments end up folded into the main ledger."""
from __future__ import annotations

import pytest

from flows.bulk import run_bulk
from tests.tasks.bulk.test_support import (all_files, decodes, ledger_rows, make_job, make_photos,  # noqa: F401
                                        output_files, tiny_model)

NAMES = [f"{d}/{i}.jpg" for d in ("x", "y") for i in range(5)]


def check(summary, out, processed: int) -> None:
    assert (summary.done, summary.failed, summary.pending, summary.run.processed) == (10, 1, 0, processed)
    assert output_files(out) == sorted(NAMES)
    assert all(decodes(out / name) for name in NAMES)
    rows = ledger_rows(out / ".stylepipe/ledger.sqlite")
    assert sorted(r["relpath"] for r in rows if r["status"] == "done") == sorted(NAMES)
    assert [r["relpath"] for r in rows if r["status"] == "failed"] == ["y/bad.jpg"]
    assert len({r["run_id"] for r in rows if r["status"] == "done"}) == 1  # one flow run made them all
    assert all_files(out / ".stylepipe") == ["ledger.sqlite"]  # segments merged, temp files gone


@pytest.fixture
def source(tmp_path):
    make_photos(tmp_path / "src", NAMES, size=(64, 48))
    (tmp_path / "src/y/bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return tmp_path / "src"


def test_flow_on_the_default_task_runner(prefect_server, source, tmp_path, tiny_model):
    out = tmp_path / "out"
    job = make_job(source, out, tiny_model, shard_size=4, workers=1)
    check(run_bulk(job), out, processed=11)
    assert run_bulk(job).run.processed == 0  # resumed: nothing left


def test_flow_on_a_two_worker_dask_cluster(prefect_server, source, tmp_path, tiny_model):
    from distributed import Client, LocalCluster

    out = tmp_path / "out"
    job = make_job(source, out, tiny_model, shard_size=3, workers=1, threads=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = run_bulk(job, dask_address=cluster.scheduler_address)
        with Client(cluster) as client:
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and sum(executed.values()) >= 4  # the 4 shards ran on the cluster
    check(summary, out, processed=11)
