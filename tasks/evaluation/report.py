"""The evaluate stage's HTML report: one static page, no scripts, with its images beside it.

Images are small JPEG thumbnails (and PNG loss curves) in report/images/ rather than data URIs: the
page stays a few tens of kB, loads fast, diffs as text, and a thumbnail that did not change is the
same file for DVC's cache. The folder is the self-contained unit (copy or publish it whole).
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from stylepipe.config import EvaluateParams  # noqa: E402
from tasks.evaluation.metrics import open_rgb  # noqa: E402

CSS = """
:root { --ink:#1d2330; --muted:#5d6675; --line:#e3e6eb; --bg:#f6f7f9; --ok:#17794a; --okbg:#e6f4ec;
        --bad:#b42318; --badbg:#fdecea; --warn:#a15c07; --warnbg:#fef4e4; }
* { box-sizing:border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--ink); background:var(--bg); }
main { max-width:1180px; margin:0 auto; padding:28px 24px 60px; }
h1 { font-size:28px; margin:0 0 4px; }
h2 { font-size:22px; margin:0; }
h3 { font-size:16px; margin:26px 0 10px; color:var(--muted); text-transform:uppercase; letter-spacing:.04em; }
.sub { color:var(--muted); margin:0 0 22px; }
.panel { background:#fff; border:1px solid var(--line); border-radius:10px; padding:20px 22px; margin:0 0 26px; }
table { border-collapse:collapse; width:100%; }
.scroll { overflow-x:auto; }
.overview td { font-size:14px; padding:7px 8px; } .overview th { padding:7px 8px; }
.nw { white-space:nowrap; }
th, td { text-align:left; padding:7px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; text-transform:uppercase; letter-spacing:.03em; color:var(--muted); font-weight:600; }
td.num { font-variant-numeric:tabular-nums; white-space:nowrap; }
.badge { display:inline-block; white-space:nowrap; padding:2px 10px; border-radius:999px; font-size:13px;
         font-weight:600; }
.badge.ok { color:var(--ok); background:var(--okbg); } .badge.bad { color:var(--bad); background:var(--badbg); }
.badge.warn { color:var(--warn); background:var(--warnbg); }
.head { display:flex; align-items:center; gap:14px; flex-wrap:wrap; margin-bottom:6px; }
.reason { margin:4px 0 14px; color:var(--muted); }
.checks { list-style:none; padding:0; margin:0 0 6px; }
.checks li { padding:3px 0; }
.checks .y { color:var(--ok); font-weight:700; } .checks .n { color:var(--bad); font-weight:700; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(140px,1fr)); gap:12px; margin:16px 0 4px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 12px; background:#fbfcfd; }
.card .k { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.03em; }
.card .v { font-size:21px; font-weight:650; font-variant-numeric:tabular-nums; }
.card .v.text { font-size:17px; padding:4px 0 2px; }
.card .d { font-size:12.5px; color:var(--muted); }
.grid td { width:33.3%; text-align:center; border:none; padding:6px; }
.grid th { text-align:center; }
.grid img { max-width:100%; max-height:250px; width:auto; height:auto; border-radius:6px; display:block;
            margin:0 auto; background:#eee; }
.grid .cap { font-size:12.5px; color:var(--muted); margin-top:4px; }
.curve { max-width:100%; height:auto; border:1px solid var(--line); border-radius:8px; background:#fff; }
.two { display:grid; grid-template-columns:minmax(0,3fr) minmax(0,2fr); gap:22px; align-items:start; }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 14px; margin:0; font-size:14px; }
dt { color:var(--muted); } dd { margin:0; overflow-wrap:anywhere; }
.note { font-size:14px; color:var(--muted); }
.glossary dt { color:var(--ink); font-weight:600; }
a { color:#2456c8; }
.pixels { width:100%; image-rendering:pixelated; border-radius:6px; }
.previews { display:grid; grid-template-columns:repeat(auto-fill,minmax(260px,1fr)); gap:14px; }
.strip { display:flex; flex-wrap:wrap; gap:14px; margin-bottom:10px; }
figure { margin:0; }
"""

VERDICT = {
    "promoted": ("ok", "Passed · published"),
    "already_published": ("ok", "Published (unchanged)"),
    "passed_not_promoted": ("warn", "Passed · not published"),
    "blocked": ("bad", "Blocked by the gate"),
}


def reset(report_dir: Path) -> None:
    """Start from an empty report folder (no stale images of a removed style)."""
    shutil.rmtree(report_dir, ignore_errors=True)
    (report_dir / "images").mkdir(parents=True)


def thumbnail(src: Path, dst: Path, size: int) -> tuple[int, int]:
    img = open_rgb(src)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    img.save(dst, "JPEG", quality=85, optimize=True)
    return img.size


def plot_losses(tsv: Path, png: Path, style: str) -> bool:
    """The training loss curves (every column of the log against its step; log scale when all are
    positive) as a PNG; False when there is no usable log."""
    if not tsv.is_file():
        return False
    df = pd.read_csv(tsv, sep="\t")
    cols = [c for c in df.columns if c != "step"]
    if df.empty or "step" not in df.columns or not cols:
        return False
    fig, ax = plt.subplots(figsize=(7.2, 3.4), dpi=110)
    for c in cols:
        ax.plot(df["step"], df[c], label=c, linewidth=2.0 if c == cols[0] else 1.3)
    positive = bool((df[cols] > 0).all().all())
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (log scale)" if positive else "loss")
    ax.set_title(f"{style}: training losses", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(frameon=False, ncol=len(cols), fontsize=9, loc="upper right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# Formatting


def e(x) -> str:
    return html.escape(str(x), quote=True)


def num(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}".replace(",", " ")
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}".replace(",", " ")


def count(v) -> str:
    if v is None:
        return "–"
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k" if v >= 1e3 else str(v)


def pct(v) -> str:
    return "–" if v is None else f"{'−' if v < 0 else '+'}{abs(v):.0%}"


def img_tag(src: str, size: tuple[int, int], alt: str) -> str:
    return f'<img src="{e(src)}" width="{size[0]}" height="{size[1]}" alt="{e(alt)}">'


def card(key: str, value: str, detail: str = "", text: bool = False) -> str:
    v = "v text" if text else "v"
    return (f'<div class="card"><div class="k">{e(key)}</div><div class="{v}">{value}</div>'
            f'<div class="d">{detail}</div></div>')


# ---------------------------------------------------------------------------------------------
# Page


def overview(summary: dict) -> str:
    head = "".join(f"<th>{h}</th>" for h in (
        "Style", "Verdict", "Style loss<br>photo → result", "Content<br>loss", "SSIM",
        "Colour distance<br>photo → result", "Model"))
    rows = []
    for style, r in summary["styles"].items():
        m, side = r["metrics"], r["model"]["sidecar"]
        cls, label = VERDICT[r["decision"]]
        rows.append(
            f'<tr><td><a href="#style-{e(style)}"><b>{e(style)}</b></a></td>'
            f'<td><span class="badge {cls}">{e(label)}</span></td>'
            f'<td class="num">{num(m["style_loss_content"])} → <b>{num(m["style_loss"])}</b> '
            f'({pct(-m["style_loss_drop"])})</td>'
            f'<td class="num">{num(m["content_loss"])}</td><td class="num">{num(m["ssim"])}</td>'
            f'<td class="num">{num(m["colour_distance_content"])} → <b>{num(m["colour_distance"])}</b></td>'
            f'<td><span class="nw">{e(side.get("network", "?"))} · {count(m.get("params"))} params</span><br>'
            f'<span class="nw note">{num(side.get("steps"))} steps on {e(side.get("device", "?"))}</span></td></tr>'
        )
    return (f'<div class="scroll"><table class="overview"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def headline(r: dict) -> str:
    """One sentence under a style's name; the checks below it give the numbers."""
    failed = [c["name"] for c in r["gate"]["checks"] if not c["passed"]]
    if r["decision"] == "blocked":
        kept = (f" The published model ({r['published_sha256'][:12]}) stays." if r.get("published_sha256")
                else " Nothing is published for this style.")
        return f"Not published: it fails the {' and '.join(failed)} check{'s' if len(failed) > 1 else ''}.{kept}"
    return r["reason"][0].upper() + r["reason"][1:] + "."


def checks_list(checks: list[dict]) -> str:
    items = "".join(
        f'<li><span class="{"y" if c["passed"] else "n"}">{"✓" if c["passed"] else "✗"}</span> '
        f'<b>{e(c["name"])}</b>: {e(c["message"])}</li>' for c in checks)
    return f'<ul class="checks">{items}</ul>'


def comparison_table(comp: dict | None) -> str:
    if comp is None:
        return ""
    c, p = comp["candidate"], comp["published"]
    rows = "".join(
        f'<tr><td>{label}</td><td class="num">{num(p[k])}</td><td class="num"><b>{num(c[k])}</b></td>'
        f'<td class="note">{hint}</td></tr>'
        for k, label, hint in (("style_loss", "Style loss", "lower = closer to the style"),
                               ("content_loss", "Content loss", "lower = closer to the photo"),
                               ("ssim", "SSIM", "higher = more photo structure kept")))
    when = f", published {e(comp['published_at'].replace('T', ' ')[:16])} UTC" if comp.get("published_at") else ""
    return (f'<h3>Against the published model</h3><p class="note">Both networks run on the same validation '
            f'photos at the evaluation size (published model {e(comp["published_sha256"][:12])}{when}).</p>'
            f'<table><thead><tr><th>Metric</th><th>Published</th><th>This model</th><th></th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')


def style_section(style: str, r: dict, report_dir: Path, params: EvaluateParams,
                  content_thumbs: dict[str, tuple[str, tuple[int, int]]]) -> str:
    m, side = r["metrics"], r["model"]["sidecar"]
    cls, label = VERDICT[r["decision"]]
    style_src = f"images/{style}/style.jpg"
    style_size = thumbnail(Path(r["style_image"]), report_dir / style_src, params.thumb_size)

    rows = []
    for row in r["images"]:
        if row["image"] not in content_thumbs:
            continue
        src, csize = content_thumbs[row["image"]]
        res_src = f"images/{style}/{row['image']}.jpg"
        rsize = thumbnail(Path(row["result_path"]), report_dir / res_src, params.thumb_size)
        rows.append(
            f'<tr><td>{img_tag(src, csize, "photo " + row["image"])}<div class="cap">{e(row["image"])} · '
            f'{row["width"]}×{row["height"]}</div></td>'
            f'<td>{img_tag(style_src, style_size, "style image")}<div class="cap">style loss of the photo: '
            f'{num(row["style_loss_content"])}</div></td>'
            f'<td>{img_tag(res_src, rsize, "result " + row["image"])}<div class="cap">style loss '
            f'<b>{num(row["style_loss"])}</b> · content loss {num(row["content_loss"])} · SSIM {num(row["ssim"])}'
            f'</div></td></tr>')
    shown = len(rows)
    grid = (f'<table class="grid"><thead><tr><th>Photo (validation)</th><th>Style image</th><th>Result</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')

    curve_src = f"images/{style}/losses.png"
    if plot_losses(Path(r["train_log"]), report_dir / curve_src, style):
        curve = f'<img class="curve" src="{e(curve_src)}" alt="training loss curves of {e(style)}">'
    else:
        curve = f'<p class="note">No training log at {e(r["train_log"])}.</p>'
    final = side.get("final_losses") or {}
    final_txt = ", ".join(f"{k} {num(v)}" for k, v in final.items()) if isinstance(final, dict) else e(final)
    model_card = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in (
        ("network", f'{e(side.get("network"))} · {count(m.get("params"))} parameters'),
        ("trained with", f'{e(side.get("encoder"))} encoder, {num(side.get("steps"))} steps at '
                         f'{e(side.get("image_size"))} px'),
        ("trained on", e(side.get("device"))),
        ("final losses", final_txt or "–"),
        ("code version", e(side.get("code_version", "–"))),
        ("model sha256", e(r["model"]["sha256"][:16]) + "…"),
        ("model folder", e(r["model"]["dir"])),
        ("published folder", e(r["published_dir"]) if m.get("promoted") else "– (not published)"),
    ))

    cards = "".join([
        card("Style loss", f'{num(m["style_loss"])}',
             f'photo: {num(m["style_loss_content"])} · {pct(-m["style_loss_drop"])}'),
        card("Content loss", num(m["content_loss"]), "0 = same features as the photo"),
        card("SSIM to photo", num(m["ssim"]), "1 = identical structure"),
        card("Colour distance", num(m["colour_distance"]),
             f'to the style image · photo: {num(m["colour_distance_content"])}'),
        card("LPIPS", num(m["lpips"]) if "lpips" in m else "unavailable",
             "learned perceptual distance to the photo", text="lpips" not in m),
        card("Size", count(m.get("params")), f'{num(m.get("gflops_512"))} GFLOP per 512 px image'),
    ])
    return f"""
<section class="panel" id="style-{e(style)}">
  <div class="head"><h2>{e(style)}</h2><span class="badge {cls}">{e(label)}</span></div>
  <p class="reason">{e(headline(r))}</p>
  {checks_list(r["gate"]["checks"])}
  <div class="cards">{cards}</div>
  {comparison_table(r["comparison"])}
  <h3>Validation photos ({shown} of {m["images"]} shown; the metrics use all)</h3>
  {grid}
  <h3>Training</h3>
  <div class="two"><div>{curve}</div><dl>{model_card}</dl></div>
</section>"""


GENERATOR_CARDS = (  # (metric, title, what it means)
    ("label_accuracy", "Label accuracy", "the judge agrees with the class asked for"),
    ("confident_fraction", "Confident", "samples the judge classifies with p ≥ 0.9"),
    ("fid_inception", "FID", "Fréchet distance in the FID Inception's pool features (user-supplied weights)"),
    ("fd_effnetl0", "FD EffNet-L0", "Fréchet distance to real images, EfficientNet-Lite0 features"),
    ("kid_effnetl0", "KID EffNet-L0", "kernel (MMD²) distance, same features"),
    ("precision", "Precision", "samples inside the real manifold"),
    ("recall", "Recall", "real images covered by the samples"),
    ("fd_judge", "FD judge", "Fréchet distance in the judge's features"),
    ("heldout_elbo", "Held-out ELBO", "nats per test image (higher is better)"),
)


def generator_section(name: str, r: dict, report_dir: Path) -> str:
    m, side = r["metrics"], r["model"]["sidecar"]
    cls, label = VERDICT[r["decision"]]
    cards = []
    for key, title, meaning in GENERATOR_CARDS:
        if key in m:
            floor = m.get(f"floor_{key}")
            cards.append(card(title, num(m[key]), meaning + (f" · real vs real: {num(floor)}" if floor is not None else "")))
    cards.append(card("Classes", f'{m["classes_present"]}', f'judged present · {m["class_share_min"]:.1%}'
                      f'–{m["class_share_max"]:.1%} of samples per class'))
    cards.append(card("Judge", f'{m["judge_test_accuracy"]:.1%}', "its accuracy on the held-out split"))
    grids = "".join(
        f'<figure><img class="pixels" src="images/{e(name)}/{e(f)}" alt="{e(k)} of {e(name)}">'
        f'<figcaption class="cap">{e(k)}</figcaption></figure>' for k, f in r.get("grids", {}).items())
    previews = r.get("previews") or []
    preview_html = ""
    if previews:
        shown = previews[-4:]
        for path in shown:
            shutil.copy2(path, report_dir / "images" / name / Path(path).name)
        preview_html = "<h3>Fixed-noise samples during training</h3><div class=\"previews\">" + "".join(
            f'<figure><img class="pixels" src="images/{e(name)}/{e(Path(p).name)}" alt="preview">'
            f'<figcaption class="cap">{e(Path(p).stem)}</figcaption></figure>' for p in shown) + "</div>"
    curve_src = f"images/{name}/losses.png"
    curve = (f'<img class="curve" src="{e(curve_src)}" alt="training losses of {e(name)}">'
             if plot_losses(Path(r["train_log"]), report_dir / curve_src, name) else "")
    model_card = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in (
        ("family", side.get("family")), ("dataset", side.get("dataset")),
        ("training", f'{side.get("steps")} steps, batch {side.get("batch_size")}, on {side.get("device")}'),
        ("samples measured", m.get("samples")), ("code version", side.get("code_version", "–")),
        ("model sha256", r["model"]["sha256"][:16] + "…")))
    return f"""
<section class="panel" id="model-{e(name)}">
  <div class="head"><h2>{e(name)} <span class="note">({e(r["family"])})</span></h2><span class="badge {cls}">{e(label)}</span></div>
  <p class="reason">{e(r["reason"])}</p>
  {checks_list(r["gate"]["checks"])}
  <div class="cards">{"".join(cards)}</div>
  <h3>Samples (one row per class for a conditional model)</h3><div class="previews">{grids}</div>
  {preview_html}
  <h3>Training</h3>
  <div class="two"><div>{curve}</div><dl>{model_card}</dl></div>
</section>"""


def glossary(summary: dict) -> str:
    ev = summary["evaluation"]
    g = ev["gate"]
    lp = summary["lpips"]
    items = [
        ("Style loss", "How far the image's texture statistics are from the style image's: the relative "
         f"difference of Gram matrices of {ev['encoder']} features at layers {', '.join(ev['style_layers'])}. "
         "0 = identical statistics. Shown for the unstylized photo (the baseline) and for the result; the drop "
         "between them is what the model achieves."),
        ("Content loss", f"Relative difference of the content-layer features ({', '.join(ev['content_layers'])}) "
         "between result and photo. 0 = same content features; it grows as the style replaces the photo's detail."),
        ("SSIM", "Structural similarity of result and photo (scikit-image, RGB). 1 = identical, about 0 = unrelated; "
         "a stylized image keeps the photo's layout at a moderate value."),
        ("Colour distance", "Sliced Wasserstein distance between the colour distributions of the image and the "
         "style image in CIELAB (roughly ΔE units). Lower = a palette closer to the style image's; the photo's own "
         "distance is the baseline."),
        ("LPIPS", "Learned perceptual distance to the photo: " + (
            f"computed with {e(lp['note'])}." if lp["available"]
            else f"unavailable here ({e(lp['note'])}); it is never estimated.")),
        ("Speed", f"Median of {ev['timing_repeats']} timed forward passes (after a warm-up) of one square image, "
         "network only, on the machine that ran evaluate: metrics/timings.json (kept out of this report, "
         "whose bytes must not depend on the machine)."),
        ("Why this yardstick", f"Every model is measured with the same fixed encoder ({ev['encoder']}) and layers "
         f"on held-out photos at {ev['image_size']} px, whatever it was trained with, so the numbers compare "
         "models and runs with each other. A model trained with this encoder family has a head start on the two "
         "losses, which is why SSIM and the colour distance, which no training loss optimises, stand beside them."),
        ("Gate", f"A model is published only if its style loss is at least {g['min_style_drop']:.0%} below the "
         f"photos', SSIM ≥ {g['min_ssim']}, one {g['latency_size']} px image takes ≤ {g['max_latency_ms']:.0f} ms, "
         f"and, against the published model on the same photos, its style loss is at most "
         f"{g['max_style_regression']:.0%} worse and its SSIM at most {g['max_ssim_drop']} lower."),
    ]
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f'<section class="panel glossary"><h2>How to read the numbers</h2><br><dl>{body}</dl></section>'


TRANSLATOR_CARDS = (
    ("psnr", "PSNR", "dB against the target; identity", "identity_psnr"),
    ("ssim", "SSIM", "against the target; identity", "identity_ssim"),
    ("l1", "L1", "mean |output - target|; identity", "identity_l1"),
    ("fd_effnetl0", "fd_effnetl0", "to the target domain; inputs", "fd_effnetl0_inputs"),
    ("kid_effnetl0", "kid_effnetl0", "to the target domain; inputs", "kid_effnetl0_inputs"),
    ("cycle_l1", "Cycle L1", "mean |back(forward(x)) - x|", None),
)


def translator_section(name: str, r: dict, report_dir: Path) -> str:
    """A translation model: its scores beside the baselines, an input | output | target grid, losses."""
    m, side = r["metrics"], r["model"]["sidecar"]
    cards = []
    for key, title, meaning, base in TRANSLATOR_CARDS:
        if key in m:
            extra = f" {num(m[base])}" if base and base in m else ""
            if key == "fd_effnetl0" and "floor_fd_effnetl0" in m:
                extra += f" · real vs real: {num(m['floor_fd_effnetl0'])}"
            cards.append(card(title, num(m[key]), meaning + extra if base else meaning))
    curve_src = f"images/{name}/losses.png"
    curve = (f'<img class="curve" src="{e(curve_src)}" alt="training losses of {e(name)}">'
             if plot_losses(Path(r["train_log"]), report_dir / curve_src, name) else "")
    return f"""
<section class="panel" id="model-{e(name)}">
  <div class="head"><h2>{e(name)} <span class="note">({e(r["family"])}, {e(r["direction"])})</span></h2></div>
  <p class="reason">measured on {m.get("images")} held-out images; translation models are not gated or promoted</p>
  <div class="cards">{"".join(cards)}</div>
  <h3>Input | output | target</h3><div class="previews"><figure><img class="pixels" src="{e(r["grid"])}"
  alt="input, output and target of {e(name)}"></figure></div>
  <h3>Training</h3>
  <div class="two"><div>{curve}</div><dl><dt>training</dt><dd>{e(side.get("steps"))} steps of
  {e(side.get("batch_size"))}</dd></dl></div>
</section>"""


def write_adain_images(name: str, shown: dict, report_dir: Path) -> dict:
    """Arrays in [0,1] of an adain model's grid -> JPEGs under images/<name>/; returns, per painting,
    its file and [(photo, photo file, result file, per-style network's result file or None)]."""
    from PIL import Image

    folder = report_dir / "images" / name
    folder.mkdir(parents=True, exist_ok=True)

    def save(arr, file: str) -> str:
        Image.fromarray((arr.clip(0, 1) * 255).round().astype("uint8")).save(folder / file, quality=90)
        return f"images/{name}/{file}"

    return {p: {"painting": save(g["painting"], f"{p}.jpg"),
                "results": [(photo, save(c, f"{photo}.jpg"), save(y, f"{p}-{photo}.jpg"),
                             None if twin is None else save(twin, f"{p}-{photo}-per-style.jpg"))
                            for photo, c, y, twin in g["results"]]}
            for p, g in shown.items()}


def adain_section(name: str, r: dict) -> str:
    """An adain model: per held-out painting, the yardstick's numbers and its results; where a
    per-style (johnson) network of the same painting exists, its numbers and results beside them."""
    m, side = r["metrics"], r["sidecar"]

    def cells(pm: dict) -> str:
        return (f'<td class="num">{num(pm["style_loss_content"])} → <b>{num(pm["style_loss"])}</b> '
                f'({pct(-pm["style_loss_drop"])})</td><td class="num">{num(pm["content_loss"])}</td>'
                f'<td class="num">{num(pm["ssim"])}</td>'
                f'<td class="num">{num(pm["colour_distance_content"])} → <b>{num(pm["colour_distance"])}</b></td>')

    table = ""
    for p, pm in r["paintings"].items():
        twin = pm.get("per_style")
        table += (f'<tr><td rowspan="{2 if twin else 1}"><img src="{e(r["grid"][p]["painting"])}" '
                  f'alt="painting {e(p)}" style="height:64px"></td><td>{e(name)} (adain)</td>{cells(pm)}</tr>')
        if twin:
            table += f'<tr><td>{e(twin["model"])} (per-style network)</td>{cells(twin)}</tr>'

    def figures(p: str, photo: str, c: str, y: str, twin: str | None) -> list[tuple[str, str, str]]:
        shown = [(c, photo, photo), (y, f"{photo} x {p}", "→ adain")]
        if twin:
            shown.append((twin, f"{photo} x {p}, per-style network", "→ per-style network"))
        return shown

    def row(shown: list[tuple[str, str, str]]) -> str:
        return '<div class="strip">' + "".join(
            f'<figure><img src="{e(src)}" alt="{e(alt)}" style="height:128px"><figcaption class="cap">{e(cap)}</figcaption></figure>'
            for src, alt, cap in shown) + "</div>"

    # a row per photo: the painting, the photo, AdaIN's result (and the per-style network's)
    grid = "".join(row([(g["painting"], "painting", f"painting {p}"), *figures(p, *result)])
                   for p, g in r["grid"].items() for result in g["results"])
    return f"""
<section class="panel" id="model-{e(name)}">
  <div class="head"><h2>{e(name)} <span class="note">(adain: any painting; held-out paintings x held-out photos)</span></h2></div>
  <p class="note">AdaIN at {e(side.get("layer"))} of {e(side.get("encoder"))} · {num(side.get("steps"))} training steps ·
  {m["paintings"]} held-out paintings x {m["images"]} photos · no gate</p>
  <div class="scroll"><table class="overview"><thead><tr><th>Painting</th><th>Model</th><th>Style loss<br>photo → result</th>
  <th>Content<br>loss</th><th>SSIM</th><th>Colour distance<br>photo → result</th></tr></thead><tbody>{table}</tbody></table></div>
  {grid}
</section>"""


def write_report(summary: dict, report_dir: Path, params: EvaluateParams) -> Path:
    """Write index.html and its images into report_dir (which reset() prepared)."""
    first = next(iter(summary["styles"].values()), {"images": [], "metrics": {"images": 0}})
    content_thumbs = {}
    for row in first["images"][: params.report_images]:
        src = f"images/content/{row['image']}.jpg"
        content_thumbs[row["image"]] = (src, thumbnail(Path(row["content_path"]), report_dir / src, params.thumb_size))

    n_styles = len(summary["styles"])
    published = sum(1 for r in summary["styles"].values() if r.get("published_sha256"))
    ev = summary["evaluation"]
    sections = "".join(style_section(s, r, report_dir, params, content_thumbs)
                       for s, r in summary["styles"].items())
    sections += "".join(generator_section(g, r, report_dir) for g, r in summary.get("generators", {}).items())
    sections += "".join(translator_section(t, r, report_dir) for t, r in summary.get("translators", {}).items())
    sections += "".join(adain_section(a, r) for a, r in summary.get("adain", {}).items())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>stylepipe · evaluation report</title><style>{CSS}</style></head>
<body><main>
<h1>stylepipe evaluation</h1>
<p class="sub">{n_styles} style model{"s" if n_styles != 1 else ""} · {len(summary.get("generators", {}))} generator(s) · {published} with a published model ·
{first["metrics"]["images"]} validation photos · measured at {ev["image_size"]} px with {e(ev["encoder"])} ·
speed and training time on this machine: <code>metrics/timings.json</code></p>
<section class="panel"><h2>Models at a glance</h2><br>{overview(summary)}
<p class="note">Lower style loss and colour distance = closer to the style image; lower content loss and higher
SSIM = more of the photo kept. Per-image numbers: <a href="per_image.csv">per_image.csv</a>; everything
behind this page: <a href="summary.json">summary.json</a>.</p></section>
{sections}
{glossary(summary)}
</main></body></html>
"""
    index = report_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
