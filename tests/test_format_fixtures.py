"""Files written before the codec-platform change still decode to the same pixels, and the same model writes
the same bytes (tests/fixtures/johnston2018_v1, made by tests/fixtures/make_johnston2018_v1.py at 08fb1a1
with the then-shipped johnston2018 model, whose variables are committed beside the files)."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from lcomp import models

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "johnston2018_v1"
CASES = json.loads((FIXTURES / "cases.json").read_text())


@pytest.fixture(scope="module")
def model():
    return models.load_model(FIXTURES / "model")


@pytest.fixture(scope="module")
def image():
    return np.asarray(Image.open(FIXTURES / "image.png"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_old_file_decodes_to_the_same_pixels(model, case):
    blob = (FIXTURES / f"{case}.lcomp").read_bytes()
    expected = np.asarray(Image.open(FIXTURES / f"{case}.png"))
    decoded = model.codec.decompress(model.variables, blob)
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_settings_write_the_same_bytes(model, image, case):
    blob = (FIXTURES / f"{case}.lcomp").read_bytes()
    result = model.codec.compress(model.variables, image, **CASES[case])
    assert result.data == blob
    # The estimate comes from the same encode and is close to the real payload.
    assert result.estimated_bits is not None and 0 < result.estimated_bits <= 8 * len(blob)
