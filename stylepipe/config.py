"""params.yaml -> one validated config object.

params.yaml is the single source of parameters (DVC tracks its sections per stage). This module is
the edge where it is validated: every stage calls `load_params()` and gets typed sections back, or
a `ConfigError` that names the bad key.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = "params.yaml"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # models and datasets: folder and stage names
# Upper bounds on sizes, so that a typo (100000) is refused at validation, before a stage (or DVC,
# which removes a stage's outputs before running it) has emptied anything.
MAX_TRAIN_SIDE = 4096          # a side that is resized to and held in memory whole (training, evaluation)
MAX_OUTPUT_SIDE = 65_535       # JPEG's largest side
MAX_TILE_SIDE = 16_384         # one pass of the network on one tile or untiled image
MAX_PIXELS = 2_000_000_000     # a decompression-bomb cap above this guards nothing
# The default cap on one decoded image (preprocess, stylize, paintings, the network's input):
# larger images are refused as decompression bombs.
DEFAULT_MAX_PIXELS = 64_000_000


class ConfigError(ValueError):
    """params.yaml (or a --set override) is invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Section):
    """One thing to fetch: http(s)://, file://, a local path, pkg://<package>/<path> (a file shipped
    inside an installed Python package) or any fsspec URL (s3://, gs://, ... with its backend)."""

    url: str = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class DownloadParams(Section):
    # Pretrained weights fetched into data/weights/ (e.g. torchvision's VGG-16/19 checkpoints).
    weights: list[Source] = Field(default_factory=list)
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    # Archive extraction: all members of one source together, and each member alone (a member over
    # it is refused, the rest go on). Raise them for a trusted archive that is larger.
    max_extract_bytes: int = Field(default=2 * 2**30, gt=0, le=2**40)
    max_member_bytes: int = Field(default=256 * 2**20, gt=0, le=2**36)
    max_extract_files: int = Field(default=1_000_000, gt=0, le=100_000_000)


class DatasetParams(Section):
    """A named dataset (params.yaml `datasets:`): what download fetches into data/raw/datasets/<name>
    and preprocess turns into data/processed/<name>.

    kind: photos (any images: decoded, deduplicated, split), labelled (MNIST-style idx files:
    train-images/-labels and t10k-images/-labels, kept in their own train/test split), paired
    (translation pairs: files under a folder `A/` and the same path under `B/`, or pairs `make`s
    from photos), unpaired (two domains: any images under `A/` and under `B/`)."""

    kind: Literal["photos", "labelled", "paired", "unpaired"]
    # The list, or the name of a YAML file holding it (relative to params.yaml, e.g.
    # sources/photos.yaml): a file keeps long lists out of `dvc exp show`, and download tracks it
    # as a dep by content. load_params reads the file.
    sources: list[Source] | str = Field(min_length=1)
    # paired only: "folders" reads A/ and B/; "edges" (Canny edges -> the photo) and "grey"
    # (greyscale -> the photo) make each pair from one photo.
    make: Literal["folders", "edges", "grey"] = "folders"

    @model_validator(mode="after")
    def _make_is_paired(self) -> DatasetParams:
        if self.make != "folders" and self.kind != "paired":
            raise ValueError(f"`make: {self.make}` makes pairs: it needs `kind: paired`")
        return self


class TrainBase(Section):
    """The training settings every family has; the generic loop (tasks/train.py) reads these, the
    family its own (models/<family>/params.py extends this class)."""

    steps: int = Field(default=400, ge=0, le=10_000_000)
    batch_size: int = Field(default=4, ge=1, le=65_536)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # DataLoader processes; None: none on a CPU (the step needs every core) or for data held in
    # memory (labelled), up to 8 per process on CUDA (tasks/train.py loader_workers).
    workers: int | None = Field(default=None, ge=0, le=64)
    # CPU threads; None: OMP_NUM_THREADS if set, else every core. On a machine other jobs share,
    # 1 can be several times faster than 2 (each op waits for a descheduled thread).
    threads: int | None = Field(default=None, ge=1, le=1024)
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    # Speed, mostly for CUDA. precision bf16: the step runs under torch.autocast (bfloat16 matmuls and
    # convolutions; on a CPU worth it with AMX: 1.5x for classic, under 1.1x for fast and slim); it
    # changes the numbers, so it is part of the model's config; auto: bf16 on CUDA, fp32 on a CPU
    # (docs/style-quality.md, section 22). channels_last (NHWC nets and batches;
    # None: on CUDA) and compile (torch.compile of every trained net; the first steps pay for the
    # compiling) change only the speed.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | None = None
    compile: bool = False


class ModelParams(Section):
    """One model (params.yaml `models:`): a family, the dataset it trains on, and the family's own
    `train` and `infer` settings, validated by models/<family>/params.py."""

    family: str
    dataset: str
    style: Source | None = None        # the painting, for families that learn one (johnson, gatys)
    train: Any = Field(default_factory=dict)
    infer: Any = Field(default_factory=dict)

    @model_validator(mode="after")
    def _family_params(self) -> ModelParams:
        from models import registry  # torch-free: the table of families and their params classes

        try:
            info = registry.info(self.family)
        except KeyError as e:
            raise ValueError(str(e.args[0])) from None
        if info.needs_style and self.style is None:
            raise ValueError(f"family {self.family!r} learns a painting: give `style: {{url: ...}}`")
        if not info.needs_style and self.style is not None:
            raise ValueError(f"family {self.family!r} takes no `style`")
        # already-validated sections (ModelParams built in code) are dumped; anything else, e.g. a
        # `train:` left empty (None) or a list, goes to _nested, which names it
        train = self.train.model_dump() if isinstance(self.train, BaseModel) else self.train
        infer = self.infer.model_dump() if isinstance(self.infer, BaseModel) else self.infer
        module = registry.params_module(self.family)
        object.__setattr__(self, "train", _nested(module.TrainParams, train, "train"))
        object.__setattr__(self, "infer", _nested(module.InferParams, infer, "infer"))
        return self


class SubsectionErrors(ValueError):
    """A family's `train` / `infer` settings are invalid: (key inside the model entry, message)
    pairs, which _format_errors prefixes with the entry's own key (models.<name>.train.<setting>)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in errors))


def _nested(cls: type[Section], raw: Any, key: str) -> Section:
    """Validate a family's sub-section, re-raising its errors with their key."""
    if not isinstance(raw, dict):
        raise SubsectionErrors([(key, f"must be a mapping of settings (got {raw!r})")])
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise SubsectionErrors([(".".join([key, *map(str, err["loc"])]), err["msg"] + _got(err))
                                for err in e.errors()]) from None


def _got(err: dict) -> str:
    """' (got VALUE)' for an error's message. Not for a missing key, nor for a check of a whole
    section (its input a mapping), which names what is wrong itself: echoing the section would print
    the model entry, or all of params.yaml."""
    whole_section = err["type"] == "value_error" and isinstance(err.get("input"), dict)
    return "" if err["type"] == "missing" or whole_section else f" (got {err.get('input')!r})"


class PreprocessParams(Section):
    seed: int = 0
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    train_size: int = Field(default=256, ge=32, le=MAX_TRAIN_SIDE)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0, le=MAX_PIXELS)
    # labelled datasets: an idx images file whose header implies more pixel bytes is refused
    max_labelled_bytes: int = Field(default=2 * 2**30, gt=0)
    max_reject_fraction: float = Field(default=0.5, ge=0, le=1)
    workers: int = Field(default=2, ge=1)


# Backends whose outputs differ from fp32 PyTorch's by more than rounding (tasks/bulk/backends.py).
LOSSY_BACKENDS = ("torch-bf16", "openvino-bf16")


class StylizeParams(Section):
    """The stylize stage, and the defaults of `stylepipe stylize` (tasks/bulk/engine.py)."""

    max_size: int | None = Field(default=512, ge=32, le=MAX_OUTPUT_SIDE)  # longest output side; None keeps the size
    format: Literal["jpg", "png", "webp"] = "jpg"
    quality: int = Field(default=92, ge=1, le=100)     # jpg and webp
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # 1 = the network's output, 0 = the photo; in between, a blend of the two.
    strength: float = Field(default=1.0, ge=0, le=1)
    # Keep the photo's colours: take only the luminance of the stylized image.
    preserve_colors: bool = False
    # The texture's size in the output (image networks: johnson, adain, translation). A network paints
    # its texture at the scale it was trained at, in pixels, whatever the image's size. The network
    # sees the image scaled by 1/texture_scale, and its result is resized back to the output size
    # (bicubic, on the device) before strength and preserve_colors: brush strokes texture_scale times
    # larger. work_size: instead of one factor for all images, the long side every image is stylized
    # at (a 6000-px output then looks like the work_size-px one, enlarged); texture_scale multiplies
    # on top. 1 and null: the network sees the output size, as before.
    texture_scale: float = Field(default=1.0, ge=0.25, le=16)
    work_size: int | None = Field(default=None, ge=64, le=MAX_TILE_SIDE)
    # Images of one size per forward pass; None: 1 on CPU (measured fastest there, with one pass
    # per core), 16 on CUDA.
    batch_size: int | None = Field(default=None, ge=1)
    workers: int = Field(default=2, ge=0)              # decode/encode processes; 0 = in-process
    # Forward passes run at once, each on its own batch; None: one per core on CPU, 2 on CUDA.
    parallel_batches: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, ge=1)    # torch threads per pass; None: cores / passes
    # auto: when none of batch_size, parallel_batches and threads is set, a CPU job settles its
    # layout (passes x threads x batch) on its first batch: the one remembered for this machine,
    # these networks and that image size, else, in a job of enough inputs, the fastest of a few timed
    # there, then remembered (tasks/bulk/layout.py); `stylepipe stylize` and `translate` default to
    # it. fixed: the defaults above. The infer stage keeps fixed: threads change a float's last bits.
    layout: Literal["fixed", "auto"] = "fixed"
    # The forward pass's runtime on a CPU (tasks/bulk/backends.py): torch, onnxruntime or openvino (the
    # network exported to ONNX), or auto: whichever was fastest on the job's first batch (remembered per
    # machine and network, not weights). Families without an ONNX export and CUDA use torch. The pipeline's
    # infer stage keeps torch: its outputs are DVC-tracked, and auto may choose differently on
    # another machine (the three agree within 1/255, not bit for bit); `stylepipe stylize` defaults to auto.
    # torch-bf16 (bf16 autocast + channels_last) and openvino-bf16 (OpenVINO at bf16 precision), for
    # CPUs with AVX512-BF16 or AMX: lossy (LOSSY_BACKENDS), so never chosen by auto, and part of the
    # outputs' identity (a job switched to one redoes its images).
    backend: Literal["torch", "torch-bf16", "onnxruntime", "openvino", "openvino-bf16", "auto"] = "torch"
    # Where JPEG inputs are decoded and JPEG outputs encoded (trained image and translation networks):
    # device: on the networks' device (nvJPEG through torchvision.io on CUDA; libjpeg-turbo in the
    # model threads on a CPU), so that only compressed bytes cross the decode/encode workers' pipes
    # (the workers still decode each such JPEG once, to refuse a bad one as always, but send its bytes);
    # pillow: in the worker processes; auto: device on CUDA, else pillow. Only JPEGs at most max_size
    # (no downscale) and tile_above, upright, baseline, YCbCr or grey, without a texture scale take the
    # device; any other input, and PNG or WebP outputs, go through the workers. Not part of the
    # outputs' identity, as the device is not: nvJPEG's decode differs from libjpeg's (up to 14 levels
    # on a photo, more at sharp colour edges), and its encoder writes 4:4:4 chroma where Pillow writes
    # 4:2:0 (sharper colour edges, 1.5x the bytes at the same quality on photos).
    codec: Literal["auto", "pillow", "device"] = "auto"
    # torch.compile the networks (the torch runtime; tiles stay eager). On an H200, 1024-px JPEG to
    # JPEG: 521-566 images/s once outputs flow against 240-258 eager, after 11-25 s of compiling
    # (warm / cold cache) that each new image size pays again (a short batch is filled up to a
    # full one, a lone image is not; after 8 sizes PyTorch runs the rest uncompiled). So for long
    # jobs of one image size: 12,000 images 294.8 images/s end to end against 210.6 eager, 24,000
    # (cold) 307.5; 4,000 (cold) 121.4 against 151.2 (docs/speed.md, session 19). backend auto then means
    # torch. Not measured on a CPU. Not part of the outputs' identity.
    compile: bool = False
    # Images whose long side is above tile_above are stylized in overlapping tiles of tile_size
    # (memory stays bounded); instance-norm statistics come from a tile_above-sized thumbnail, or
    # above 1.5x tile_above from a mosaic of the image's own pixels (tasks/bulk/tiling.py).
    tile_above: int = Field(default=2048, ge=64, le=MAX_TILE_SIDE)
    tile_size: int = Field(default=1280, ge=64, le=MAX_TILE_SIDE)
    tile_overlap: int = Field(default=64, ge=0)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0, le=MAX_PIXELS)  # larger inputs are refused (decompression bombs)
    # Larger files or archive members are refused, counted while they are read and decompressed.
    max_input_bytes: int = Field(default=128 * 2**20, gt=0, le=2**32)
    # The run exits non-zero when more than this fraction of its inputs fail.
    max_failed_fraction: float = Field(default=0.0, ge=0, le=1)
    shard_size: int = Field(default=1000, ge=1)        # images per Prefect task (flows/bulk.py)
    # 0: one file per output. N: outputs packed N to a tar file, <out>/tar/<writer>-<run>-<token>-NNNNNN.tar,
    # members named as the files would be (tasks/bulk/tar_output.py): for many small outputs, whose
    # files cost more to create than to compute. Not part of the outputs' identity.
    tar_size: int = Field(default=0, ge=0, le=1_000_000)

    @field_validator("tile_size")
    @classmethod
    def _tile_size(cls, size: int) -> int:
        if size % 4:
            raise ValueError("must be a multiple of 4 (the networks work at stride 4)")
        return size

    @field_validator("tile_overlap")
    @classmethod
    def _tile_overlap(cls, overlap: int, info) -> int:
        size = info.data.get("tile_size")
        if size and overlap > size // 2:
            raise ValueError(f"must be at most tile_size / 2 = {size // 2}")
        return overlap


# Every --backend (tasks/bulk/backends.py), from StylizeParams.backend: the CLI's choices and the runners' check
BACKENDS = get_args(StylizeParams.model_fields["backend"].annotation)


class GateParams(Section):
    """Thresholds a candidate model must meet before evaluate promotes it to data/published."""

    # Style loss of the results must sit at least this fraction below the unstylized photos' own.
    min_style_drop: float = Field(default=0.2, ge=0, lt=1)
    min_ssim: float = Field(default=0.1, ge=-1, le=1)
    # Median ms per latency_size x latency_size image on the device evaluate runs on.
    max_latency_ms: float = Field(default=5000.0, gt=0)
    latency_size: int = Field(default=512, ge=32, le=MAX_TILE_SIDE)
    # Against the published model of the same style, both run on the same validation images:
    # the candidate's style loss may exceed the published one's by at most this fraction ...
    max_style_regression: float = Field(default=0.1, ge=0)
    # ... and its SSIM may be lower by at most this much.
    max_ssim_drop: float = Field(default=0.05, ge=0)


class GenerationGateParams(Section):
    """What a generator (dcgan, cgan, vae) must reach before evaluate promotes it."""

    min_label_accuracy: float = Field(default=0.5, ge=0, le=1)     # conditional: the judge agrees with the label
    min_confident_fraction: float = Field(default=0.3, ge=0, le=1)  # GANs: samples judged with p >= 0.9
    min_heldout_elbo: float = -200.0                                # VAE: nats per image
    max_fd_ratio: float = Field(default=50.0, gt=0)                 # fd_effnetl0 / its real-vs-real floor


class EvaluateParams(Section):
    image_size: int = Field(default=256, ge=32, le=MAX_TRAIN_SIDE)
    report_images: int = Field(default=6, ge=1)
    thumb_size: int = Field(default=320, ge=32, le=MAX_TRAIN_SIDE)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    timing_sizes: list[int] = Field(default_factory=lambda: [256, 512, 1024], min_length=1)
    timing_repeats: int = Field(default=3, ge=1)
    promote: bool = True
    gate: GateParams = GateParams()
    generation_samples: int = Field(default=2000, ge=100, le=100_000)  # drawn per generator for its metrics
    generation_gate: GenerationGateParams = GenerationGateParams()

    @field_validator("timing_sizes")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if any(not 32 <= s <= MAX_TILE_SIDE for s in sizes):
            raise ValueError(f"every timing size must be 32 to {MAX_TILE_SIDE} px")
        return sorted(set(sizes))


class ScheduleParams(Section):
    """The nightly Prefect deployment (`stylepipe nightly`); no DVC stage reads it. The cron string
    is checked by flows/nightly.py, which imports Prefect anyway (stages must not pay for that)."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, timezone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r} (use an IANA name such as Europe/Paris)") from None
        return timezone


class Params(Section):
    download: DownloadParams = DownloadParams()
    datasets: dict[str, DatasetParams] = Field(min_length=1)
    models: dict[str, ModelParams] = Field(min_length=1)
    preprocess: PreprocessParams = PreprocessParams()
    stylize: StylizeParams = StylizeParams()
    evaluate: EvaluateParams = EvaluateParams()
    schedule: ScheduleParams = ScheduleParams()

    @field_validator("datasets", "models")
    @classmethod
    def _names(cls, entries: dict) -> dict:
        for name in entries:
            if not NAME.match(name):
                raise ValueError(f"name {name!r} must be lowercase letters, digits, '-' or '_' "
                                 "(it becomes a folder and a DVC stage name)")
        return entries

    @model_validator(mode="after")
    def _datasets_exist(self) -> Params:
        from models import registry

        for name, m in self.models.items():
            if m.dataset not in self.datasets:
                raise ValueError(f"models.{name}.dataset: no dataset {m.dataset!r} in `datasets` "
                                 f"({', '.join(self.datasets)})")
            wanted, kind = registry.info(m.family).data, self.datasets[m.dataset].kind
            if wanted != kind:
                raise ValueError(f"models.{name}: family {m.family!r} trains on {wanted} data, but dataset "
                                 f"{m.dataset!r} is {kind}")
            styles = getattr(m.train, "styles", None)  # adain: a second dataset, of paintings
            if styles is not None and getattr(self.datasets.get(styles), "kind", None) != "photos":
                raise ValueError(f"models.{name}.train.styles: no photos-kind dataset {styles!r} in `datasets` "
                                 f"({', '.join(self.datasets)})")
        return self

    def model(self, name: str) -> ModelParams:
        if name not in self.models:
            from stylepipe.errors import StageError

            raise StageError(f"unknown model {name!r}; params.yaml `models:` has {', '.join(self.models)}")
        return self.models[name]


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        nested = (e.get("ctx") or {}).get("error")
        if isinstance(nested, SubsectionErrors):  # models.<name>: its train / infer settings
            lines += [f"  {key}.{sub}: {msg}" for sub, msg in nested.errors]
            continue
        lines.append(f"  {key}: {e['msg']}{_got(e)}")
    return f"invalid parameters in {origin}:\n" + "\n".join(lines)


def validate(raw: dict[str, Any], origin: str = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None


def read_raw(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parameters file (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    return validate(resolve_source_files(read_raw(path), path.parent), str(path))


def resolve_source_files(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """`datasets.<d>.sources: FILE` -> the list FILE holds (FILE relative to `base`)."""
    datasets = raw.get("datasets")
    if not isinstance(datasets, dict):
        return raw
    resolved = dict(datasets)
    for name, d in datasets.items():
        if isinstance(d, dict) and isinstance(d.get("sources"), str):
            f = base / d["sources"]
            try:
                items = yaml.safe_load(f.read_text(encoding="utf-8"))
            except OSError as e:
                raise ConfigError(f"datasets.{name}.sources: cannot read {f}: {e.strerror or e}") from None
            except yaml.YAMLError as e:
                raise ConfigError(f"datasets.{name}.sources: {f} is not valid YAML: {e}") from None
            resolved[name] = {**d, "sources": items}
    return {**raw, "datasets": resolved}


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """'train.steps=10' -> (['train', 'steps'], 10). Values are parsed as YAML, like `dvc exp run -S`."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.steps=10")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML: {e}") from None
    return key.strip().split("."), parsed


def set_in(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    node = raw
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def write_overrides(path: str | Path, assignments: list[str], check=None) -> list[str]:
    """Apply KEY=VALUE overrides to params.yaml in place, as `dvc exp run -S` does, so DVC sees the
    values the run used. The whole result is validated (and passed to `check`, if given) before the
    file is touched; every byte but the changed values is kept (stylepipe/params_edit.py). Returns
    'key: old -> new' lines."""
    from stylepipe.params_edit import edit_text

    path = Path(path)
    raw = read_raw(path)
    parsed = [parse_override(a) for a in assignments]
    changes = []
    for keys, value in parsed:
        old = _get_in(raw, keys)
        set_in(raw, keys, value)
        changes.append(f"{'.'.join(keys)}: {old!r} -> {value!r}")
    params = validate(raw, f"{path} with --set {' '.join(assignments)}")
    if check is not None:
        check(params)

    text = edit_text(path.read_text(encoding="utf-8"), parsed, raw)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return changes


def _get_in(raw: dict[str, Any], keys: list[str]) -> Any:
    node: Any = raw
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node
