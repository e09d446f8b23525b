import numpy as np
import pytest

from siamdetr.proposals.edges import EDGE_MAPS, gradient_edges, structured_edge_detector


def rectangle_image(height, width, rect):
    image = np.full((height, width, 3), 20, np.uint8)
    x0, y0, x1, y1 = rect
    image[y0:y1, x0:x1] = (220, 180, 40)
    return image


@pytest.mark.parametrize("edge_map", EDGE_MAPS)
@pytest.mark.parametrize(("rect", "normal"), [((32, 0, 64, 64), 0.0), ((0, 32, 64, 64), np.pi / 2)])
def test_edges_are_thin_normalised_and_oriented_across_the_edge(edge_map, rect, normal):
    edges, orientation = gradient_edges(rectangle_image(64, 64, rect), edge_map)  # one straight edge
    assert edges.dtype == np.float32 and orientation.dtype == np.float32
    assert edges.max() == pytest.approx(1.0) and edges.min() >= 0
    inner = (slice(8, -8), slice(8, -8))
    on_edge = edges[inner] > 0.1
    assert 0 < on_edge.sum() <= 2 * 48  # thinned: at most the two pixels astride the step, along 48 pixels
    angle = np.abs(orientation[inner][on_edge] - normal)
    assert np.all(np.minimum(angle, np.pi - angle) < 0.05)  # the normal, mod π


def test_noise_on_a_flat_image_is_no_edge():
    rng = np.random.default_rng(0)
    noisy = np.clip(120 + rng.normal(0, 3, (64, 64, 3)), 0, 255).astype(np.uint8)
    edges, _ = gradient_edges(noisy, "gradient")
    assert edges.max() < 0.5


def test_missing_sed_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.yml.gz: SED model not found"):
        structured_edge_detector(str(tmp_path / "model.yml.gz"))
