"""Drawing primitives for the synthetic datasets: shape masks, textures and cluttered backgrounds.

Everything takes a numpy Generator so an image is a pure function of its seed. Classes are shapes; colour
and texture are drawn independently of the class, so a detector has to learn shape, not colour.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SUBPIXEL_BITS = 4  # cv2 drawing with 1/16 px precision keeps small shapes recognisable
_SCALE = 1 << SUBPIXEL_BITS


def _regular(n: int, inner: float | None = None, phase: float = -np.pi / 2) -> np.ndarray:
    """A regular n-gon (or a star when `inner` is given) on the unit circle."""
    k = 2 * n if inner else n
    t = phase + np.arange(k) * 2 * np.pi / k
    r = np.ones(k) if not inner else np.where(np.arange(k) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    return (pts - pts.mean(0)) / np.abs(pts).max()


POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float),
    "triangle": np.array([[0, -1], [1, 1], [-1, 1]], float),
    "star": _regular(5, inner=0.42),
    "cross": np.array(
        [
            [-0.33, -1],
            [0.33, -1],
            [0.33, -0.33],
            [1, -0.33],
            [1, 0.33],
            [0.33, 0.33],
            [0.33, 1],
            [-0.33, 1],
            [-0.33, 0.33],
            [-1, 0.33],
            [-1, -0.33],
            [-0.33, -0.33],
        ],
        float,
    ),
    "hexagon": _regular(6, phase=0.0),
    "heart": _heart(),
    "diamond": np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], float),
    "pentagon": _regular(5),
    "arrow": np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]], float),
    "trapezoid": np.array([[-0.45, -0.8], [0.45, -0.8], [1, 0.8], [-1, 0.8]], float),
}


def _fill_polygon(mask: np.ndarray, unit: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float) -> None:
    c, s = np.cos(angle), np.sin(angle)
    x, y = unit[:, 0] * rx, unit[:, 1] * ry
    pts = np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)
    cv2.fillPoly(mask, [np.round(pts * _SCALE).astype(np.int32)], 1, cv2.LINE_8, SUBPIXEL_BITS)


def _fill_ellipse(mask: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float, value: int = 1) -> None:
    centre = (int(round(cx * _SCALE)), int(round(cy * _SCALE)))
    axes = (max(1, int(round(rx * _SCALE))), max(1, int(round(ry * _SCALE))))
    cv2.ellipse(mask, centre, axes, float(np.degrees(angle)), 0, 360, value, -1, 8, SUBPIXEL_BITS)


def _ring(mask: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float) -> None:
    _fill_ellipse(mask, cx, cy, rx, ry, angle)
    _fill_ellipse(mask, cx, cy, 0.5 * rx, 0.5 * ry, angle, value=0)


def _crescent(mask: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float) -> None:
    _fill_ellipse(mask, cx, cy, rx, ry, angle)
    dx, dy = 0.45 * rx * np.cos(angle), 0.45 * rx * np.sin(angle)
    _fill_ellipse(mask, cx + dx, cy + dy, 0.85 * rx, 0.85 * ry, angle, value=0)


def _ellipse(mask: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float) -> None:
    _fill_ellipse(mask, cx, cy, rx, 0.5 * ry, angle)  # elongated, so it is not a circle


ShapeFn = Callable[[np.ndarray, float, float, float, float, float], None]
SHAPES: dict[str, ShapeFn] = {
    "circle": _fill_ellipse,
    "ring": _ring,
    "crescent": _crescent,
    "ellipse": _ellipse,
    **{
        name: (lambda m, cx, cy, rx, ry, a, u=unit: _fill_polygon(m, u, cx, cy, rx, ry, a))
        for name, unit in POLYGONS.items()
    },
}


def shape_mask(
    name: str, height: int, width: int, cx: float, cy: float, rx: float, ry: float, angle: float
) -> np.ndarray:
    """A binary uint8 mask of one shape, clipped to the canvas."""
    mask = np.zeros((height, width), np.uint8)
    SHAPES[name](mask, cx, cy, rx, ry, angle)
    return mask


# ----------------------------------------------------------------------------------------------- colour
HUE_SPREAD = 8  # OpenCV hue units (2 degrees each) either side of a class's hue


def random_colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    """A saturated RGB colour of any hue, or of `hue` ± HUE_SPREAD (OpenCV's 0-180 hue scale); both draw the
    same random numbers, so a scene with and without class hues differs only in the hues."""
    h, s, v = rng.integers(0, 180), rng.integers(90, 256), rng.integers(70, 256)
    if hue is not None:
        h = int(hue + h % (2 * HUE_SPREAD + 1) - HUE_SPREAD) % 180
    hsv = np.array([[[h, s, v]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def contrasting_colour(
    rng: np.random.Generator, against: np.ndarray, min_dist: float = 80.0, hue: float | None = None
) -> np.ndarray:
    """A colour at least `min_dist` (L1 over RGB) from `against`, so objects are visible but not trivial."""
    colour = random_colour(rng, hue)
    for _ in range(8):
        if np.abs(colour - against).sum() >= min_dist:
            break
        colour = random_colour(rng, hue)
    return colour


TEXTURES = 5  # solid, stripes, checker, dots, gradient


def texture(rng: np.random.Generator, height: int, width: int, base: np.ndarray, kind: int | None = None) -> np.ndarray:
    """A float32 HxWx3 fill: solid, stripes, checker, dots or gradient (random, or `kind`), in two related
    colours."""
    other = np.clip(base + rng.uniform(-90, 90, 3), 0, 255).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    drawn = rng.integers(TEXTURES)
    kind = drawn if kind is None else kind
    if kind == 0:
        weight = np.zeros((height, width), np.float32)
    elif kind == 1:
        theta, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        weight = (np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == 2:
        cell = rng.uniform(2, 6)
        weight = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    elif kind == 3:
        cell = rng.uniform(3, 7)
        fx, fy = (xx % cell) - cell / 2, (yy % cell) - cell / 2
        weight = (fx**2 + fy**2 < (cell / 3.5) ** 2).astype(np.float32)
    else:
        theta = rng.uniform(0, 2 * np.pi)
        ramp = xx * np.cos(theta) + yy * np.sin(theta)
        weight = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    fill = base[None, None] * (1 - weight[..., None]) + other[None, None] * weight[..., None]
    return fill + rng.normal(0, 6, (height, width, 3)).astype(np.float32)


def _desaturate(colour: np.ndarray, saturation: float) -> np.ndarray:
    grey = colour.mean()
    return grey + saturation * (colour - grey)


def _scaled(count: int, clutter: float) -> int:
    return int(round(count * clutter))


def background(
    rng: np.random.Generator, height: int, width: int, clutter: float = 1.0, saturation: float = 1.0
) -> np.ndarray:
    """A cluttered float32 background: gradient, low-frequency blotches, and lines, curves and outlines
    whose edges are not objects, so proposal methods have something to get wrong. `clutter` in [0, 1]
    scales the blotches and the number of lines, curves and outlines (0: the gradient alone); `saturation`
    moves the gradient's two colours towards grey of the same brightness (1: unchanged). The random draws
    are the same for any value, so clutter 1 and saturation 1 give the original image."""
    c0, c1 = (_desaturate(random_colour(rng) * 0.8, saturation) for _ in range(2))
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xx * np.cos(theta) + yy * np.sin(theta)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    img = c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None]
    blotches = rng.normal(0, 28, (4, 4, 3)).astype(np.float32)
    img += clutter * cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(np.clip(img, 0, 255))
    scale = max(height, width) / 128
    for _ in range(_scaled(rng.integers(3, 9), clutter)):  # straight lines
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(img, p0, p1, random_colour(rng).tolist(), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(_scaled(rng.integers(1, 4), clutter)):  # wandering curves
        steps = rng.normal(0, 6 * scale, (12, 2)).cumsum(0)
        pts = (steps + [rng.uniform(0, width), rng.uniform(0, height)]).astype(np.int32)
        cv2.polylines(img, [pts], False, random_colour(rng).tolist(), 1, cv2.LINE_AA)
    for _ in range(_scaled(rng.integers(0, 3), clutter)):  # empty outlines: box-like edges with nothing inside
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(4, width // 2 + 5)), int(rng.integers(4, height // 2 + 5))
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), random_colour(rng).tolist(), 1)
    return img
