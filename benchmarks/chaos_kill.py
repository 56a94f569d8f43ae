"""Chaos test of bulk stylization: N random kill -9s against `stylepipe stylize` over a few thousand
small images, from a folder and from a tar.gz, then one run to the end. Checks (and prints):

  exactly once    one ledger row per input, every image done, one output file per input and
                  no other file, no two inputs sharing an output
  decodability    every output file decodes
  clean           no temporary file, segment or stray lock left under OUT/.stylepipe
  no orphans      no worker process outlives a kill

    python benchmarks/chaos_kill.py --images 2000 --kills 20 [--seed 0] [--work DIR]
    python benchmarks/chaos_kill.py --images 1000 --kills 10 --translate data/models/emoji-pix2pix

--translate MODEL: `stylepipe translate` with that pix2pix/cyclegan model folder, over the folder
and a zip, instead of `stylepipe stylize` with a random johnson network.

One kill in four lands at a random moment of start-up (imports, listing, loading the model), the
others after a random share of the outputs still to make, so they land inside the work. Exit code 1 on any violation.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        name = f"{i % 10}/{i:05d}.jpg"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, "JPEG", quality=80)
        names.append(name)
    return names


def make_tar_gz(folder: Path, names: list[str], archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tf:
        for name in names:
            tf.add(folder / name, arcname=name)


def make_zip(folder: Path, names: list[str], archive: Path) -> None:
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        for name in names:
            zf.write(folder / name, arcname=name)


def make_model(folder: Path) -> Path:
    import torch

    from models.johnson.network import build_network
    from models.weights import save_model

    torch.manual_seed(0)
    save_model(folder, build_network("fast", "bilinear"), {"network": "fast", "upsample": "bilinear", "style": "chaos", "steps": 0})
    return folder


TRANSLATE = False  # main() sets it from --translate


def command(source: Path, out: Path, model: Path) -> list[str]:
    verb = ["translate", "--direction", "a2b"] if TRANSLATE else ["stylize"]
    return [sys.executable, "-m", "stylepipe.cli", *verb, str(source), "--model", str(model), "--out", str(out),
            "--quiet", "--workers", "2", "--batch-size", "4", "--max-failed-fraction", "0"]


def run_to_end(cmd: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the final run failed ({done.returncode}): {done.stderr}")
    return time.monotonic() - start


def count_outputs(out: Path) -> int:
    return sum(len(files) for folder, _, files in os.walk(out) if ".stylepipe" not in Path(folder).parts)


def kill_at(cmd: list[str], ready) -> tuple[bool, int]:
    """Start a run and SIGKILL it once ready(seconds since start) holds; (killed before it ended,
    orphaned processes). The run is stopped (SIGSTOP) while each check looks, so a slow check
    cannot let it run past its kill point."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    children: set[psutil.Process] = set()
    while proc.poll() is None:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            children.update(psutil.Process(proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            break
        if ready(time.monotonic() - start):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            _, alive = psutil.wait_procs(list(children), timeout=20)
            for p in alive:
                p.kill()
            return True, len(alive)
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.02)
    return False, 0


def check(out: Path, names: list[str]) -> dict[str, int]:
    ledger = out / ".stylepipe" / "ledger.sqlite"
    db = sqlite3.connect(ledger)
    rows = db.execute("SELECT relpath, status, output FROM items").fetchall()
    db.close()
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if p.is_file() and ".stylepipe" not in p.relative_to(out).parts)
    done = [r for r in rows if r[1] == "done"]
    violations = {
        "rows not one per input": int(sorted(r[0] for r in rows) != sorted(names)),
        "inputs not done": len(names) - len(done),
        "outputs shared by two inputs": len(done) - len({r[2] for r in done}),
        "output files not matching the ledger": int(outputs != sorted(r[2] for r in done)),
        "undecodable outputs": sum(not _decodes(out / o) for o in outputs),
        "leftover internal files": len([p for p in (out / ".stylepipe").rglob("*") if p.name != "ledger.sqlite"]),
    }
    return violations


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001
        return False


def chaos(kind: str, source: Path, names: list[str], model: Path, work: Path, kills: int, rng: random.Random) -> int:
    out = work / f"out-{kind}"
    cmd = command(source, out, model)
    full = run_to_end(command(source, work / f"timing-{kind}", model))  # how long a whole run takes
    landed = orphans = 0
    for n in range(kills):
        # one kill in four at a random moment of start-up (imports, listing, model loading); the
        # others after a random share of what is left, so every kill lands inside the work
        if n % 4 == 0:
            delay = rng.uniform(0.2, 4.0)
            ready = lambda t, delay=delay: t >= delay  # noqa: E731
        else:
            before = count_outputs(out) if out.is_dir() else 0
            target = before + rng.randint(1, max(1, (len(names) - before) // (kills - n + 1)))
            ready = lambda t, target=target: count_outputs(out) >= target  # noqa: E731
        hit, left = kill_at(cmd, ready)
        landed += hit
        orphans += left
    final = run_to_end(cmd)
    violations = check(out, names)
    violations["orphaned worker processes"] = orphans
    total = sum(violations.values())
    print(f"{kind}: {len(names)} images, whole run {full:.1f} s; {kills} kills ({landed} landed mid-run), "
          f"final run {final:.1f} s; violations: {total}")
    for what, n in violations.items():
        if n:
            print(f"  {what}: {n}")
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20, help="per source kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="working folder (default: a temporary one, removed)")
    parser.add_argument("--translate", metavar="MODEL", help="a pix2pix/cyclegan model folder: chaos-test "
                        "`stylepipe translate` over the folder and a zip instead")
    args = parser.parse_args()
    global TRANSLATE
    TRANSLATE = bool(args.translate)
    sys.path.insert(0, str(REPO))
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="stylepipe-chaos-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        names = make_images(work / "src", args.images, args.seed)
        if args.translate:
            make_zip(work / "src", names, work / "src.zip")
            model, archive = Path(args.translate).resolve(), ("zip", work / "src.zip")
        else:
            make_tar_gz(work / "src", names, work / "src.tar.gz")
            model, archive = make_model(work / "model"), ("tar.gz", work / "src.tar.gz")
        violations = sum(chaos(kind, source, names, model, work, args.kills, rng)
                         for kind, source in (("folder", work / "src"), archive))
    print(f"total violations: {violations}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
