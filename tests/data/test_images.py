import numpy as np
import pytest
from PIL import Image

from siamdetr.data.folder import ImageFolder
from siamdetr.data.images import read_image
from siamdetr.errors import BadImageError


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    image = read_image(tmp_path / "grey16.png")
    assert image.shape == (3, 32, 32) and image.dtype.is_floating_point is False
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(image[0].numpy(), expected) and np.array_equal(image[2].numpy(), expected)
    assert abs(image.float().mean().item() - 127.5) < 1.0  # convert("RGB") alone gives 254


def test_8_bit_files_are_read_as_before(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    assert np.array_equal(read_image(tmp_path / "rgb.png").permute(1, 2, 0).numpy(), rgb)
    assert np.array_equal(read_image(tmp_path / "grey.png")[1].numpy(), rgb[..., 0])


def test_float_pixels_are_skipped_and_counted_or_an_error(tmp_path):
    (tmp_path / "n01").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "n01" / "a.png")
    Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32)).save(tmp_path / "n01" / "b.tif")
    folder = ImageFolder(tmp_path)
    assert folder[0] is not None and folder[1] is None
    with pytest.raises(BadImageError, match=r"b.tif: cannot decode image \(pixel format 'F'"):
        read_image(tmp_path / "n01" / "b.tif", on_bad="error")
