"""What a bulk stylization job is, and what is left of it: `plan()` lists the source and asks the
ledger which (input, model) outputs are already settled; `summarize()` adds up a run's outcome.

Planning needs no torch: the Prefect flow plans in its driver process and ships only the work.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from models.sidecar import WEIGHTS_FILE
from stylepipe.config import LOSSY_BACKENDS, StylizeParams
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from tasks.bulk import remote
from tasks.bulk.ledger import Ledger, Row, merge_segments, options_json
from tasks.bulk.paintings import PaintingManifest
from tasks.bulk.tar_output import split_output
from tasks.bulk.sources import (RESERVED_NAME, SEEDS_SCHEME, Entry, SeedSource, Source, SourceError, open_source,
                                seeds_spec)
from tasks.data.images import max_input_bytes
from tasks.data.reasons import is_transient, reason

LEDGER_NAME = "ledger.sqlite"
# Gatys mode optimises every image (seconds to minutes each): a larger job is refused unless the
# caller names a --limit or raises this (`Job.gatys_max_inputs`).
GATYS_MAX_INPUTS = 200
# A sampling job is planned and run this many seeds at a time, so that a million-sample job never
# holds its whole listing (work items, output names, ledger lookups) in memory.
SEED_WINDOW = 50_000

if TYPE_CHECKING:
    from models.adain.params import AdainControls
    from models.gatys.optimize import GatysConfig


@dataclass(frozen=True)
class ModelSpec:
    path: str
    label: str = ""            # names the model in the ledger and its output subfolder; default: folder name
    strength: float = 1.0
    preserve_colors: bool = False
    # Gatys mode: `path` is a painting, and every image is optimised (models/gatys/optimize.py) instead of
    # run through a trained network. A dict (a Prefect flow's parameters) becomes a GatysConfig.
    gatys: GatysConfig | dict[str, Any] | None = None
    # AdaIN: `path` is an adain model folder, run after these paintings with these controls.
    adain: AdainControls | dict[str, Any] | None = None
    # Translation models (pix2pix, cyclegan): "a2b" or "b2a"; "" for every other model.
    direction: str = ""
    # GAN generators: noise truncation (models/family.py seeded_noise); None: plain noise.
    truncation: float | None = None

    def __post_init__(self):
        if isinstance(self.gatys, dict):
            from models.gatys.optimize import GatysConfig  # torch: only a Gatys job pays for it here
            object.__setattr__(self, "gatys", GatysConfig(**self.gatys))
        if isinstance(self.adain, dict):
            from models.adain.params import AdainControls  # torch-free
            object.__setattr__(self, "adain", AdainControls(**self.adain))

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return f"gatys-{Path(self.path).stem}" if self.gatys is not None else Path(self.path).resolve().name


def weights_sha256(model_dir: str | Path, hashed: dict[str, str] | None = None) -> str:
    """The sha256 of a model folder's weights; `hashed`: those already taken, by folder (this one's
    added), for a caller that may ask again (the engine's lean runner, then StyleModels)."""
    if hashed is not None and str(model_dir) in hashed:
        return hashed[str(model_dir)]
    path = Path(model_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise StageError(f"{path}: no such file; is {model_dir} a trained model folder?")
    sha = sha256_file(path)
    if hashed is not None:
        hashed[str(model_dir)] = sha
    return sha


def adain_identity(controls: AdainControls, paintings: list | None = None) -> dict:
    """What an AdaIN job's outputs depend on besides the weights: each painting's sha256 (not its
    path) and weight (`paintings`: [[sha256, weight]] instead of the controls' own, for an input
    a manifest names), alpha, the mask's sha256, the size paintings are encoded at."""
    def sha(path: str, what: str) -> str:
        if not Path(path).is_file():
            raise StageError(f"{path}: no such file (the AdaIN {what})")
        return sha256_file(Path(path))

    if paintings is None:
        paintings = [[sha(p, "painting"), w] for p, w in controls.paintings]
    return {"paintings": paintings, "alpha": controls.alpha,
            "mask": sha(controls.mask, "mask") if controls.mask else None, "style_size": controls.style_size}


def adain_hash(weights: str, identity: dict) -> str:
    return f"{weights}+adain-{options_hash(identity)}"


def model_hash(spec: ModelSpec) -> str:
    """The ledger's model identity: the weights' sha256 (plus the noise truncation of a generator
    that samples with one); in Gatys mode the painting's sha256 plus
    the hash of the optimisation's settings; for AdaIN the weights' plus the hash of the paintings
    and controls (adain_identity; an input a manifest names has its own: see plan())."""
    if spec.truncation is not None:  # other noise, other images for the same seeds
        return f"{weights_sha256(spec.path)}+truncation-{float(spec.truncation)!r}"
    if spec.adain is not None:
        return adain_hash(weights_sha256(spec.path), adain_identity(spec.adain))
    if spec.gatys is None:
        return weights_sha256(spec.path)
    if Path(spec.path).is_dir():  # a gatys model folder: its stored painting
        return f"{weights_sha256(spec.path)}+gatys-{options_hash(asdict(spec.gatys))}"
    if not Path(spec.path).is_file():
        raise StageError(f"{spec.path}: no such file (the Gatys painting)")
    return f"{sha256_file(Path(spec.path))}+gatys-{options_hash(asdict(spec.gatys))}"


@dataclass(frozen=True)
class Job:
    source: str
    out: Path | str             # a folder, or an object-storage URL (tasks/bulk/remote.py)
    models: tuple[ModelSpec, ...]
    params: StylizeParams
    ledger: Path
    gatys_max_inputs: int | None = GATYS_MAX_INPUTS  # None: no cap


def default_ledger(out: Path | str) -> Path:
    """<out>/.stylepipe/ledger.sqlite; for an object-storage URL, a local folder (remote.state_dir)."""
    if remote.is_remote(out):
        return remote.state_dir(str(out)) / LEDGER_NAME
    return Path(out) / RESERVED_NAME / LEDGER_NAME


def local_area(out: Path | str) -> Path:
    """Where the engine's temporary files are born: the output folder itself (same filesystem, so a
    rename is atomic), or for an object-storage URL its local state folder."""
    return remote.state_dir(str(out)) if remote.is_remote(out) else Path(out)


@dataclass(frozen=True, slots=True)
class WorkItem:
    entry: Entry
    outputs: tuple[tuple[int, str], ...]  # (model index, output path relative to out) still to make
    # AdaIN with a manifest: this input's own painting, and its model identity (the plan's otherwise)
    painting: str = ""
    model_hash: str = ""


@dataclass
class Plan:
    job: Job
    model_hashes: list[str]
    options: list[dict]                     # per model: everything that changes its output
    items: list[WorkItem] = field(default_factory=list)        # to do, in listing order
    refused_rows: list[Row] = field(default_factory=list)      # to record (not yet in the ledger)
    adopted_rows: list[Row] = field(default_factory=list)      # objects found written, to record
    expected: dict[str, str] = field(default_factory=dict)     # output relpath -> input relpath
    inputs: int = 0                         # files listed
    finished: Counter = field(default_factory=Counter)  # done/failed -> (image, model) pairs settled before
    refused_known: Counter = field(default_factory=Counter)  # failed/ignored -> refused pairs recorded before
    limited: int = 0                        # items left for a later run by --limit

    @property
    def outputs_to_make(self) -> int:
        return sum(len(i.outputs) for i in self.items)


def output_options(params: StylizeParams, spec: ModelSpec) -> dict:
    """What changes an output's pixels or bytes; its hash is part of the ledger identity."""
    options = {
        "format": params.format, "quality": None if params.format == "png" else params.quality,
        "max_size": params.max_size, "strength": spec.strength, "preserve_colors": spec.preserve_colors,
        "tile_above": params.tile_above, "tile_size": params.tile_size, "tile_overlap": params.tile_overlap,
    }
    if spec.gatys is not None:  # only then: the option hashes of trained models stay as they were
        options["gatys"] = asdict(spec.gatys)
    if spec.adain is not None:  # its paintings are in the model identity, which a manifest sets per input
        # (paintings=[]: not hashed here only to be dropped; model_hash has hashed them)
        options["adain"] = {k: v for k, v in adain_identity(spec.adain, paintings=[]).items() if k != "paintings"}
    if spec.direction:  # likewise
        options["direction"] = spec.direction
    if params.texture_scale != 1:  # likewise: only when set, so that earlier jobs' hashes hold
        options["texture_scale"] = params.texture_scale
    if params.work_size is not None:
        options["work_size"] = params.work_size
    if params.backend in LOSSY_BACKENDS:  # the others agree within 1/255: not part of the identity
        options["backend"] = params.backend
    return options


# Tile size and overlap move a tiled output by a few levels at most (benchmarks/tile_agreement.py:
# 3-9 of 255 between overlaps 64 and 128), as a runtime does, so outputs made with other values are
# not stale: a job run again after they change (or after their defaults did) keeps its outputs.
# tile_above stays part of the identity: it decides which images are tiled, and the statistics' side.
TILE_LAYOUT = ("tile_size", "tile_overlap")


def without_tile_layout(options_json_text: str) -> dict | None:
    try:
        options = json.loads(options_json_text)
    except ValueError:
        return None
    return {k: v for k, v in options.items() if k not in TILE_LAYOUT} if isinstance(options, dict) else None


def options_hash(options: dict) -> str:
    return hashlib.sha256(options_json(options).encode()).hexdigest()[:16]


def output_name(relpath: str, fmt: str) -> str:
    return PurePosixPath(relpath).with_suffix(f".{fmt}").as_posix()


def plan(job: Job, *, resume: bool = True, limit: int | None = None, readonly: bool = False) -> Plan:
    """List the source and decide what is left to do. Reads the ledger, never writes it, except to
    fold in segments a killed run left behind (not when readonly, as for --dry-run)."""
    labels = [spec.name for spec in job.models]
    if len(set(labels)) != len(labels):
        raise StageError(f"two models have the same name ({', '.join(labels)}): give them labels")
    if not readonly:
        merge_segments(job.ledger)
    source = open_job_source(job)
    p = Plan(job, [model_hash(s) for s in job.models],
             [output_options(job.params, s) for s in job.models])
    hashes = [options_hash(o) for o in p.options]
    comparable = [without_tile_layout(options_json(o)) for o in p.options]
    multi = len(job.models) > 1
    per_input = PerInputPaintings(job) if any(s.adain is not None and s.adain.manifest for s in job.models) else None

    entries, refused = [], []
    try:
        for record in source.scan():
            (entries if isinstance(record, Entry) else refused).append(record)
    except SourceError as e:
        raise StageError(str(e)) from None
    p.inputs = len(entries) + len(refused)
    is_remote = remote.is_remote(job.out)
    stored = remote.existing(str(job.out)) if is_remote else None  # one listing, not a request per output

    def output_exists(output: str) -> bool:
        relpath, _ = split_output(output)  # (a tar member: its tar)
        return relpath in stored if is_remote else (job.out / relpath).is_file()

    ledger = Ledger(job.ledger) if (job.ledger.is_file() or not readonly) else None
    try:
        names = OutputNames(job.params.format, ledger.outputs() if ledger else {})
        for r in refused:
            known = ledger.finished(r.relpath) if ledger and resume else {}
            for label in labels:
                f = known.get(label)
                if f and f.status == r.status and f.input_stamp == r.stamp:
                    p.refused_known[r.status] += 1
                else:
                    p.refused_rows.append(Row(r.relpath, label, r.status, r.reason, source.label,
                                              r.size, r.stamp, finished_at=time.time()))
        for entry in entries:
            known = ledger.finished(entry.relpath) if ledger and resume else {}
            painting, item_hash = "", ""
            if per_input is not None:
                painting, item_hash, why = per_input.of(entry.relpath)
                if why:
                    f = known.get(labels[0])
                    if f and (f.status, f.reason, f.input_stamp) == ("failed", why, entry.stamp):
                        p.refused_known["failed"] += 1
                    else:
                        p.refused_rows.append(Row(entry.relpath, labels[0], "failed", why, source.label,
                                                  entry.size, entry.stamp, finished_at=time.time()))
                    continue
            outputs = []
            for i, label in enumerate(labels):
                target = names.assign(entry.relpath, label, f"{label}/" if multi else "")
                p.expected[target] = entry.relpath
                f = known.get(label)
                settled = f is not None and (f.input_stamp, f.model_hash) == (
                    entry.stamp, item_hash or p.model_hashes[i]) and (
                    f.options_hash == hashes[i] or without_tile_layout(f.options) == comparable[i])
                if settled and f.status == "done" and output_exists(f.output):
                    p.finished["done"] += 1
                elif settled and f.status == "failed" and not is_transient(f.reason):
                    p.finished["failed"] += 1
                elif is_remote and target in stored and remote.stored_identity(str(job.out), target) == \
                        remote.identity(entry.relpath, entry.stamp, item_hash or p.model_hashes[i], hashes[i]):
                    # uploaded by a run killed before its ledger row: record it, never upload it again
                    p.finished["done"] += 1
                    p.adopted_rows.append(Row(entry.relpath, label, "done", source=job.source, input_size=entry.size,
                                              input_stamp=entry.stamp, output=target,
                                              model_hash=item_hash or p.model_hashes[i],
                                              options_hash=hashes[i], options=options_json(p.options[i]),
                                              reason="found in object storage", finished_at=time.time()))
                else:
                    outputs.append((i, target))
            if outputs:
                if limit is not None and len(p.items) >= limit:
                    p.limited += 1
                else:
                    p.items.append(WorkItem(entry, tuple(outputs), painting, item_hash))
    finally:
        if ledger:
            ledger.close()
    check_gatys_size(p, limit)
    return p


class PerInputPaintings:
    """An AdaIN job with a manifest (tasks/bulk/paintings.py): each input's painting and model
    identity, the same identity a job after that one painting alone would give its outputs."""

    def __init__(self, job: Job):
        if len(job.models) != 1:
            raise StageError("a painting manifest goes with one adain model alone")
        self.spec = job.models[0]
        self.manifest = PaintingManifest.read(self.spec.adain.manifest)
        self.weights = weights_sha256(self.spec.path)

    def of(self, name: str) -> tuple[str, str, str]:
        """(painting, model hash, "") for an input the manifest names, ("", "", "") for one the
        job's own paintings serve, ("", "", reason) for one that cannot be stylized."""
        painting = self.manifest.painting_of(name)
        if painting is None:
            if self.spec.adain.paintings:
                return "", "", ""
            return "", "", reason("no-painting", "not in the manifest, and the job has no --adain-style")
        sha, why = self.manifest.check(painting)
        if why:
            return "", "", reason("no-painting", why)
        identity = adain_identity(self.spec.adain, paintings=[[sha, 1.0]])
        return painting, adain_hash(self.weights, identity), ""


def windows(job: Job, size: int = SEED_WINDOW) -> Iterator[Job]:
    """The job as consecutive sub-jobs that are planned and run one after another: a `seeds:` job of
    more than `size` seeds becomes seed ranges of about `size` (a multiple of the label count, so
    each seed keeps its label); any other job is one window (its listing is the source's own)."""
    if not job.source.startswith(SEEDS_SCHEME):
        yield job
        return
    try:
        seeds = SeedSource(job.source)
    except SourceError as e:
        raise StageError(str(e)) from None
    n_labels = max(1, len(seeds.labels))
    step = max(1, size // n_labels) * n_labels
    if seeds.count <= step:
        yield job
        return
    for start in range(0, seeds.count, step):
        count = min(step, seeds.count - start)
        yield replace(job, source=seeds_spec(count, seeds.first + start, seeds.labels or None))


def check_gatys_size(p: Plan, limit: int | None) -> None:
    """Gatys mode is for small jobs: refuse more than job.gatys_max_inputs images to do, unless
    --limit says how many."""
    cap = p.job.gatys_max_inputs
    if limit is not None or cap is None or len(p.items) <= cap:
        return
    if not any(spec.gatys is not None for spec in p.job.models):
        return
    raise StageError(
        f"{len(p.items)} images to stylize with Gatys optimisation, more than the {cap} it is meant for: "
        "it optimises every image, seconds to minutes each (about 10-15 s at 256 px and 40-55 s at the "
        "default 256,512 on a 2-core CPU). For a job this size train a feed-forward model of the "
        "painting (add it under `models:` in params.yaml, `stylepipe run --stage train`) and stylize "
        "with --model; or give --limit N, or raise --gatys-max-inputs, to go ahead anyway")


def open_job_source(job: Job) -> Source:
    if remote.is_remote(job.out):
        if str(job.source).rstrip("/") == str(job.out).rstrip("/") or \
                str(job.source).rstrip("/").startswith(str(job.out).rstrip("/") + "/"):
            raise StageError(f"the output {job.out} holds the source {job.source}: choose another --out")
        try:
            return open_source(job.source, max_bytes=max_input_bytes(job.params.max_pixels))
        except SourceError as e:
            raise StageError(str(e)) from None
    source, out = Path(job.source), job.out.resolve()
    if source.is_dir() and (source.resolve() == out or source.resolve().is_relative_to(out)):
        raise StageError(f"the output folder {job.out} holds the source {job.source}: outputs could "
                         "overwrite inputs; choose another --out")
    try:
        return open_source(job.source, max_bytes=input_byte_cap(job.params), exclude=job.out)
    except SourceError as e:
        raise StageError(str(e)) from None


def input_byte_cap(params: StylizeParams) -> int:
    """The most bytes one input may have once read (and decompressed): max_input_bytes, and never
    more than an image of max_pixels can need."""
    return min(params.max_input_bytes, max_input_bytes(params.max_pixels))


class OutputNames:
    """Input -> output name, never colliding within a job or with an output the ledger records.

    An input keeps the output name the ledger gives it (earlier runs' outputs keep their names, even
    if the rule below changed). A new one gets `a.png` -> `a.jpg`; when another input holds that
    name (a.jpg beside a.png, or an earlier run's output) it keeps its suffix too (`a.png.jpg`), then
    `a.png~1.jpg`, ... Decided at planning, before anything is written."""

    def __init__(self, fmt: str, recorded: dict[tuple[str, str], str]):
        self.fmt = fmt
        recorded = {key: split_output(out)[1] for key, out in recorded.items()}  # (tar members: their names)
        self.recorded = recorded                                   # (relpath, model) -> output
        self.owner = {out: key for key, out in recorded.items()}   # output -> (relpath, model)

    def assign(self, relpath: str, model: str, prefix: str) -> str:
        key = (relpath, model)
        recorded = self.recorded.get(key)
        if recorded is not None and recorded.endswith(f".{self.fmt}"):
            return recorded
        name = next(c for c in self._candidates(relpath, prefix) if self.owner.get(c, key) == key)
        self.owner[name] = key
        self.recorded[key] = name
        return name

    def _candidates(self, relpath: str, prefix: str) -> Iterator[str]:
        yield prefix + output_name(relpath, self.fmt)
        yield f"{prefix}{relpath}.{self.fmt}"
        for n in itertools.count(1):
            yield f"{prefix}{relpath}~{n}.{self.fmt}"


# --- outcome ----------------------------------------------------------------------------------------


@dataclass
class RunStats:
    processed: int = 0           # inputs finished by this run (all their outputs, or failed)
    outputs: int = 0             # output files written
    failed: int = 0              # (input, model) pairs that failed in this run
    seconds: float = 0.0
    device: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason), first few
    # the model's share of the run: pass-seconds the model threads spent on batches (forward
    # passes; for a large image also its statistics pass, padding and blending), against wall time x
    # passes at once; the rest is decode, encode and waiting
    network_seconds: float = 0.0
    pass_seconds: float = 0.0

    def add(self, other: RunStats) -> None:
        self.processed += other.processed
        self.outputs += other.outputs
        self.failed += other.failed
        self.network_seconds += other.network_seconds
        self.pass_seconds += other.pass_seconds
        self.seconds = max(self.seconds, other.seconds)
        self.device = self.device or other.device
        self.failures.extend(other.failures[: 20 - len(self.failures)])

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def network_busy(self) -> float | None:
        return self.network_seconds / self.pass_seconds if self.pass_seconds else None


@dataclass
class Summary:
    inputs: int
    outputs: int                 # (image input, model) pairs the job has
    done: int
    failed: int
    ignored: int
    pending: int                 # left for a later run (--limit, or dry run)
    run: RunStats
    ledger: Path

    @property
    def failed_fraction(self) -> float:
        return self.failed / max(1, self.done + self.failed)

    def run_line(self) -> str:
        r = self.run
        busy = f", network busy {r.network_busy:.0%} of the time" if r.network_busy is not None else ""
        return (f"stylized {r.processed} inputs ({r.outputs} outputs) in {r.seconds:.1f} s "
                f"({r.rate:.2f} images/s) on {r.device or '-'}{busy}")

    def job_line(self) -> str:
        return (f"job: {self.done} done, {self.failed} failed, {self.ignored} ignored (not images), "
                f"{self.pending} pending, of {self.outputs} outputs from {self.inputs} files")

    def lines(self) -> Iterator[str]:
        yield self.run_line()
        yield self.job_line()
        for relpath, why in self.run.failures[:10]:
            yield f"  failed {relpath}: {why}"
        if self.run.failed > 10:
            yield f"  ... and {self.run.failed - 10} more failures: see the ledger"
        yield f"ledger: {self.ledger}"


def combine(parts: list[Summary]) -> Summary:
    """One summary for a job run window by window (windows()): counts add up, and so do the
    windows' times, which ran one after another."""
    run = RunStats()
    for part in parts:
        run.add(part.run)
    run.seconds = sum(part.run.seconds for part in parts)
    total = lambda name: sum(getattr(part, name) for part in parts)  # noqa: E731
    return Summary(inputs=total("inputs"), outputs=total("outputs"), done=total("done"),
                   failed=total("failed"), ignored=total("ignored"), pending=total("pending"),
                   run=run, ledger=parts[0].ledger)


def summarize(plan: Plan, run: RunStats) -> Summary:
    refused = plan.refused_known + Counter(r.status for r in plan.refused_rows)
    settled = plan.finished["done"] + plan.finished["failed"] + run.outputs + run.failed
    return Summary(
        inputs=plan.inputs, outputs=len(plan.expected),
        done=plan.finished["done"] + run.outputs,
        failed=plan.finished["failed"] + run.failed + refused["failed"],
        ignored=refused["ignored"],
        pending=len(plan.expected) - settled,
        run=run, ledger=plan.job.ledger,
    )


def record_refused(plan: Plan) -> None:
    """Record the refused inputs, and the objects found already uploaded (remote outputs)."""
    rows = plan.refused_rows + plan.adopted_rows
    if rows:
        with Ledger(plan.job.ledger) as ledger:
            ledger.write(rows)
