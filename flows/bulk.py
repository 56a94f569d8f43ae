"""The bulk stylization flow: plan once, cut the work into shards, map the shards over a task runner.

A shard is `stylize.shard_size` images (hundreds to thousands), never one task per image: a
Prefect task run costs milliseconds to tens of milliseconds of API traffic and state handling,
and flows with tens of thousands of task runs are slow to orchestrate and to show. Each shard
runs the whole engine (tasks/bulk/engine.py: worker processes, batches, the device) and writes
its own ledger segment; the flow folds the segments into the main ledger as shards finish.

Task runners: a ThreadPoolTaskRunner with one worker by default (one shard at a time: the engine
already uses every core, or the one GPU); with `dask_address`, an existing Dask cluster through
prefect-dask. Give that cluster one single-threaded worker per GPU (or per machine on CPUs), so
that each device runs one shard at a time; SOURCE, the models and the output folder must be
reachable from every worker under the same paths (a shared filesystem, or an fsspec URL source).
A compressed tar cannot be seeked: every shard streams it from the start up to its own members,
so for many shards prefer a folder, a zip or an uncompressed tar (read at member offsets).
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from stylepipe.config import StylizeParams
from tasks.bulk.engine import execute, sweep_temp
from tasks.bulk.plan import (GATYS_MAX_INPUTS, Job, ModelSpec, Plan, RunStats, Summary, WorkItem,
                             combine, local_area, plan, record_refused, summarize, windows)
from tasks.bulk.ledger import Ledger, merge_segments, segment_path
from tasks.bulk.remote import is_remote

PROGRESS_LOG_S = 30.0


class LogProgress:
    """A stand-in for the progress bar inside a task: a log line every PROGRESS_LOG_S seconds."""

    def __init__(self, shard: int, total: int):
        self.shard, self.total, self.count = shard, total, 0
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= PROGRESS_LOG_S:
            self.last = now
            rate = self.count / (now - self.start)
            eta = (self.total - self.count) / rate if rate else float("inf")
            get_run_logger().info("shard %d: %d/%d images, %.2f images/s, ETA %.0f s",
                                  self.shard, self.count, self.total, rate, eta)


@task(name="stylize-shard", task_run_name="shard-{index}", retries=1, retry_delay_seconds=5,
      cache_policy=NO_CACHE)
def stylize_shard(index: int, shard_plan: Plan, items: list[WorkItem], run_id: str) -> RunStats:
    logger = get_run_logger()
    segment = segment_path(shard_plan.job.ledger, run_id, index)
    labels = [spec.name for spec in shard_plan.job.models]
    if segment.is_file():  # a retry: skip what the failed attempt already recorded
        with Ledger(segment) as ledger:
            items = [i for i in items if not all(
                labels[m] in ledger.finished(i.entry.relpath) for m, _ in i.outputs)]
    logger.info("shard %d: %d images", index, len(items))
    stats = execute(shard_plan, items, ledger_path=segment, writer=f"shard-{index}",
                    progress=LogProgress(index, len(items)), run_id=run_id)
    logger.info("shard %d: %d images in %.1f s (%.2f images/s) on %s, %d failed", index,
                stats.processed, stats.seconds, stats.rate, stats.device or "-", stats.failed)
    return stats


@flow(name="stylepipe-bulk", log_prints=True)
def bulk_stylize(source: str, out: str, models: list[dict], params: dict, ledger: str,
                 resume: bool = True, limit: int | None = None,
                 gatys_max_inputs: int | None = GATYS_MAX_INPUTS) -> Summary:
    """Stylize every image in `source` with `models` into `out`."""
    logger = get_run_logger()
    job = Job(source, out if is_remote(out) else Path(out), tuple(ModelSpec(**m) for m in models), StylizeParams(**params), Path(ledger),
              gatys_max_inputs)
    sweep_temp(local_area(job.out))
    run_id = uuid.uuid4().hex[:12]
    parts, failed_shards, planned, first_shard = [], [], 0, 0
    for part in windows(job):  # one window unless a large sampling job (plan.windows)
        p = plan(part, resume=resume, limit=None if limit is None else max(0, limit - planned))
        planned += len(p.items)
        record_refused(p)
        size = job.params.shard_size
        shards = [p.items[i:i + size] for i in range(0, len(p.items), size)]
        logger.info("%s: %d files, %d to stylize in %d shards of up to %d; %d outputs already done",
                    part.source, p.inputs, len(p.items), len(shards), size, p.finished["done"])
        # The shards need the job and the model hashes, not the whole listing.
        shard_plan = dataclasses.replace(p, items=[], expected={}, refused_rows=[], adopted_rows=[])
        started = time.perf_counter()
        indices = list(range(first_shard, first_shard + len(shards)))
        first_shard += len(shards)
        futures = stylize_shard.map(indices, unmapped(shard_plan), shards, unmapped(run_id))
        total = RunStats()
        for index, future in zip(indices, futures):
            future.wait()
            if future.state.is_completed():
                total.add(future.result())
            else:
                failed_shards.append(index)
            merge_segments(job.ledger, [segment_path(job.ledger, run_id, index)])
        total.seconds = time.perf_counter() - started
        parts.append(summarize(p, total))
    merge_segments(job.ledger)  # tidy up: no shard is running any more
    summary = combine(parts)
    create_markdown_artifact(key="stylepipe-bulk-summary", markdown="\n".join(
        ["# stylepipe bulk stylize", "", *(f"- {line}" for line in summary.lines())]))
    if failed_shards:
        raise RuntimeError(f"shards {failed_shards} failed (their finished outputs are recorded); "
                           "run again to resume")
    return summary


def run_bulk(job: Job, *, resume: bool = True, limit: int | None = None,
             dask_address: str | None = None) -> Summary:
    """`stylepipe stylize --prefect / --dask-address`: the flow on the chosen task runner."""
    if dask_address:
        from prefect_dask import DaskTaskRunner
        runner = DaskTaskRunner(address=dask_address)
    else:
        runner = ThreadPoolTaskRunner(max_workers=1)
    return bulk_stylize.with_options(task_runner=runner)(
        source=job.source, out=str(job.out), models=[dataclasses.asdict(m) for m in job.models],
        params=job.params.model_dump(), ledger=str(job.ledger), resume=resume, limit=limit,
        gatys_max_inputs=job.gatys_max_inputs)
