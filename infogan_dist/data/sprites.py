"""Procedural dSprites: the factor grid of DeepMind's dSprites (Matthey et al. 2017)
drawn by this project's own rasteriser. DeepMind never published the code that drew
theirs, so these are "procedural dSprites": the same factors and values, not the same
pixels (docs/disentanglement.md).

    shape        3   square, ellipse, heart
    scale        6   linearly spaced in [0.5, 1]
    orientation  40  linearly spaced in [0, 2 pi] (both ends: the first and the last
                     orientation draw the same image, as in dSprites)
    pos_x, pos_y 32  linearly spaced in [0, 1]: the sprite's centre moves from the left
                     (top) to the right (bottom) margin of the image

Images are binary (0 or 255), size x size pixels (64 by default), one channel. A pixel
is on when its centre lies inside the sprite: no anti-aliasing, so the result is a
deterministic function of the factor values. A grid with fewer values per factor
(`sizes`) spreads them over the same ranges (tests use small ones).
"""

from __future__ import annotations

import math

import numpy as np

NAMES = ["shape", "scale", "orientation", "pos_x", "pos_y"]
SIZES = [3, 6, 40, 32, 32]
SHAPES = ["square", "ellipse", "heart"]
RADIUS = 0.18  # the circle a sprite of scale 1 fits in, as a fraction of the image side
MARGIN = RADIUS  # centres stay this far from the border, so no sprite is cut off
# The heart (x^2 + y^2 - 1)^3 <= x^2 y^3 spans x in [-1.14, 1.14], y in [-1, 1.24];
# moved to centre its height (its farthest point is then 1.337 from the centre) and
# shrunk to fit the unit circle.
HEART_SHIFT, HEART_SCALE = 0.118, 1.34


def factor_values(sizes: list[int] = SIZES) -> list[list[float]]:
    """The value of each class of each factor (shape: 0, 1, 2 for the shape index)."""
    shape, scale, orientation, pos_x, pos_y = sizes
    if not 1 <= shape <= len(SHAPES):
        raise ValueError(f"the shape factor takes 1 to {len(SHAPES)} values, got {shape}")
    return [list(map(float, range(shape))), np.linspace(0.5, 1.0, scale).tolist(),
            np.linspace(0.0, 2 * math.pi, orientation).tolist(),
            np.linspace(0.0, 1.0, pos_x).tolist(), np.linspace(0.0, 1.0, pos_y).tolist()]


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u right, v up) in the sprite's own unit frame are inside it."""
    if shape == 0:  # square, corners on the unit circle
        return np.maximum(np.abs(u), np.abs(v)) <= 0.70
    if shape == 1:  # ellipse, 2:1
        return (u / 0.95) ** 2 + (v / 0.48) ** 2 <= 1.0
    x, y = u * HEART_SCALE, v * HEART_SCALE + HEART_SHIFT
    return (x * x + y * y - 1.0) ** 3 <= x * x * y ** 3


def render(shape: int, scale: float, angle: float, xs: np.ndarray, ys: np.ndarray,
           size: int) -> np.ndarray:
    """bool [len(xs), len(ys), size, size]: the sprite at every centre (x in xs, y in ys;
    fractions of the image side, y downwards), turned `angle` radians anticlockwise."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    r = RADIUS * scale
    dx = (centres[None, :] - np.asarray(xs)[:, None]) / r  # [X, col]
    dy = -(centres[None, :] - np.asarray(ys)[:, None]) / r  # [Y, row], upwards
    c, s = math.cos(angle), math.sin(angle)
    dx4, dy4 = dx[:, None, None, :], dy[None, :, :, None]
    return _inside(shape, dx4 * c + dy4 * s, -dx4 * s + dy4 * c)


def generate(sizes: list[int] = SIZES, image_size: int = 64
             ) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    """(images uint8 [N, 1, size, size] of 0/255, factor classes int16 [N, 5], values):
    every combination once, in mixed-radix order (pos_y fastest, as dSprites)."""
    if len(sizes) != len(NAMES) or min(sizes) < 1:
        raise ValueError(f"--factor-sizes needs {len(NAMES)} counts >= 1 ({', '.join(NAMES)}), "
                         f"got {sizes}")
    if image_size < 8:
        raise ValueError(f"--size must be >= 8 pixels for sprites, got {image_size}")
    values = factor_values(sizes)
    n_shape, n_scale, n_angle, n_x, n_y = sizes
    positions = [MARGIN + np.asarray(v) * (1 - 2 * MARGIN) for v in values[3:]]
    images = np.empty((n_shape, n_scale, n_angle, n_x, n_y, image_size, image_size), np.uint8)
    for a in range(n_shape):
        for b, scale in enumerate(values[1]):
            for o, angle in enumerate(values[2]):
                block = render(a, scale, angle, positions[0], positions[1], image_size)
                images[a, b, o] = block.astype(np.uint8) * 255
    grid = np.indices(sizes, dtype=np.int16).reshape(len(sizes), -1).T
    return images.reshape(-1, 1, image_size, image_size), grid, values
