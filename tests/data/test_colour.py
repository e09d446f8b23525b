"""The vectorised colour augmentation against torchvision's functional ops: each image its own parameters,
deterministic with a seeded generator."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from siamdetr.data.colour import (
    ColourConfig,
    ColourParams,
    batched_colour_augment,
    blur_kernel_size,
    colour_augment,
    sample_colour_params,
)

EXAMPLES = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def crops(n: int = 6, size: int = 32, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def torchvision_colour(image: Tensor, params: ColourParams, i: int, blur_size: int) -> Tensor:
    """Image i through torchvision's own functional ops: the reference for `colour_augment`."""
    image = TF.adjust_brightness(image, float(params.brightness[i]))
    image = TF.adjust_contrast(image, float(params.contrast[i]))
    image = TF.adjust_saturation(image, float(params.saturation[i]))
    image = TF.adjust_hue(image, float(params.hue[i]))
    if params.grayscale[i]:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if params.sigma[i] > 0:
        image = TF.gaussian_blur(image, [blur_size] * 2, [float(params.sigma[i])] * 2)
    return image


@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(8, 48), st.sampled_from([3, 5, 7]))
def test_colour_augment_matches_torchvision_functional_ops(seed: int, size: int, blur_size: int) -> None:
    x = crops(8, size, seed)
    params = sample_colour_params(8, ColourConfig(jitter_p=0.9, grayscale_p=0.3), torch.Generator().manual_seed(seed))
    expected = torch.stack([torchvision_colour(x[i], params, i, blur_size) for i in range(8)])
    assert torch.allclose(colour_augment(x, params, blur_size), expected, atol=1e-4)


def test_blur_kernel_is_a_tenth_of_the_side_but_no_wider_than_three_sigma() -> None:
    assert blur_kernel_size(224, 10.0) == 23
    assert blur_kernel_size(224, 2.0) == blur_kernel_size(128, 2.0) == 13
    assert blur_kernel_size(40, 2.0) == 5 and blur_kernel_size(10, 2.0) == 3


def test_batched_colour_augment_keeps_shape_and_range() -> None:
    out = batched_colour_augment(crops(), torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6


def test_identical_crops_get_different_augmentations() -> None:
    same = crops(1).expand(6, -1, -1, -1)
    out = batched_colour_augment(same, torch.Generator().manual_seed(0), ColourConfig(jitter_p=1.0))
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))


def test_batched_colour_augment_is_deterministic_with_a_seeded_generator() -> None:
    a = batched_colour_augment(crops(), torch.Generator().manual_seed(7))
    b = batched_colour_augment(crops(), torch.Generator().manual_seed(7))
    c = batched_colour_augment(crops(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batched_colour_augment_with_every_step_off_returns_the_input() -> None:
    x = crops()
    off = ColourConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    assert torch.allclose(batched_colour_augment(x, torch.Generator().manual_seed(0), off), x, atol=1e-6)


def test_hue_shift_by_a_third_turn_cycles_the_primaries() -> None:
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1
    params = ColourParams(*(torch.ones(1),) * 3, torch.tensor([1 / 3]), torch.tensor([False]), torch.zeros(1))
    green = colour_augment(red, params, 3)
    assert torch.allclose(green, red.roll(1, dims=1), atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_batched_colour_augment_runs_on_the_crops_device_with_a_cpu_generator() -> None:
    x = crops()
    on_gpu = batched_colour_augment(x.cuda(), torch.Generator().manual_seed(3))
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), batched_colour_augment(x, torch.Generator().manual_seed(3)), atol=1e-4)
