"""download stage: fetch every source in params.yaml into data/raw/ (and weights into data/weights/).

    python -m tasks.download

Each set of sources gets a folder:
  data/raw/datasets/<dataset>   params.yaml `datasets.<dataset>.sources`
  data/raw/models/<model>       the model's `style` painting; written for every model, with an
                                empty manifest when it has none (the folder is its stage's DVC dep)
  data/weights                  `download.weights`
each holding
  manifest.json   [{source, path, size, sha256}], path relative to the folder (no timestamps: the
                  folder is a DVC output, and the same bytes must hash the same on every machine);
                  files extracted from an archive add archive_sha256 (the archive's)
  rejected.json   [{source, path, reason}]: archive members and folder entries that were refused
  files/<source-id>/...   (weights: flat, data/weights/<file name>, as torch.hub names them)
(docs/architecture.md). Idempotent: data/raw is a DVC `persist` output, so a re-run keeps every file
that is still listed and verifies (the manifest stays byte-identical when nothing changed, so the
stage, which runs on every `dvc repro` to see new files, leaves its downstream stages cached), fetches what is new or changed, and deletes what is no longer listed: the
folders of datasets and models removed from params.yaml too.

A bad source (404, checksum mismatch, unreadable archive, a style that is not one image) fails the
stage, after every other source has been tried, with one message naming them all: the parameters
need fixing. A bad file inside a folder or archive is only refused and recorded; preprocess reports it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from stylepipe.config import DownloadParams, ModelParams, Params, Source, load_params
from stylepipe.errors import StageError
from stylepipe.hashing import sha256_file
from stylepipe.stage import run_main
from tasks.data import archives
from tasks.data.fetch import (FetchError, Location, basename, fetch, is_folder, locate, source_id,
                         walk_folder, write_json_atomic)
from tasks.data.fetch import Skipped as SkippedFile
from tasks.data.folders import replace_folder
from tasks.data.images import STYLE_IMAGE_MAX_PIXELS, Rejected, decode

log = logging.getLogger("stylepipe.download")

RAW_DIR = Path("data/raw")
DATASETS, MODELS = "datasets", "models"  # data/raw/datasets/<dataset>, data/raw/models/<model>
WEIGHTS_DIR = Path("data/weights")
PARTIAL = ".partial"  # temp files and resumable downloads; listed in .dvcignore
# torch.hub names checkpoints <name>-<first hex digits of sha256>.<ext> and checks that prefix.
HUB_HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")


@dataclass
class SetResult:
    entries: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    fetched: int = 0


def download(params: Params, raw_dir: Path = RAW_DIR, weights_dir: Path = WEIGHTS_DIR) -> None:
    dl = params.download
    failures = []
    for name, dataset in params.datasets.items():
        failures += sync_set(f"dataset {name}", dataset.sources, raw_dir / DATASETS / name, dl).failures
    for name, model in params.models.items():
        failures += sync_model(name, model, raw_dir / MODELS / name, dl)
        record_styles(model, raw_dir / MODELS / name, raw_dir / DATASETS, params.preprocess.model_dump())
    remove_unlisted(raw_dir / DATASETS, keep=set(params.datasets), why="dataset no longer in params.yaml")
    remove_unlisted(raw_dir / MODELS, keep=set(params.models), why="model no longer in params.yaml")
    # data/raw/content and data/raw/styles of the layout before datasets/models
    remove_unlisted(raw_dir, keep={DATASETS, MODELS}, why="not part of data/raw's layout")
    failures += sync_set("weights", dl.weights, weights_dir, dl, weights=True).failures
    if failures:
        raise StageError("download failed for these sources (the others are in place):\n  "
                         + "\n  ".join(failures))


def sync_model(name: str, model: ModelParams, root: Path, dl: DownloadParams) -> list[str]:
    """data/raw/models/<name>: its style painting, or nothing (an empty manifest) without one."""
    result = sync_set(f"model {name}", [model.style] if model.style else [], root, dl)
    if result.failures or not model.style:
        return result.failures
    return check_style(name, root, result)


STYLES_RECORD = "styles.json"


def record_styles(model: ModelParams, root: Path, datasets_dir: Path, preprocess: dict) -> None:
    """A model trained on a paintings dataset (adain's `train.styles`): data/raw/models/<name>/
    styles.json names what that dataset holds (its files' sha256s) and how preprocess splits it.
    dvc.yaml's train@<model> depends on data/raw/models/<model>, and a foreach cannot name a key
    only some models have, so this file is how DVC sees new paintings or a new split: it retrains."""
    styles = getattr(model.train, "styles", None)
    record = root / STYLES_RECORD
    if not styles:
        record.unlink(missing_ok=True)
        return
    files = sorted(e["sha256"] for e in read_json_list(datasets_dir / styles / "manifest.json"))
    write_json_atomic(record, {"dataset": styles, "sha256": files, "preprocess": preprocess}, root / PARTIAL)


def sync_set(label: str, sources: list[Source], root: Path, dl: DownloadParams, *,
             weights: bool = False) -> SetResult:
    """Bring root/ (manifest.json, rejected.json, files/) in line with `sources`.

    weights=True: single files only, kept as fetched (a .pth is a zip: not extracted), stored flat
    as root/<file name> (where models/encoders.py looks), a torch.hub name's hash prefix checked."""
    root.mkdir(parents=True, exist_ok=True)
    old_entries = _by_source(read_json_list(root / "manifest.json"))
    old_rejected = _by_source(read_json_list(root / "rejected.json"))
    result = SetResult()
    sources = unique_sources(sources, result.failures)
    if weights:
        sources = unique_weight_names(sources, result.failures)
    for source in sources:
        try:
            entries, rejected, fetched = sync_source(source, root, old_entries.get(source.url, []),
                                                     old_rejected.get(source.url, []), dl,
                                                     weights=weights)
        except (FetchError, archives.ExtractError) as e:
            result.failures.append(f"{source.url}: {e}")
            # Keep what an earlier run fetched for it: the stage fails, the data is not destroyed.
            entries, rejected, fetched = old_entries.get(source.url, []), old_rejected.get(source.url, []), 0
        result.entries += entries
        result.rejected += rejected
        result.fetched += fetched
    if result.failures:
        # The stage fails and the parameters need fixing; until then the folder keeps what it had,
        # sources no longer listed included (a style URL that now 404s must not cost the old style).
        listed = {s.url for s in sources}
        result.entries += [e for url, old in old_entries.items() if url not in listed for e in old]
        result.rejected += [r for url, old in old_rejected.items() if url not in listed for r in old]
    prune(root, keep={e["path"] for e in result.entries},
          keep_partials={source_id(s.url) for s in sources}, flat=weights)
    result.entries.sort(key=lambda e: e["path"])
    write_json_atomic(root / "manifest.json", result.entries, root / PARTIAL)
    write_json_atomic(root / "rejected.json", result.rejected, root / PARTIAL)
    _remove_if_empty(root / PARTIAL)
    log.info("%s: %d files from %d sources (%d fetched, %d already here), %d refused, %d sources failed",
             label, len(result.entries), len(sources), result.fetched, len(result.entries) - result.fetched,
             len(result.rejected), len(result.failures))
    return result


def unique_sources(sources: list[Source], failures: list[str]) -> list[Source]:
    seen: dict[str, Source] = {}
    for source in sources:
        if source.url in seen:
            if seen[source.url].sha256 != source.sha256:
                failures.append(f"{source.url}: listed twice with different sha256")
            continue
        seen[source.url] = source
    return list(seen.values())


def unique_weight_names(sources: list[Source], failures: list[str]) -> list[Source]:
    """Weights are stored flat by file name, so two sources may not share one."""
    taken = {"manifest.json", "rejected.json"}
    kept = []
    for source in sources:
        name = basename(source.url)
        if name in taken:
            failures.append(f"{source.url}: another weights source (or the manifest) already uses the name {name!r}")
        else:
            taken.add(name)
            kept.append(source)
    return kept


def sync_source(source: Source, root: Path, old: list[dict], old_rejected: list[dict], dl: DownloadParams,
                *, weights: bool) -> tuple[list[dict], list[dict], int]:
    """Fetch one source unless what is on disk is still verified. Returns (manifest entries,
    rejected records, number of files written)."""
    location = locate(source.url)
    if is_folder(location):
        if weights:
            raise FetchError("is a folder: list each weights file as its own source")
        if source.sha256:
            raise FetchError("is a folder: a sha256 can pin only a file or an archive (remove it)")
        return sync_folder(source, location, root, old, dl)
    is_archive = not weights and archives.archive_suffix(basename(source.url)) is not None
    if is_up_to_date(source, location, root, old, is_archive):
        return old, old_rejected, 0
    return fetch_file_source(source, location, root, dl, is_archive=is_archive, weights=weights)


def is_up_to_date(source: Source, location: Location, root: Path, old: list[dict], is_archive: bool) -> bool:
    """Fetched before from the same bytes, and every file it gave is on disk, unchanged."""
    if not old or any(("archive_sha256" in e) != is_archive for e in old):
        return False
    fetched_sha = old[0]["archive_sha256"] if is_archive else old[0]["sha256"]
    if source.sha256 and fetched_sha != source.sha256:
        return False
    # A local source is cheap to re-hash, so an unpinned one is re-fetched when it changed. An
    # unpinned remote one is fetched once (pin a sha256, or delete its folder, to fetch it again).
    if not source.sha256 and location.kind == "local":
        path = Path(location.where)
        if not path.is_file() or sha256_file(path) != fetched_sha:
            return False
    return all(is_verified(root, e) for e in old)


def is_verified(root: Path, entry: dict) -> bool:
    path = root / entry["path"]
    return path.is_file() and path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]


def fetch_file_source(source: Source, location: Location, root: Path, dl: DownloadParams, *,
                      is_archive: bool, weights: bool) -> tuple[list[dict], list[dict], int]:
    sid, name = source_id(source.url), basename(source.url)
    partial = root / PARTIAL / sid
    fetched = fetch_verified(source, location, partial, dl, expected=expected_sha256(source, name, weights))
    if weights:
        os.replace(partial, root / name)
        log.info("fetched %s (%d bytes)", source.url, fetched.size)
        return [{"source": source.url, "path": name, "size": fetched.size, "sha256": fetched.sha256}], [], 1
    staging = root / PARTIAL / f"{sid}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if is_archive:
            budget = archives.Budget(dl.max_extract_bytes, dl.max_extract_files, dl.max_member_bytes)
            extracted = archives.extract(partial, staging, budget, name=name)
            partial.unlink()
            entries = [{"source": source.url, "path": f"files/{sid}/{rel}", "size": size, "sha256": sha,
                        "archive_sha256": fetched.sha256}
                       for rel, (size, sha) in sorted(extracted.files.items())]
            rejected = [{"source": source.url, "path": member, "reason": reason}
                        for member, reason in extracted.refused]
        else:
            os.replace(partial, staging / name)
            entries = [{"source": source.url, "path": f"files/{sid}/{name}", "size": fetched.size,
                        "sha256": fetched.sha256}]
            rejected = []
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        partial.unlink(missing_ok=True)
        raise
    replace_folder(staging, root / "files" / sid)
    log.info("fetched %s (%d bytes%s)", source.url, fetched.size,
             f", {len(entries)} files extracted, {len(rejected)} refused" if is_archive else "")
    return entries, rejected, len(entries)


def fetch_verified(source: Source, location: Location, partial: Path, dl: DownloadParams, *,
                   expected: str | None):
    """fetch() plus the sha256 check. A mismatch after resuming an earlier partial may be that
    partial's fault (the file changed upstream), so it is fetched once more from scratch."""
    for attempt in (1, 2):
        try:
            fetched = fetch(location, partial, timeout_s=dl.timeout_s, retries=dl.retries,
                            backoff_s=dl.backoff_s, label=basename(source.url), pinned=expected is not None)
        except FetchError:
            if partial.is_file() and partial.stat().st_size == 0:
                partial.unlink()
            raise
        if expected is None or fetched.sha256.startswith(expected):
            return fetched
        partial.unlink()
        if not (fetched.resumed and attempt == 1):
            raise FetchError(f"checksum mismatch: expected sha256 {expected}, got {fetched.sha256} "
                             f"({fetched.size} bytes); nothing was kept")
        log.warning("%s: checksum mismatch after resuming; fetching it again from the start", source.url)
    raise AssertionError("unreachable")


def expected_sha256(source: Source, name: str, weights: bool) -> str | None:
    """The pinned sha256, or for weights without one, the hash prefix in a torch.hub file name."""
    if source.sha256:
        return source.sha256
    match = HUB_HASH_PREFIX.search(name) if weights else None
    return match[1] if match else None


def sync_folder(source: Source, location: Location, root: Path, old: list[dict],
                dl: DownloadParams) -> tuple[list[dict], list[dict], int]:
    """A folder source: copy its tree file by file (archives inside it are copied, not extracted).
    A file that cannot be read is refused and recorded; the rest go on."""
    sid = source_id(source.url)
    old_by_path = {e["path"]: e for e in old}
    entries, rejected, fetched_count = [], [], 0
    for item in walk_folder(location):
        if isinstance(item, SkippedFile):
            rejected.append({"source": source.url, "path": item.relpath, "reason": item.reason})
            continue
        path = f"files/{sid}/{item.relpath}"
        previous = old_by_path.get(path)
        if previous and is_verified(root, previous) and is_unchanged(item.location, item.size, previous):
            entries.append(previous)
            continue
        partial = root / PARTIAL / f"{sid}.{hash_name(item.relpath)}"
        try:
            fetched = fetch(item.location, partial, timeout_s=dl.timeout_s, retries=dl.retries,
                            backoff_s=dl.backoff_s, label=item.relpath, pinned=False)
        except FetchError as e:
            partial.unlink(missing_ok=True)
            rejected.append({"source": source.url, "path": item.relpath, "reason": f"cannot fetch: {e}"})
            continue
        dest = root / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, dest)
        entries.append({"source": source.url, "path": path, "size": fetched.size, "sha256": fetched.sha256})
        fetched_count += 1
    if fetched_count:
        log.info("fetched %s: %d files copied, %d unchanged, %d refused", source.url, fetched_count,
                 len(entries) - fetched_count, len(rejected))
    return entries, rejected, fetched_count


def is_unchanged(location: Location, size: int, previous: dict) -> bool:
    if size != previous["size"]:
        return False
    # Local files are re-hashed; remote folders (s3://...) are compared by size only.
    return location.kind != "local" or sha256_file(Path(location.where)) == previous["sha256"]


def check_style(model: str, root: Path, result: SetResult) -> list[str]:
    """A style source must give exactly one decodable image."""
    if len(result.entries) != 1:
        return [f"model {model}: its style source gave {len(result.entries)} files; a style is exactly one image"]
    entry = result.entries[0]
    try:
        decode((root / entry["path"]).read_bytes(), max_pixels=STYLE_IMAGE_MAX_PIXELS,
               setting="the style-image limit")
    except Rejected as e:
        return [f"model {model}: style {entry['source']} is not a usable image ({e})"]
    return []


# --- files on disk ------------------------------------------------------------------------------


def prune(root: Path, keep: set[str], keep_partials: set[str], flat: bool = False) -> None:
    """Delete files under root/files/ (flat: directly in root/) that no manifest entry lists (sources
    removed from params, or files gone from a source), and partials of sources no longer listed."""
    if flat:
        for path in root.iterdir():
            if path.is_file() and path.name not in keep | {"manifest.json", "rejected.json"}:
                path.unlink()
    files_dir = root / "files"
    if files_dir.is_dir():
        for dirpath, dirnames, filenames in os.walk(files_dir, topdown=False):
            for name in filenames:
                path = Path(dirpath, name)
                if path.relative_to(root).as_posix() not in keep:
                    path.unlink()
            for name in dirnames:
                _remove_if_empty(Path(dirpath, name))
            # Links are never written here, but a user might have put one in: not followed.
    partials = root / PARTIAL
    if partials.is_dir():
        for path in partials.iterdir():
            if path.name.split(".", 1)[0] not in keep_partials:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def remove_unlisted(parent: Path, keep: set[str], why: str) -> None:
    """Delete the entries of `parent` not named in `keep` (dotfiles are left alone)."""
    if parent.is_dir():
        for path in parent.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                log.info("removing %s: %s", path, why)
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def read_json_list(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        log.warning("%s is unreadable; everything it listed will be fetched again", path)
        return []
    return data if isinstance(data, list) else []


def _by_source(items: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for item in items:
        item.pop("fetched_at", None)  # manifests written before timestamps were dropped
        grouped.setdefault(item.get("source", ""), []).append(item)
    return grouped


def hash_name(relpath: str) -> str:
    return hashlib.sha256(relpath.encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    run_main("download", lambda: download(load_params()))


if __name__ == "__main__":
    main()
