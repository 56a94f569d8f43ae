"""Generate the built-in default style image, assets/styles/swirls.jpg.

stylepipe must run offline with no third-party painting on disk, so its default style is a painting
we make ourselves: swirling brush strokes (line integral convolution of noise along a vortex field)
in a night-sky palette. Deterministic; re-run only to change the asset:

    python scripts/make_default_style.py assets/styles/swirls.jpg
"""
import sys

import numpy as np
from PIL import Image, ImageFilter

SIZE, SEED, STROKE = 512, 7, 14
PALETTE = np.array(  # deep blue -> cobalt -> teal -> ochre -> bright yellow
    [[12, 22, 64], [28, 62, 140], [46, 116, 170], [210, 170, 60], [250, 226, 120]], np.float32
)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img.filter(ImageFilter.GaussianBlur(size / cells / 2)), np.float32) / 255


def vortex_field(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    vx, vy = np.zeros_like(x), np.zeros_like(y)
    for _ in range(7):
        cx, cy = rng.uniform(0, size, 2)
        spin = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.4)
        dx, dy = x - cx, y - cy
        falloff = np.exp(-(dx**2 + dy**2) / (2 * (size * rng.uniform(0.12, 0.25)) ** 2))
        vx += -dy * falloff * spin
        vy += dx * falloff * spin
    flow = smooth_noise(rng, size, 4) * 2 * np.pi  # a gentle background drift between vortices
    vx += np.cos(flow) * 20
    vy += np.sin(flow) * 20
    norm = np.hypot(vx, vy) + 1e-6
    return vx / norm, vy / norm


def line_integral_convolution(noise, vx, vy, length: int) -> np.ndarray:
    size = noise.shape[0]
    y0, x0 = np.mgrid[0:size, 0:size].astype(np.float32)
    total = noise.copy()
    for direction in (1.0, -1.0):
        x, y = x0.copy(), y0.copy()
        for _ in range(length):
            xi = np.clip(x.round().astype(int), 0, size - 1)
            yi = np.clip(y.round().astype(int), 0, size - 1)
            x += direction * vx[yi, xi]
            y += direction * vy[yi, xi]
            xi = np.clip(x.round().astype(int), 0, size - 1)
            yi = np.clip(y.round().astype(int), 0, size - 1)
            total += noise[yi, xi]
    return total / (2 * length + 1)


def main(out: str) -> None:
    rng = np.random.default_rng(SEED)
    vx, vy = vortex_field(rng, SIZE)
    # Coarse noise (dabs a few pixels wide) smeared along the field: brush strokes.
    dabs = np.asarray(Image.fromarray((rng.random((SIZE // 3, SIZE // 3)) * 255).astype(np.uint8))
                      .resize((SIZE, SIZE), Image.NEAREST), np.float32) / 255
    strokes = line_integral_convolution(dabs, vx, vy, STROKE)
    strokes = (strokes - strokes.min()) / (np.ptp(strokes) + 1e-6)
    tone = np.clip(0.65 * smooth_noise(rng, SIZE, 5) + 0.35 * strokes + 0.25 * (strokes - 0.5), 0, 1)
    pos = tone * (len(PALETTE) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(PALETTE) - 2)
    t = (pos - lo)[..., None]
    rgb = PALETTE[lo] * (1 - t) + PALETTE[lo + 1] * t
    rgb *= (0.75 + 0.5 * strokes)[..., None]  # light and shade along each stroke
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(out, quality=92)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "assets/styles/swirls.jpg")
