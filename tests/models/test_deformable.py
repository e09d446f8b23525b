from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from siamdetr.models.deformable import (
    DeformableTransformer,
    MSDeformAttn,
    at_levels,
    encoder_reference_points,
    initial_sampling_offsets,
    ms_deform_attn_core,
)
from siamdetr.models.memory import Memory

D, HEADS, POINTS = 32, 2, 2


def level_layout(shapes: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    return spatial_shapes, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def naive_deform_attn(value: Tensor, shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """Explicit bilinear interpolation, one sample at a time; pixel (i, j) has its centre at ((j+.5)/W, (i+.5)/H)."""
    b, _, heads, d_head = value.shape
    _, lq, _, _, points, _ = locations.shape
    out = torch.zeros(b, lq, heads, d_head, dtype=value.dtype)
    start = 0
    for level, (h, w) in enumerate(shapes):
        grid = value[:, start : start + h * w].reshape(b, h, w, heads, d_head)
        start += h * w
        for n, q, m, p in itertools.product(range(b), range(lq), range(heads), range(points)):
            x = locations[n, q, m, level, p, 0].item() * w - 0.5
            y = locations[n, q, m, level, p, 1].item() * h - 0.5
            x0, y0 = math.floor(x), math.floor(y)
            sample = torch.zeros(d_head, dtype=value.dtype)
            for xi, yi in itertools.product((x0, x0 + 1), (y0, y0 + 1)):
                if 0 <= xi < w and 0 <= yi < h:
                    sample += (1 - abs(x - xi)) * (1 - abs(y - yi)) * grid[n, yi, xi, m]
            out[n, q, m] += weights[n, q, m, level, p] * sample
    return out.flatten(2)


def random_inputs(shapes: list[tuple[int, int]], b: int = 2, lq: int = 3, d_head: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, HEADS, d_head, generator=g, dtype=torch.float64)
    # a little outside [0, 1] too: offsets push samples off the map, where zeros are read
    locations = torch.rand(b, lq, HEADS, len(shapes), POINTS, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(b, lq, HEADS, len(shapes), POINTS, generator=g, dtype=torch.float64)
    return value, locations, weights


@pytest.mark.parametrize(("shapes", "seed"), [([(3, 4), (2, 2)], 0), ([(5, 3)], 1), ([(4, 4), (2, 3), (1, 1)], 2)])
def test_core_matches_naive_bilinear(shapes, seed):
    value, locations, weights = random_inputs(shapes, seed=seed)
    spatial_shapes, starts = level_layout(shapes)
    out = ms_deform_attn_core(value, spatial_shapes, starts, locations, weights)
    torch.testing.assert_close(out, naive_deform_attn(value, shapes, locations, weights), atol=1e-5, rtol=0)


def test_core_reads_pixel_centre_exactly():
    shapes = [(3, 4), (2, 2)]
    value, locations, weights = random_inputs(shapes, b=1, lq=1)
    spatial_shapes, starts = level_layout(shapes)
    row, col = 1, 2
    locations[..., 0] = (col + 0.5) / 4
    locations[..., 1] = (row + 0.5) / 3
    weights.zero_()
    weights[0, 0, :, 0, 0] = 1.0  # every head reads only point 0 of level 0
    out = ms_deform_attn_core(value, spatial_shapes, starts, locations, weights)
    torch.testing.assert_close(out[0, 0], value[0, row * 4 + col].flatten(), atol=1e-12, rtol=0)


def test_core_gradients_reach_all_inputs():
    shapes = [(3, 4), (2, 2)]
    value, locations, weights = random_inputs(shapes, b=1, lq=2, d_head=2)
    locations = locations.clamp(0.05, 0.95)  # away from the map border, so the check stays well inside one cell
    spatial_shapes, starts = level_layout(shapes)
    inputs = tuple(t.clone().requires_grad_() for t in (value, locations, weights))
    assert torch.autograd.gradcheck(lambda v, loc, w: ms_deform_attn_core(v, spatial_shapes, starts, loc, w), inputs)


def test_initial_offsets_spread_heads_and_grow_with_point_index():
    offsets = initial_sampling_offsets(8, 3, 4).view(8, 3, 4, 2)
    reach = offsets.abs().amax(-1)  # distance on the unit square
    torch.testing.assert_close(reach, torch.arange(1.0, 5.0).expand(8, 3, 4))
    assert torch.unique(offsets[:, 0, 0], dim=0).shape[0] == 8


def test_msdeformattn_offsets_are_pixels_of_their_level():
    spatial_shapes, starts = level_layout([(3, 4)])
    attn = MSDeformAttn(4, n_levels=1, n_heads=1, n_points=1).double()
    for proj in (attn.value_proj, attn.output_proj):
        torch.nn.init.eye_(proj.weight)
    with torch.no_grad():
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 1.0]))  # one pixel right and one down
    inputs = torch.randn(1, 12, 4, dtype=torch.float64)
    ref = torch.tensor([[[[1.5 / 4, 0.5 / 3]]]], dtype=torch.float64)  # centre of pixel (row 0, col 1)
    out = attn(torch.zeros(1, 1, 4, dtype=torch.float64), ref, inputs, spatial_shapes, starts)
    torch.testing.assert_close(out[0, 0], inputs[0, 1 * 4 + 2])


def test_msdeformattn_never_reads_padded_tokens():
    shapes = [(3, 4), (2, 2)]
    spatial_shapes, starts = level_layout(shapes)
    attn = MSDeformAttn(D, n_levels=2, n_heads=HEADS, n_points=POINTS).double()
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=1.0)  # offsets that depend on the query
    query = torch.randn(2, 5, D, dtype=torch.float64)
    ref = torch.rand(2, 5, 2, 2, dtype=torch.float64)
    inputs = torch.randn(2, 16, D, dtype=torch.float64)
    mask = torch.rand(2, 16) < 0.5
    changed = inputs.masked_fill(mask[..., None], 1e3)
    out = attn(query, ref, inputs, spatial_shapes, starts, mask)
    torch.testing.assert_close(attn(query, ref, changed, spatial_shapes, starts, mask), out)


def test_encoder_reference_points_are_pixel_centres_of_the_image():
    spatial_shapes, _ = level_layout([(2, 4), (1, 2)])
    ratios = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.5, 1.0], [0.5, 1.0]]])
    points = encoder_reference_points(spatial_shapes, ratios)
    torch.testing.assert_close(points[0, :4, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    torch.testing.assert_close(points[0, [0, 4], 1], torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(points[1, :2, 0], torch.tensor([0.25, 0.75]))  # the image is 2 of 4 columns
    # scaled back to each padded map, image 1's first token is the same pixel centre at level 0
    torch.testing.assert_close(at_levels(points, ratios)[1, 0, 0], torch.tensor([0.125, 0.25]))


def padded_batch(shapes: list[tuple[int, int]], b: int = 2, seed: int = 0):
    """srcs, masks, pos for a batch whose image 1 covers only the top-left part of every level."""
    g = torch.Generator().manual_seed(seed)
    srcs, masks, pos = [], [], []
    for h, w in shapes:
        srcs.append(torch.randn(b, D, h, w, generator=g, dtype=torch.float64))
        pos.append(torch.randn(b, D, h, w, generator=g, dtype=torch.float64))
        mask = torch.zeros(b, h, w, dtype=torch.bool)
        mask[1, math.ceil(h * 0.6) :] = True
        mask[1, :, math.ceil(w * 0.5) :] = True
        masks.append(mask)
    return srcs, masks, pos


def small_transformer(n_levels: int) -> DeformableTransformer:
    torch.manual_seed(0)
    model = DeformableTransformer(D, HEADS, 2, 2, 64, dropout=0.1, n_levels=n_levels, n_points=POINTS)
    return model.double().eval()


def per_image_queries(b: int = 2, q: int = 5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, q, D, generator=g, dtype=torch.float64), torch.randn(
        b, q, D, generator=g, dtype=torch.float64
    )


def image(memory: Memory, i: int) -> Memory:
    return Memory(
        memory.tokens[i : i + 1],
        memory.mask[i : i + 1],
        memory.pos[i : i + 1],
        memory.spatial_shapes,
        memory.level_start_index,
        memory.valid_ratios[i : i + 1],
    )


@pytest.mark.parametrize("shapes", [[(6, 5)], [(6, 6), (3, 3), (2, 2)]])
def test_encode_decode_shapes(shapes):
    model = small_transformer(len(shapes))
    memory = model.encode(*padded_batch(shapes))
    s = sum(h * w for h, w in shapes)
    assert memory.tokens.shape == memory.pos.shape == (2, s, D)
    assert memory.mask.shape == (2, s)
    assert memory.valid_ratios.shape == (2, len(shapes), 2)
    hs, refs = model.decode(memory, *per_image_queries())
    assert hs.shape == (2, 2, 5, D)
    assert refs.shape == (2, 2, 5, 2)
    assert ((refs > 0) & (refs < 1)).all()
    torch.testing.assert_close(refs[0], refs[1])  # no refinement: every layer keeps the initial points


def test_memory_pos_carries_the_level_embedding():
    shapes = [(4, 4), (2, 2)]
    model = small_transformer(2)
    srcs, masks, pos = padded_batch(shapes)
    memory = model.encode(srcs, masks, pos)
    torch.testing.assert_close(memory.pos[:, 16:], pos[1].flatten(2).transpose(1, 2) + model.level_embed[1])


def test_encode_rejects_wrong_number_of_levels():
    model = small_transformer(3)
    with pytest.raises(ValueError, match="3 feature levels"):
        model.encode(*padded_batch([(4, 4), (2, 2)]))


def test_padded_features_change_no_output():
    shapes = [(6, 6), (3, 3)]
    model = small_transformer(2)
    srcs, masks, pos = padded_batch(shapes)
    memory = model.encode(srcs, masks, pos)
    changed = [s.masked_fill(m[:, None], 1e3) for s, m in zip(srcs, masks, strict=True)]
    changed_memory = model.encode(changed, masks, pos)
    keep = ~memory.mask
    torch.testing.assert_close(changed_memory.tokens[keep], memory.tokens[keep])
    queries = per_image_queries()
    torch.testing.assert_close(model.decode(changed_memory, *queries)[0], model.decode(memory, *queries)[0])


def test_batch_equals_each_image_alone():
    shapes = [(6, 6), (3, 3), (2, 2)]
    model = small_transformer(3)
    srcs, masks, pos = padded_batch(shapes)
    memory = model.encode(srcs, masks, pos)
    content, query_pos = per_image_queries()
    hs, refs = model.decode(memory, content, query_pos)
    for i in range(2):
        alone = model.encode(*([t[i : i + 1] for t in level] for level in (srcs, masks, pos)))
        torch.testing.assert_close(alone.tokens, memory.tokens[i : i + 1])
        hs_i, refs_i = model.decode(image(memory, i), content[i : i + 1], query_pos[i : i + 1])
        torch.testing.assert_close(hs_i, hs[:, i : i + 1])
        torch.testing.assert_close(refs_i, refs[:, i : i + 1])
