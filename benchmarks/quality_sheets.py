"""Quality sheets (issue 15): train (or take) a model per painting, then draw, per painting, one
sheet: for every photo, photo | painting | published reference (where there is one) | stylepipe,
each fitted to a cell, and under it the same columns as 1:1 crops; beside each picture the
yardstick (tasks/evaluation/metrics.py's style and content losses under the fixed evaluation
encoder, at evaluate.image_size), the 4-pixel grid (tasks/evaluation/spectrum.py: its power ratio
and its amplitude in levels) and, for
stylepipe, how differently it treats the photo and its grayscale copy, and for every picture its
colour distance to the painting (the evaluate stage's, tasks/evaluation/metrics.py), its share of
flat clipped regions (tasks/evaluation/clipping.py: holes and glows pinned to black or white) and how
far its outline lengths are from the painting's (tasks/evaluation/forms.py; read against the photo's).

    OMP_NUM_THREADS=1 python benchmarks/quality_sheets.py --styles ../shared/images/style \\
        --photos ../shared/images/content --references ../shared/images/reference --out /tmp/sheets \\
        [--only candy mondrian] [--steps 400] [--set train.upsample=pixelshuffle ...] [--take DIR]

Training uses params.yaml's first johnson model (its dataset, preprocessed by the pipeline: run
`dvc repro preprocess@photos` first) with --steps and --set applied; models land in OUT/models/
and are kept when their painting, data and settings are unchanged (tasks/tools/style_grid.py's
train_styles). A reference is the file REFERENCES/<photo stem>-<painting stem>.* (pytorch/examples'
naming: amber-candy.jpg). Writes OUT/<painting>.png and OUT/summary.json. Nothing here is a
stage: no stage reads OUT.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from stylepipe.config import EvaluateParams, parse_override, read_raw, set_in, validate
from tasks.evaluation import metrics as em
from tasks.evaluation.clipping import clipped_share
from tasks.evaluation.colour import colour_response
from tasks.evaluation.forms import outline_distance, output_outlines, painting_outlines
from tasks.evaluation.spectrum import grid_amplitude, grid_ratio

CELL = 320        # px: the long side of each fitted picture
CROP = 256        # px: side of each 1:1 crop (the centre of the picture at --size)
TEXT = 64         # px: the caption band under each row
HEADER = 38       # px: the sheet's two-line legend
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def fit(img: Image.Image, long_side: int, upscale: bool = False) -> Image.Image:
    scale = long_side / max(img.size)
    if scale >= 1 and not upscale:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


def centre_crop(img: Image.Image, side: int) -> Image.Image:
    left, top = max(0, (img.width - side) // 2), max(0, (img.height - side) // 2)
    return img.crop((left, top, min(img.width, left + side), min(img.height, top + side)))


@torch.inference_mode()
def run_net(net, arr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float().div(255)
    return net(x)[0].permute(1, 2, 0).mul(255).add(0.5).clamp(0, 255).byte().numpy()


class Yardstick:
    """The evaluate stage's losses: images at evaluate.image_size (short side), fixed encoder."""

    def __init__(self, image_size: int):
        self.size, self.device = image_size, torch.device("cpu")
        self.encoder, self.style_layers, self.content_layers = em.build_eval_encoder(Path("data/weights"), self.device)

    def arr(self, img: Image.Image, dims: tuple[int, int] | None = None) -> np.ndarray:
        return em.to_array(img, dims or em.eval_dims(*img.size, self.size))

    def style_grams(self, painting: Image.Image) -> dict:
        return em.grams(em.features(self.encoder, self.arr(painting), self.device), self.style_layers)

    def losses(self, image: Image.Image, photo: Image.Image, style_grams: dict) -> dict[str, float]:
        p = self.arr(photo)
        dims = (p.shape[1], p.shape[0])
        pf = em.features(self.encoder, p, self.device)
        f = em.features(self.encoder, self.arr(image, dims), self.device)
        return {"style": em.style_loss(em.grams(f, self.style_layers), style_grams),
                "content": em.content_loss(f, pf, self.content_layers)}


def train_models(paintings: list[Path], out: Path, steps: int | None, sets: list[str],
                 data: Path | None = None) -> dict[str, Path]:
    """{name: model folder} of the paintings that trained (or were already trained as asked)."""
    from tasks.tools.style_grid import template_model, train_styles

    raw = read_raw(Path("params.yaml"))
    name, _ = template_model(validate(raw))
    for assignment in ([f"train.steps={steps}"] if steps else []) + sets:
        keys, value = parse_override(assignment)
        set_in(raw, ["models", name, *keys], value)  # on params.yaml's text: a preset fills what is unset
    params = validate(raw)
    template = params.models[name]
    params = params.model_copy(update={"models": {name: template}})
    data = data or Path("data/processed") / template.dataset
    trained, failed = train_styles(paintings, params, out / "models", data, checkpoints=out / ".checkpoints")
    for painting, why in failed.items():
        print(f"not trained: {painting}: {why}")
    return {t.name: t.model_dir for t in trained}


def caption(draw: ImageDraw.ImageDraw, x: int, y: int, lines: list[str]) -> None:
    for i, line in enumerate(lines):
        draw.text((x + 4, y + 4 + 14 * i), line, fill=(0, 0, 0))


def sheet(painting: Path, name: str, model_dir: Path, photos: list[Path], references: Path | None,
          size: int, yardstick: Yardstick, out: Path) -> dict:
    from models.weights import load_model

    net, sidecar = load_model(model_dir)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    painting_img = em.open_rgb(painting)
    style_grams = yardstick.style_grams(painting_img)
    trained_painting = fit(painting_img, sidecar.get("style_size", 256), upscale=True)
    painting_lab = em.lab_pixels(np.asarray(trained_painting))

    def palette(img) -> float:  # the evaluate stage's colour distance to the painting (Lab units)
        return em.colour_distance(em.lab_pixels(np.asarray(img)), painting_lab)

    painting_lengths = painting_outlines(np.asarray(painting_img))

    def outlines(img) -> float:  # octaves between its outline lengths and the painting's
        return outline_distance(output_outlines(np.asarray(img)), painting_lengths)
    rows, summary = [], {"painting": str(painting), "model": str(model_dir), "steps": sidecar.get("steps"),
                         "upsample": sidecar.get("upsample"), "train": sidecar.get("train"), "photos": {}}
    for photo_path in photos:
        photo = fit(em.open_rgb(photo_path), size)
        arr = np.asarray(photo)
        started = time.perf_counter()
        ours = Image.fromarray(run_net(net, arr))
        seconds = time.perf_counter() - started
        inputs_diff, outputs_diff = colour_response(lambda a: run_net(net, a), arr)
        ref = ref_native = None
        if references is not None:
            found = [p for p in images_in(references) if p.stem == f"{photo_path.stem}-{painting.stem}"]
            if found:
                ref_native = em.open_rgb(found[0])
                ref = fit(ref_native, size).resize(photo.size, Image.LANCZOS)
        ours_pixels = np.asarray(ours)
        entry = {"photo": {**yardstick.losses(photo, photo, style_grams), "palette": palette(photo),
                           "clipped": clipped_share(arr), "outlines": outlines(arr)},
                 "stylepipe": {**yardstick.losses(ours, photo, style_grams), "grid": grid_ratio(ours_pixels),
                               "grid_amplitude": grid_amplitude(ours_pixels), "palette": palette(ours),
                               "clipped": clipped_share(ours_pixels), "outlines": outlines(ours_pixels),
                               "colour_in": inputs_diff, "colour_out": outputs_diff, "seconds": seconds}}
        if ref is not None:
            # the grid at the reference's own size: shrinking it to `size` would alias its grid away
            ref_pixels = np.asarray(ref_native)
            entry["reference"] = {**yardstick.losses(ref, photo, style_grams), "grid": grid_ratio(ref_pixels),
                                  "grid_amplitude": grid_amplitude(ref_pixels),
                                  "palette": palette(ref), "clipped": clipped_share(np.asarray(ref)),
                                  "outlines": outlines(ref)}
        summary["photos"][photo_path.name] = entry
        rows.append((photo_path.name, photo, ref, ours, entry))

    cols = 4
    row_h = CELL + TEXT + CROP + TEXT
    canvas = Image.new("RGB", (cols * CELL, HEADER + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), f"{name}: {sidecar.get('steps')} steps, {sidecar.get('network')}/{sidecar.get('upsample', '?')}, "
                      f"at {size} px; crops 1:1 ({CROP} px, centre); style/content: yardstick losses "
                      f"(photo's own style loss in the photo column); grid: (1/4,1/4) power ratio / amplitude in levels; "
                      f"palette: Lab distance to the painting;\nclipped: pixels in flat clipped regions; "
                      f"outlines: octaves from the painting's outline lengths (tasks/evaluation/forms.py)", fill=(0, 0, 0))
    for r, (photo_name, photo, ref, ours, entry) in enumerate(rows):
        y0 = HEADER + r * row_h
        pictures = [photo, painting_img, ref, ours]
        crops = [centre_crop(photo, CROP), centre_crop(trained_painting, CROP),
                 centre_crop(ref, CROP) if ref is not None else None, centre_crop(ours, CROP)]
        texts = [
            [photo_name, f"style {entry['photo']['style']:.3f}  palette {entry['photo']['palette']:.1f}",
             f"clipped {100 * entry['photo']['clipped']:.2f}%  outlines {entry['photo']['outlines']:.2f}"],
            [painting.name, f"crop: at the trained {sidecar.get('style_size', 256)} px"],
            ["published reference", f"style {entry['reference']['style']:.3f} content {entry['reference']['content']:.3f}",
             f"grid {entry['reference']['grid']:.1f} / {entry['reference']['grid_amplitude']:.2f} (own size)  palette {entry['reference']['palette']:.1f}",
             f"clipped {100 * entry['reference']['clipped']:.2f}%  outlines {entry['reference']['outlines']:.2f}"] if ref is not None
            else ["no published reference"],
            ["stylepipe", f"style {entry['stylepipe']['style']:.3f} content {entry['stylepipe']['content']:.3f}",
             f"grid {entry['stylepipe']['grid']:.2f} / {entry['stylepipe']['grid_amplitude']:.2f}  grey copy: in {entry['stylepipe']['colour_in']:.1f} "
             f"out {entry['stylepipe']['colour_out']:.1f} /255  palette {entry['stylepipe']['palette']:.1f}",
             f"clipped {100 * entry['stylepipe']['clipped']:.2f}%  outlines {entry['stylepipe']['outlines']:.2f}"],
        ]
        for c in range(cols):
            x0 = c * CELL
            if pictures[c] is not None:
                canvas.paste(fit(pictures[c], CELL, upscale=True), (x0, y0))
            caption(draw, x0, y0 + CELL, texts[c])
            if crops[c] is not None:
                canvas.paste(crops[c], (x0, y0 + CELL + TEXT))
    canvas.save(out / f"{name}.png")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", type=Path, required=True, help="folder of paintings")
    parser.add_argument("--photos", type=Path, required=True, help="folder of held-out photos")
    parser.add_argument("--references", type=Path, help="published outputs, <photo>-<painting>.jpg")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="painting stems to use (default: all)")
    parser.add_argument("--steps", type=int, help="training steps (default: params.yaml's)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="train setting override, e.g. train.upsample=pixelshuffle (repeatable)")
    parser.add_argument("--take", type=Path, help="folder of trained models, <painting stem>/: used as they "
                        "are, not trained (a painting without one is trained as usual)")
    parser.add_argument("--data", type=Path, help="processed training photos (default: data/processed/<the "
                        "template model's dataset>)")
    parser.add_argument("--size", type=int, default=512, help="long side the photos are stylized at")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    paintings = [p for p in images_in(args.styles) if not args.only or p.stem in args.only]
    photos = images_in(args.photos)
    args.out.mkdir(parents=True, exist_ok=True)
    from tasks.tools.style_grid import style_name

    names = {p: style_name(p) for p in paintings}
    taken = {names[p]: args.take / names[p] for p in paintings
             if args.take is not None and (args.take / names[p] / "model.json").is_file()}
    to_train = [p for p in paintings if names[p] not in taken]
    models = {**(train_models(to_train, args.out, args.steps, args.sets, args.data) if to_train else {}), **taken}
    yardstick = Yardstick(EvaluateParams().image_size)
    summary = {}
    for painting in paintings:
        name = names[painting]
        if name in models:
            summary[name] = sheet(painting, name, models[name], photos, args.references, args.size, yardstick, args.out)
            print(f"wrote {args.out / (name + '.png')}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
