"""Edge and orientation maps for EdgeBoxes.

EdgeBoxes chains edge pixels of similar orientation into groups and scores a box by the groups it wholly
encloses, so it wants thin edges (one pixel across) with magnitudes in [0, 1], and per pixel the direction
normal to the edge, mod π. The official code takes both from OpenCV's structured edge detector (SED); its
model (`model.yml.gz`) is licensed for non-commercial use only, so it is never shipped or downloaded: pass
its path to use it. Without it the maps come from image gradients, computed here in one of two ways that
differ only in the orientation (benchmarks/proposals_speed.py measures both).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

EdgeMap = Literal["gradient", "structure_tensor"]
EDGE_MAPS: tuple[EdgeMap, ...] = ("gradient", "structure_tensor")
SMOOTHING_SIGMA = 2.0  # pixels; vs 1.0 on the synthetic set: equal recall at IoU 0.5, more at 0.7
TENSOR_SIGMA = 1.5  # pixels over which the structure tensor averages orientations
# Gradient (intensity in [0, 1] per pixel) below which an image has no edges: JPEG noise on a flat image
# reaches about 0.007 after smoothing, the synthetic objects' boundaries 0.07 and more. Without this floor,
# normalising by the maximum would turn the noise of a blank image into edges.
MIN_EDGE_CONTRAST = 0.02
NMS_MARGIN = 1.01  # a pixel survives thinning unless a neighbour across the edge beats it by 1 % (as SED's NMS)


def channel_gradients(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel x and y derivatives of the smoothed image, in intensity ([0, 1]) per pixel; [H, W, C] each."""
    smooth = cv2.GaussianBlur(image.astype(np.float32) / 255.0, (0, 0), sigma)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0) / 8.0  # the Sobel kernel's weights sum to 8 across its two sides
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1) / 8.0
    return gx.reshape(*image.shape[:2], -1), gy.reshape(*image.shape[:2], -1)


def strongest_channel(gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Magnitude and derivatives of the channel whose gradient is largest at each pixel (colour edges count)."""
    squared = gx**2 + gy**2
    best = squared.argmax(axis=2)[..., None]
    magnitude = np.sqrt(np.take_along_axis(squared, best, axis=2)[..., 0])
    return magnitude, np.take_along_axis(gx, best, axis=2)[..., 0], np.take_along_axis(gy, best, axis=2)[..., 0]


def tensor_orientation(gx: np.ndarray, gy: np.ndarray, sigma: float) -> np.ndarray:
    """Dominant gradient direction of the colour structure tensor (summed over channels, then smoothed).

    Averaging gradients themselves cancels across a thin line, whose two sides point opposite ways; the tensor
    averages doubled angles, where opposite directions agree.
    """
    jxx = cv2.GaussianBlur((gx * gx).sum(axis=2), (0, 0), sigma)
    jyy = cv2.GaussianBlur((gy * gy).sum(axis=2), (0, 0), sigma)
    jxy = cv2.GaussianBlur((gx * gy).sum(axis=2), (0, 0), sigma)
    return 0.5 * np.arctan2(2 * jxy, jxx - jyy)


def thin(magnitude: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Non-maximum suppression across the edge: keep a pixel only if neither neighbour along the normal beats it."""
    h, w = magnitude.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    dx, dy = np.cos(orientation).astype(np.float32), np.sin(orientation).astype(np.float32)
    keep = np.ones(magnitude.shape, dtype=bool)
    for step in (1.0, -1.0):
        neighbour = cv2.remap(
            magnitude, xs + step * dx, ys + step * dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        keep &= magnitude * NMS_MARGIN >= neighbour
    return np.where(keep, magnitude, 0.0).astype(np.float32)


def gradient_edges(image: np.ndarray, edge_map: EdgeMap) -> tuple[np.ndarray, np.ndarray]:
    """Thin edges in [0, 1] and their normal direction mod π, both float32 [H, W], from an RGB uint8 image.

    'gradient': the direction of the strongest channel's gradient; 'structure_tensor': see tensor_orientation.
    """
    gx, gy = channel_gradients(image, SMOOTHING_SIGMA)
    magnitude, gx_max, gy_max = strongest_channel(gx, gy)
    if edge_map == "gradient":
        orientation = np.arctan2(gy_max, gx_max)
    elif edge_map == "structure_tensor":
        orientation = tensor_orientation(gx, gy, TENSOR_SIGMA)
    else:
        raise ValueError(f"edge_map = {edge_map!r}: expected one of {', '.join(EDGE_MAPS)}")
    orientation = np.mod(orientation, np.pi).astype(np.float32)
    magnitude = (magnitude / max(float(magnitude.max()), MIN_EDGE_CONTRAST)).astype(np.float32)
    return thin(magnitude, orientation), orientation


@functools.lru_cache(maxsize=1)
def structured_edge_detector(model: str) -> cv2.ximgproc.StructuredEdgeDetection:
    """OpenCV's SED, loaded once per process (the model takes a while to parse)."""
    if not Path(model).is_file():
        raise FileNotFoundError(f"{model}: SED model not found (OpenCV's model.yml.gz; it is never downloaded)")
    return cv2.ximgproc.createStructuredEdgeDetection(model)


def sed_edges(image: np.ndarray, model: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The official pipeline's maps: SED edges → orientation → edge NMS, from an RGB uint8 image."""
    sed = structured_edge_detector(str(model))
    edges = sed.detectEdges(image.astype(np.float32) / 255.0)
    orientation = sed.computeOrientation(edges)
    return sed.edgesNms(edges, orientation), orientation
