"""Tests for lcomp.losses: L1, MSE, block SSIM and the SSIM-weighted L1 of Johnston et al. 2018."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcomp.errors import ConfigError
from lcomp.losses import block_ssim, init_ssim_weight_state, l1, mse, ssim_weighted_l1

C2 = 0.03**2  # (K2 * data_range)^2 with data_range = 1


def _two_block_example():
    """One 8x16 image = two 8x8 blocks: the left one reconstructed perfectly, the right one by its mean.

    For a block reconstructed by a constant equal to its mean, SSIM = C2 / (var + C2) exactly
    (equal means: luminance term 1; zero reconstruction variance and covariance).
    """
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, size=(1, 8, 16, 3)).astype(np.float32)
    x_hat = x.copy()
    right = x[:, :, 8:, :]
    x_hat[:, :, 8:, :] = right.mean(axis=(1, 2), keepdims=True)
    var = right.var(axis=(1, 2)).reshape(-1)  # per channel, biased
    ssim_right = float(np.mean(C2 / (var + C2)))
    return jnp.asarray(x), jnp.asarray(x_hat), ssim_right


def test_l1_and_mse():
    x = jnp.zeros((2, 4, 4, 3))
    y = jnp.full((2, 4, 4, 3), 0.5).at[0].set(-0.25)
    assert float(l1(x, y)) == pytest.approx(0.375)
    assert float(mse(x, y)) == pytest.approx((0.0625 + 0.25) / 2)
    stack = jnp.stack([y, 2 * y])  # (T, N, H, W, C): x broadcasts over iterations
    assert float(l1(x, stack)) == pytest.approx((0.375 + 0.75) / 2)


def test_block_ssim_closed_forms():
    x, x_hat, ssim_right = _two_block_example()
    ssim = block_ssim(x, x_hat)
    assert ssim.shape == (1, 1, 2)
    assert float(ssim[0, 0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim[0, 0, 1]) == pytest.approx(ssim_right, rel=1e-5)


def test_block_ssim_matches_numpy_definition():
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, (2, 16, 8, 3))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), -0.5, 0.5)
    got = np.asarray(block_ssim(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    c1 = 0.01**2
    for n in range(2):
        for bi in range(2):
            a = x[n, bi * 8:(bi + 1) * 8, :, :] + 0.5
            b = y[n, bi * 8:(bi + 1) * 8, :, :] + 0.5
            per_channel = []
            for c in range(3):
                u, v = a[..., c].ravel(), b[..., c].ravel()
                cov = np.mean((u - u.mean()) * (v - v.mean()))
                per_channel.append(
                    (2 * u.mean() * v.mean() + c1) * (2 * cov + C2)
                    / ((u.mean() ** 2 + v.mean() ** 2 + c1) * (u.var() + v.var() + C2))
                )
            assert got[n, bi, 0] == pytest.approx(np.mean(per_channel), rel=1e-4)


def test_ssim_weighted_l1_hand_built_example():
    x, x_hat, ssim_right = _two_block_example()
    state = init_ssim_weight_state()
    loss, new_state, weights = ssim_weighted_l1(x, x_hat, state)

    s_right = 1.0 - ssim_right  # S = 1 - SSIM; the perfect block has S = 0
    s_bar = s_right / 2  # first batch: S_bar initialised with the batch mean
    assert float(new_state["ema"]) == pytest.approx(s_bar, rel=1e-5)
    assert int(new_state["count"]) == 1
    np.testing.assert_allclose(weights, [[[0.0, s_right / s_bar]]], atol=1e-6)  # = [0, 2]
    expected_loss = 2.0 * float(jnp.sum(jnp.abs(x - x_hat))) / x.size
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)

    # Second batch: S_bar <- 0.99 S_bar + 0.01 mean(S), and the weights use the updated value.
    # Now the left block is reconstructed by its mean and the right one perfectly.
    x_hat2 = x.at[:, :, :8, :].set(jnp.mean(x[:, :, :8, :], axis=(1, 2), keepdims=True))
    left = np.asarray(x[0, :, :8, :])
    s_left2 = 1.0 - float(np.mean(C2 / (left.var(axis=(0, 1)) + C2)))
    _, state2, weights2 = ssim_weighted_l1(x, x_hat2, new_state)
    expected_ema = 0.99 * s_bar + 0.01 * (s_left2 + 0.0) / 2
    assert float(state2["ema"]) == pytest.approx(expected_ema, rel=1e-5)
    assert int(state2["count"]) == 2
    np.testing.assert_allclose(weights2, [[[s_left2 / expected_ema, 0.0]]], rtol=1e-5, atol=1e-6)


def test_ssim_weighted_l1_gradient_is_weight_times_sign():
    """The weights are under stop_gradient: d loss / d x_hat = w * sign(x_hat - x) / N."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(-0.5, 0.5, (2, 16, 16, 3)), jnp.float32)
    x_hat = jnp.stack([x + 0.05 * jnp.asarray(rng.normal(size=x.shape), jnp.float32) * (t + 1) for t in range(3)])
    state = {"ema": jnp.float32(0.2), "count": jnp.int32(5)}
    (loss, (_, weights)) = ssim_weighted_l1(x, x_hat, state)[0], ssim_weighted_l1(x, x_hat, state)[1:]
    grad = jax.grad(lambda y: ssim_weighted_l1(x, y, state)[0])(x_hat)
    assert weights.shape == (3, 2, 2, 2)
    w_pixels = jnp.repeat(jnp.repeat(weights, 8, axis=2), 8, axis=3)[..., None]
    np.testing.assert_allclose(grad, w_pixels * jnp.sign(x_hat - x) / x_hat.size, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(loss, jnp.mean(w_pixels * jnp.abs(x_hat - x)), rtol=1e-5)
    # No gradient reaches the target through the weights either.
    grad_x = jax.grad(lambda v: ssim_weighted_l1(v, x_hat, state)[0])(x)
    np.testing.assert_allclose(grad_x, -jnp.sum(w_pixels * jnp.sign(x_hat - x), axis=0) / x_hat.size, rtol=1e-5, atol=1e-12)


def test_ssim_weighted_l1_similarity_flag_and_per_iteration_state():
    x, x_hat, ssim_right = _two_block_example()
    _, _, weights = ssim_weighted_l1(x, x_hat, init_ssim_weight_state(), weight_by="similarity")
    mean_ssim = (1.0 + ssim_right) / 2
    np.testing.assert_allclose(weights, [[[1.0 / mean_ssim, ssim_right / mean_ssim]]], rtol=1e-5)

    stack = jnp.stack([x_hat, x])  # iteration 2 is perfect
    state = init_ssim_weight_state(num_iterations=2)
    _, new_state, weights = ssim_weighted_l1(x, stack, state, epsilon=1e-3)
    np.testing.assert_allclose(new_state["ema"], [(1.0 - ssim_right) / 2, 0.0], atol=1e-6)
    np.testing.assert_allclose(weights[0], [[[0.0, 2.0]]], atol=1e-5)
    np.testing.assert_allclose(weights[1], 0.0, atol=1e-3)  # S = 0 everywhere; S_bar floored at epsilon
    with pytest.raises(ConfigError):
        ssim_weighted_l1(x, x_hat, state)  # per-iteration state needs a stack


def test_ssim_weighted_l1_is_jittable_and_validates():
    x, x_hat, _ = _two_block_example()
    state = init_ssim_weight_state()
    eager = ssim_weighted_l1(x, x_hat, state)
    jitted = jax.jit(ssim_weighted_l1)(x, x_hat, state)
    np.testing.assert_allclose(eager[0], jitted[0], rtol=1e-6)
    with pytest.raises(ConfigError):
        ssim_weighted_l1(x[:, :, :12], x_hat[:, :, :12], state)
    with pytest.raises(ConfigError):
        ssim_weighted_l1(x, x_hat, state, weight_by="ssim")
