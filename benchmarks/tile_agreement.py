"""How far a tiled image is from the same network's untiled pass: PSNR, max, mean and 99.9th
percentile of the absolute difference (levels of 255), per statistics side (the tile_above whose
tasks/bulk/tiling.py statistics_image the instance norms' statistics come from: a thumbnail, or above
1.5x that side a mosaic of the image's own pixels; the image's own long side makes them exact) and
tile overlap.

    python benchmarks/tile_agreement.py data/models/swirls PHOTO... --thumbs 2048 1024 --overlaps 128 64 32

Use photos above 2048 px (Debian's mate-backgrounds has 2560-px and 5640-px ones: `apt-get download
mate-backgrounds`, then `dpkg-deb -x`); the untiled pass needs memory for the whole image's
activations (about 3 GB at 4096x4096).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from tasks.bulk.memory import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--thumbs", nargs="+", type=int, default=[2048], help="statistics sides (tile_above)")
    parser.add_argument("--overlaps", nargs="+", type=int, default=[128, 64, 32])
    parser.add_argument("--tile-size", type=int, default=1280)
    parser.add_argument("--exact", action="store_true", help="also the image's own side as the thumbnail")
    args = parser.parse_args()
    keep_freed_memory()

    import numpy as np
    import torch
    from PIL import Image

    from tasks.bulk.plan import ModelSpec
    from tasks.bulk.runners import StyleModels

    torch.set_num_threads(1)
    spec = [ModelSpec(args.model)]
    for photo in args.photos:
        pixels = np.array(Image.open(photo).convert("RGB"))
        h, w = pixels.shape[:2]
        whole = StyleModels(spec, torch.device("cpu"), tile_size=args.tile_size, tile_overlap=0,
                            tile_above=max(h, w), batch_size=1)
        start = time.perf_counter()
        reference = whole.stylize(pixels[None].copy())[0][0].astype(np.int16)
        print(f"{photo.name} {w}x{h}: untiled {time.perf_counter() - start:.1f} s", flush=True)
        del whole
        for thumb in args.thumbs + ([max(h, w)] if args.exact else []):
            for overlap in args.overlaps:
                models = StyleModels(spec, torch.device("cpu"), tile_size=args.tile_size, tile_overlap=overlap,
                                     tile_above=thumb, batch_size=1, parallel=2)
                start = time.perf_counter()
                tiled = models.stylize_large(pixels)[0]
                seconds = time.perf_counter() - start
                d = np.abs(tiled.astype(np.int16) - reference)
                psnr = 10 * np.log10(255 ** 2 / max((d.astype(np.float64) ** 2).mean(), 1e-12))
                print(f"  statistics {thumb:>5}, overlap {overlap:>3}: PSNR {psnr:6.2f} dB, max {d.max():3d}, "
                      f"mean {d.mean():.3f}, 99.9% {np.percentile(d, 99.9):.0f}; {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
