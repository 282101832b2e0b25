"""A procedurally generated image-classification dataset for the offline demo study.

Each class is one kind of shape or texture (disc, square, …, dots). Every image draws its own
position, scale, aspect, rotation or phase, foreground and background colours, illumination
gradient, pixel noise and (often) a small distractor. Colours are drawn independently of the
class, so the class can only be read from *form*: a small CNN learns it, but neither colour
statistics nor a trivial rule solve it, and noise, soft textures and low-contrast draws keep
accuracy well below 100 %.

Generation uses numpy only, with one local ``numpy.random.Generator`` seeded from ``seed``:
numpy is single-threaded, so the output is bitwise identical for the same arguments however
many threads torch is using. A train and an evaluation set are made with different seeds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from layercrit.data import ImageSet

CLASS_NAMES: list[str] = [
    "disc",
    "square",
    "triangle",
    "ring",
    "cross",
    "horizontal_stripes",
    "vertical_stripes",
    "checkerboard",
    "gradient_blob",
    "dots",
]

_F = np.float32

# Nuisance strengths: they set how hard the task is (tuned so that the demo's small ResNet
# reaches roughly 75–90 % in its short training budget, not 100 %).
MIN_CONTRAST = 0.5  # least RGB distance between foreground and background colour
MAX_LIGHT_GRADIENT = 0.2  # strength of the linear illumination gradient
DISTRACTOR_PROBABILITY = 0.6  # share of images with a small blob of a random colour
NOISE_STD = (0.01, 0.05)  # per-image Gaussian pixel noise, std drawn uniformly from this range


class _Canvas:
    """Pixel-centre coordinates in [-1, 1] for ``n`` images of ``size``×``size``, plus the rng."""

    def __init__(self, rng: np.random.Generator, n: int, size: int) -> None:
        self.rng = rng
        self.n = n
        self.size = size
        self.pix = _F(2.0 / size)  # one pixel in normalized units: anti-aliasing width
        axis = ((np.arange(size, dtype=_F) + _F(0.5)) * self.pix - _F(1.0)).astype(_F)
        self.x = axis[None, None, :]  # (1, 1, W): columns
        self.y = axis[None, :, None]  # (1, H, 1): rows

    def uniform(self, low: float, high: float) -> np.ndarray:
        """One value per image, shaped (n, 1, 1) so it broadcasts over pixels."""
        return self.rng.uniform(low, high, size=(self.n, 1, 1)).astype(_F)

    def object_frame(self, scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local coordinates (u, v) of a randomly placed, scaled, stretched and rotated object.

        Returns u, v (in object units, boundary near radius 1) and the per-image scale that turns
        object units back into normalized image units (for anti-aliasing).
        """
        cx, cy = self.uniform(-0.25, 0.25), self.uniform(-0.25, 0.25)
        s = self.uniform(*scale)
        aspect = np.exp(self.uniform(-0.1, 0.1))
        theta = self.uniform(0.0, 2 * np.pi)
        dx, dy = self.x - cx, self.y - cy
        c, sn = np.cos(theta), np.sin(theta)
        u = (c * dx + sn * dy) / (s * aspect)
        v = (-sn * dx + c * dy) * (aspect / s)
        return u, v, s

    def window(self) -> np.ndarray:
        """A soft rounded-rectangle region covering roughly 40–100 % of the image.

        Textures are confined to it so that "texture fills the frame" is no shortcut to the class.
        """
        cx, cy = self.uniform(-0.3, 0.3), self.uniform(-0.3, 0.3)
        hx, hy = self.uniform(0.5, 1.0), self.uniform(0.5, 1.0)
        ex, ey = np.abs(self.x - cx) / hx, np.abs(self.y - cy) / hy
        d = (ex**4 + ey**4) ** 0.25 - 1.0  # superellipse: distance-like, < 0 inside
        return np.clip(0.5 - d * np.minimum(hx, hy) / (2 * self.pix), 0.0, 1.0)

    def soft(self, sdf: np.ndarray, s: np.ndarray | float) -> np.ndarray:
        """Anti-aliased mask of a signed distance field given in object units (scale ``s``)."""
        return np.clip(_F(0.5) - sdf * s / self.pix, 0.0, 1.0)

    def rotated_texture_coords(self, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates rotated by ``angle`` (texture orientation), in normalized units."""
        c, s = np.cos(angle), np.sin(angle)
        return c * self.x + s * self.y, -s * self.x + c * self.y


# --- class generators: each returns a foreground mask in [0, 1], shape (n, H, W) -----------------
# Shapes use scale ranges chosen so that every shape covers a similar area (a shape's size says
# little about its class).


def _disc(cv: _Canvas) -> np.ndarray:
    u, v, s = cv.object_frame((0.5, 0.8))
    return cv.soft(np.sqrt(u * u + v * v) - 1.0, s)


def _square(cv: _Canvas) -> np.ndarray:
    u, v, s = cv.object_frame((0.5, 0.8))
    return cv.soft(np.maximum(np.abs(u), np.abs(v)) - 0.85, s)


def _triangle(cv: _Canvas) -> np.ndarray:
    u, v, s = cv.object_frame((0.55, 0.9))
    # Equilateral triangle as the intersection of three half-planes (inradius 0.6).
    d = None
    for k in range(3):
        a = np.pi / 2 + 2 * np.pi * k / 3
        dk = np.cos(a) * u + np.sin(a) * v - 0.6
        d = dk if d is None else np.maximum(d, dk)
    return cv.soft(d, s)


def _ring(cv: _Canvas) -> np.ndarray:
    u, v, s = cv.object_frame((0.4, 0.7))
    thickness = cv.uniform(0.18, 0.3)
    return cv.soft(np.abs(np.sqrt(u * u + v * v) - 0.75) - thickness, s)


def _cross(cv: _Canvas) -> np.ndarray:
    u, v, s = cv.object_frame((0.4, 0.75))
    half_width = cv.uniform(0.2, 0.32)
    au, av = np.abs(u), np.abs(v)
    bar1 = np.maximum(au - 0.95, av - half_width)
    bar2 = np.maximum(au - half_width, av - 0.95)
    return cv.soft(np.minimum(bar1, bar2), s)


def _stripes(cv: _Canvas, base_angle: float) -> np.ndarray:
    # Orientation within ±20° of the base, so horizontal and vertical stripes stay distinct.
    angle = base_angle + cv.uniform(-0.35, 0.35)
    w, _ = cv.rotated_texture_coords(angle)
    period = cv.uniform(4.0, 9.0) * cv.pix
    phase = cv.uniform(0.0, 2 * np.pi)
    wave = np.sin(2 * np.pi * w / period + phase)
    return np.clip(0.5 + 1.5 * wave, 0.0, 1.0) * cv.window()


def _horizontal_stripes(cv: _Canvas) -> np.ndarray:
    return _stripes(cv, np.pi / 2)  # intensity varies along y: horizontal bands


def _vertical_stripes(cv: _Canvas) -> np.ndarray:
    return _stripes(cv, 0.0)


def _checkerboard(cv: _Canvas) -> np.ndarray:
    a, b = cv.rotated_texture_coords(cv.uniform(0.0, np.pi / 2))
    cell = cv.uniform(3.0, 6.0) * cv.pix
    pa, pb = cv.uniform(0.0, 2 * np.pi), cv.uniform(0.0, 2 * np.pi)
    wave = np.sin(np.pi * a / cell + pa) * np.sin(np.pi * b / cell + pb)
    return np.clip(0.5 + 2.0 * wave, 0.0, 1.0) * cv.window()


def _gradient_blob(cv: _Canvas) -> np.ndarray:
    u, v, _ = cv.object_frame((0.4, 0.7))
    # A soft Gaussian: the same footprint as a disc, told apart only by its edge profile.
    return np.exp(-1.5 * (u * u + v * v)).astype(_F)


def _dots(cv: _Canvas) -> np.ndarray:
    a, b = cv.rotated_texture_coords(cv.uniform(0.0, np.pi / 2))
    period = cv.uniform(5.0, 8.0) * cv.pix
    fa = (a / period + cv.uniform(0.0, 1.0)) % 1.0 - 0.5
    fb = (b / period + cv.uniform(0.0, 1.0)) % 1.0 - 0.5
    radius = cv.uniform(0.22, 0.32)
    d = np.sqrt(fa * fa + fb * fb) - radius  # in lattice units
    return cv.soft(d, period) * cv.window()


_GENERATORS: list[Callable[[_Canvas], np.ndarray]] = [
    _disc,
    _square,
    _triangle,
    _ring,
    _cross,
    _horizontal_stripes,
    _vertical_stripes,
    _checkerboard,
    _gradient_blob,
    _dots,
]
assert len(_GENERATORS) == len(CLASS_NAMES)


def _colour_pairs(rng: np.random.Generator, n: int, min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB colours, uniform in the cube, at least ``min_distance`` apart.

    Both are drawn independently of the class (and symmetrically), so per-image colour statistics
    carry (almost) no class information. Rejection sampling, vectorized over the images.
    """
    fg = rng.uniform(0.0, 1.0, size=(n, 3)).astype(_F)
    bg = rng.uniform(0.0, 1.0, size=(n, 3)).astype(_F)
    bad = np.linalg.norm(fg - bg, axis=1) < min_distance
    while bad.any():
        k = int(bad.sum())
        fg[bad] = rng.uniform(0.0, 1.0, size=(k, 3))
        bg[bad] = rng.uniform(0.0, 1.0, size=(k, 3))
        bad = np.linalg.norm(fg - bg, axis=1) < min_distance
    return fg, bg


def make_synthetic_images(seed: int, n_images: int, n_classes: int = 10, image_size: int = 32) -> ImageSet:
    """Generate ``n_images`` labelled images (uint8, N×3×S×S) from ``n_classes`` shape/texture classes.

    Deterministic in its arguments. Labels are balanced (counts differ by at most one) and in a
    seeded random order. Different seeds give independent sets (use e.g. seed and seed + 1 for
    train and evaluation).
    """
    if not 1 <= n_classes <= len(_GENERATORS):
        raise ValueError(
            f"n_classes must be between 1 and {len(_GENERATORS)} (classes: {', '.join(CLASS_NAMES)}), got {n_classes}"
        )
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n_images) % n_classes).astype(np.int64)
    size = image_size

    # Foreground masks, one class at a time (each class vectorized over its images).
    mask = np.empty((n_images, size, size), dtype=_F)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if idx.size:
            mask[idx] = _GENERATORS[c](_Canvas(rng, idx.size, size))

    # Per-image appearance parameters, all drawn up front (the draw order fixes the output).
    cv = _Canvas(rng, n_images, size)
    fg, bg = _colour_pairs(rng, n_images, min_distance=MIN_CONTRAST)
    # Illumination: a linear gradient of random direction and strength over the whole image.
    direction = cv.uniform(0.0, 2 * np.pi)
    light = cv.uniform(0.0, MAX_LIGHT_GRADIENT) * (np.cos(direction) * cv.x + np.sin(direction) * cv.y)
    # Distractor on ~60 % of images: a small blob of a random colour (too small to be a shape).
    has = (rng.uniform(size=(n_images, 1, 1)) < DISTRACTOR_PROBABILITY).astype(_F)
    dcx, dcy = cv.uniform(-0.85, 0.85), cv.uniform(-0.85, 0.85)
    dr = cv.uniform(0.08, 0.18)
    dist = np.sqrt((cv.x - dcx) ** 2 + (cv.y - dcy) ** 2) - dr
    dmask = np.clip(0.5 - dist / cv.pix, 0.0, 1.0) * has
    dcol = rng.uniform(0.0, 1.0, size=(n_images, 3, 1, 1)).astype(_F)
    sigma = rng.uniform(*NOISE_STD, size=(n_images, 1, 1, 1)).astype(_F)

    # Compose in chunks: cache-sized temporaries are several times faster than whole-set ones.
    images = np.empty((n_images, 3, size, size), dtype=np.uint8)
    chunk = max(1, 2**18 // (size * size))
    for a in range(0, n_images, chunk):
        b = min(a + chunk, n_images)
        m = mask[a:b, None]  # (k, 1, H, W)
        img = bg[a:b, :, None, None] + (fg - bg)[a:b, :, None, None] * m
        img += light[a:b, None]
        dm = dmask[a:b, None]
        img += (dcol[a:b] - img) * dm
        img += sigma[a:b] * rng.standard_normal(size=img.shape, dtype=_F)  # pixel noise
        np.clip(img, 0.0, 1.0, out=img)
        img *= 255.0
        img += 0.5  # round half up on the cast below
        images[a:b] = img.astype(np.uint8)

    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels))
