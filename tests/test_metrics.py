"""Metrics: closed-form cases, shape/size errors, jit, and MS-SSIM against independent float64 references."""

import io

import jax
import numpy as np
import pytest
from PIL import Image
from scipy.signal import convolve2d

from lcomp.data import kodak_dir
from lcomp.errors import ImageError, LcompError
from lcomp.metrics import MS_SSIM_MIN_SIDE, ms_ssim, ms_ssim_db, ms_ssim_to_db, psnr, psnr_y, ssim

KODAK = kodak_dir()
needs_kodak = pytest.mark.skipif(not (KODAK / "kodim01.png").is_file(), reason=f"Kodak images not found at {KODAK}")

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# --- an independent float64 reference: 2-D kernel, direct 2-D convolution, explicit loops -----------------------


def _gaussian_2d() -> np.ndarray:
    r = np.arange(-5, 6, dtype=np.float64)
    kernel = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    return kernel / kernel.sum()


def _downsample(plane: np.ndarray) -> np.ndarray:
    # TensorFlow's rule for odd sizes: repeat the last row/column, then average 2x2 blocks.
    h, w = plane.shape
    plane = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    return 0.25 * (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2])


def _reference_scales(a: np.ndarray, b: np.ndarray):
    kernel = _gaussian_2d()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    for _ in range(5):
        mu_a, mu_b = convolve2d(a, kernel, mode="valid"), convolve2d(b, kernel, mode="valid")
        var_a = convolve2d(a * a, kernel, mode="valid") - mu_a**2
        var_b = convolve2d(b * b, kernel, mode="valid") - mu_b**2
        cov = convolve2d(a * b, kernel, mode="valid") - mu_a * mu_b
        cs = (2 * cov + c2) / (var_a + var_b + c2)
        yield ((2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * cs).mean(), cs.mean()
        a, b = _downsample(a), _downsample(b)


def reference_ms_ssim(x: np.ndarray, y: np.ndarray) -> float:
    per_channel = []
    for c in range(3):
        scales = list(_reference_scales(x[..., c].astype(np.float64), y[..., c].astype(np.float64)))
        value = 1.0
        for j, (ssim_j, cs_j) in enumerate(scales):
            value *= max(ssim_j if j == 4 else cs_j, 0.0) ** WEIGHTS[j]
        per_channel.append(value)
    return float(np.mean(per_channel))


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([next(_reference_scales(x[..., c] * 1.0, y[..., c] * 1.0))[0] for c in range(3)]))


def _smooth_random_pair(height: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.normal(128, 40, size=(height // 8 + 2, width // 8 + 2, 3))
    big = np.kron(base, np.ones((8, 8, 1)))[:height, :width]
    x = np.clip(big + rng.normal(0, 12, size=big.shape), 0, 255).round().astype(np.uint8)
    y = np.clip(x.astype(np.float64) + rng.normal(0, 9, size=x.shape), 0, 255).round().astype(np.uint8)
    return x, y


# --- PSNR -----------------------------------------------------------------------------------------------------


def test_psnr_closed_form_and_batching():
    x = np.full((2, 3, 16, 24, 3), 100, np.uint8)
    y = x.copy()
    y[0, 0] += 1  # every sample off by one: MSE 1
    y[1, 2, :, :, 0] += 4  # one channel off by 4: MSE 16 / 3
    result = np.asarray(psnr(x, y))
    assert result.shape == (2, 3)
    assert result[0, 0] == pytest.approx(10 * np.log10(255**2), abs=1e-4)
    assert result[1, 2] == pytest.approx(10 * np.log10(255**2 * 3 / 16), abs=1e-4)
    assert np.isinf(result[0, 1]) and result[0, 1] > 0


def test_float_inputs_are_rounded_and_clipped_to_8_bit():
    x = np.full((8, 8, 3), 100, np.uint8)
    assert np.isinf(psnr(x, x.astype(np.float32) + 0.4))  # rounds back to 100
    assert float(psnr(x, x.astype(np.float32) + 0.6)) == pytest.approx(10 * np.log10(255**2), abs=1e-4)
    white = np.full((8, 8, 3), 255, np.uint8)
    assert np.isinf(psnr(white, np.full((8, 8, 3), 300.0)))  # clipped to 255


def test_psnr_y_uses_bt601_luma():
    x, y = _smooth_random_pair(32, 48)
    weights = np.array([0.299, 0.587, 0.114])
    mse = np.mean((x.astype(np.float64) @ weights - y.astype(np.float64) @ weights) ** 2)
    assert float(psnr_y(x, y)) == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-4)


# --- SSIM and MS-SSIM on synthetic images (run everywhere) ------------------------------------------------------


def test_ssim_matches_reference():
    x, y = _smooth_random_pair(64, 80)
    assert float(ssim(x, y)) == pytest.approx(reference_ssim(x, y), abs=1e-5)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(192, 256), (181, 203)])  # even sizes, and odd sizes at several scales
def test_ms_ssim_matches_reference_on_synthetic_images(shape):
    x, y = _smooth_random_pair(*shape, seed=shape[1])
    assert float(ms_ssim(x, y)) == pytest.approx(reference_ms_ssim(x, y), abs=1e-5)


def test_ms_ssim_identical_batched_and_jitted():
    x, y = _smooth_random_pair(176, 200, seed=3)
    batch_x, batch_y = np.stack([x, y]), np.stack([y, y])
    values = np.asarray(jax.jit(ms_ssim)(batch_x, batch_y))
    assert values.shape == (2,)
    assert values[1] == pytest.approx(1.0, abs=1e-6)
    assert values[0] == pytest.approx(float(ms_ssim(x, y)), abs=1e-6)
    assert np.isinf(float(ms_ssim_db(y, y)))
    assert float(ms_ssim_db(x, y)) == pytest.approx(float(ms_ssim_to_db(float(ms_ssim(x, y)))), abs=1e-3)
    assert ms_ssim_to_db(0.99) == pytest.approx(20.0)


def test_errors_for_bad_shapes_and_small_images():
    x = np.zeros((200, 200, 3), np.uint8)
    with pytest.raises(ImageError, match="same shape"):
        psnr(x, x[:100])
    with pytest.raises(ImageError, match=r"\(\.\.\., H, W, 3\)"):
        psnr(x[..., :2], x[..., :2])
    small = np.zeros((MS_SSIM_MIN_SIDE - 1, 300, 3), np.uint8)
    with pytest.raises(ImageError, match="at least 176 px"):
        ms_ssim(small, small)
    assert issubclass(ImageError, LcompError)
    just_enough = np.zeros((MS_SSIM_MIN_SIDE, 300, 3), np.uint8)
    assert float(ms_ssim(just_enough, just_enough)) == pytest.approx(1.0)


# --- MS-SSIM on Kodak JPEG round trips -----------------------------------------------------------------------------


_ms_ssim_jit = jax.jit(ms_ssim)


@pytest.fixture(scope="module")
def kodak_jpeg_pairs():
    return list(_kodak_jpeg_pairs())


def _kodak_jpeg_pairs():
    for name in ("kodim01", "kodim04", "kodim23"):  # landscape and portrait
        with Image.open(KODAK / f"{name}.png") as img:
            original = img.convert("RGB")
        for quality in (10, 50, 90):
            buffer = io.BytesIO()
            original.save(buffer, "JPEG", quality=quality)
            with Image.open(buffer) as decoded:
                yield f"{name}@q{quality}", np.asarray(original), np.asarray(decoded.convert("RGB"))


@pytest.mark.kodak
@needs_kodak
def test_ms_ssim_matches_float64_reference_on_kodak_jpeg(kodak_jpeg_pairs):
    errors = {}
    for key, x, y in kodak_jpeg_pairs:
        errors[key] = abs(float(_ms_ssim_jit(x, y)) - reference_ms_ssim(x, y))
    print("max |MS-SSIM - float64 reference|:", max(errors.values()))
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.kodak
@needs_kodak
def test_ms_ssim_matches_pytorch_msssim_on_kodak_jpeg(kodak_jpeg_pairs):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional cross-check)")
    pytorch_msssim = pytest.importorskip("pytorch_msssim", reason="pytorch_msssim is not installed")
    errors = {}
    for key, x, y in kodak_jpeg_pairs:
        as_tensor = lambda a: torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None]  # noqa: E731
        expected = float(pytorch_msssim.ms_ssim(as_tensor(x), as_tensor(y), data_range=255))
        errors[key] = abs(float(_ms_ssim_jit(x, y)) - expected)
    # pytorch_msssim builds its Gaussian window in float32, which alone moves its result by up to ~1e-6.
    assert max(errors.values()) < 1e-5, errors
