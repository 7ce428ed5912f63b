"""Tests for lcomp.quantize: forward values and each surrogate gradient against its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcomp.quantize import binarize, nearest_center, round_ste, soft_assignment, threshold_ste


U_GRID = jnp.array([-1.0, -0.7, -0.3, -1e-8, 0.0, 1e-8, 0.2, 0.6, 1.0], jnp.float32)


@pytest.mark.parametrize("stochastic", [True, False])
def test_binarize_values_are_exactly_plus_minus_one(stochastic):
    u = jnp.tanh(jax.random.normal(jax.random.key(0), (64, 64)) * 3)
    b = binarize(u, jax.random.key(1), stochastic=stochastic)
    assert b.dtype == jnp.float32
    values = np.unique(np.asarray(b))
    assert set(values.tolist()) <= {-1.0, 1.0}


def test_binarize_deterministic_is_sign_without_zero():
    b = binarize(U_GRID, stochastic=False)
    np.testing.assert_array_equal(b, [-1, -1, -1, -1, 1, 1, 1, 1, 1])


def test_binarize_keeps_float32_for_bfloat16_inputs():
    b = binarize(U_GRID.astype(jnp.bfloat16), stochastic=False)
    assert b.dtype == jnp.float32


def test_binarize_stochastic_mean_is_u():
    samples = 40_000
    u = jnp.broadcast_to(U_GRID, (samples, U_GRID.size))
    b = binarize(u, jax.random.key(3), stochastic=True)
    mean = np.asarray(b.mean(axis=0))
    # Var(b) = 1 - u^2 <= 1, so 5 standard errors is < 0.025.
    np.testing.assert_allclose(mean, U_GRID, atol=5 / np.sqrt(samples))
    np.testing.assert_array_equal(mean[[0, -1]], [-1.0, 1.0])  # u = -1 / +1 are deterministic


def test_binarize_uses_the_key():
    u = jnp.zeros((1000,))
    a = binarize(u, jax.random.key(0), stochastic=True)
    b = binarize(u, jax.random.key(1), stochastic=True)
    c = binarize(u, jax.random.key(0), stochastic=True)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError):
        binarize(u, None, stochastic=True)


@pytest.mark.parametrize("stochastic", [True, False])
def test_binarize_gradient_is_straight_through(stochastic):
    u = jnp.tanh(jax.random.normal(jax.random.key(0), (5, 7)))
    weights = jax.random.normal(jax.random.key(1), u.shape)
    grad = jax.grad(lambda v: jnp.sum(weights * binarize(v, jax.random.key(2), stochastic=stochastic)))(u)
    np.testing.assert_array_equal(grad, weights)
    grad16 = jax.grad(lambda v: jnp.sum(binarize(v, stochastic=False)))(u.astype(jnp.bfloat16))
    assert grad16.dtype == jnp.bfloat16 and np.all(np.asarray(grad16, np.float32) == 1)


def test_threshold_ste():
    e = jnp.array([0.0, 0.3, 0.5, 0.5001, 1.0])
    np.testing.assert_array_equal(threshold_ste(e), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(3.0 * threshold_ste(v)))(e), 3.0 * np.ones(5))


def test_round_ste():
    x = jnp.array([-1.5, -0.4, 0.5, 0.6, 2.49, 2.5])
    np.testing.assert_array_equal(round_ste(x), jnp.round(x))
    weights = jnp.arange(6.0)
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(weights * round_ste(v)))(x), weights)


def _setup_centers():
    centers = jnp.array([-1.7, -0.4, 0.3, 1.1, 2.0, -2.2], jnp.float32)
    z = 2.5 * jax.random.normal(jax.random.key(0), (3, 4, 5))
    return z, centers


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_nearest_center_forward_is_nearest(sigma):
    z, centers = _setup_centers()
    q, symbols = nearest_center(z, centers, sigma)
    distance = np.abs(np.asarray(z)[..., None] - np.asarray(centers))
    expected_symbols = distance.argmin(-1)
    np.testing.assert_array_equal(symbols, expected_symbols)
    assert symbols.dtype == jnp.int32
    np.testing.assert_array_equal(q, np.asarray(centers)[expected_symbols])  # exact, no ulp error


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_nearest_center_gradient_is_soft_gradient(sigma):
    z, centers = _setup_centers()
    weights = jax.random.normal(jax.random.key(1), z.shape)

    def hard(zz, cc):
        return jnp.sum(weights * nearest_center(zz, cc, sigma)[0])

    def soft(zz, cc):
        return jnp.sum(weights * soft_assignment(zz, cc, sigma))

    g_hard = jax.grad(hard, argnums=(0, 1))(z, centers)
    g_soft = jax.grad(soft, argnums=(0, 1))(z, centers)
    np.testing.assert_allclose(g_hard[0], g_soft[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g_hard[1], g_soft[1], rtol=1e-6, atol=1e-6)
    assert np.any(np.asarray(g_hard[1]) != 0), "centers must get gradients"

    # Analytic: q_soft = E_phi[c] with phi = softmax(-sigma (z - c)^2), so d q_soft / d z = 2 sigma Var_phi(c).
    z64, c64 = np.asarray(z, np.float64), np.asarray(centers, np.float64)
    logits = -sigma * (z64[..., None] - c64) ** 2
    phi = np.exp(logits - logits.max(-1, keepdims=True))
    phi /= phi.sum(-1, keepdims=True)
    mean = np.sum(phi * c64, -1)
    var = np.sum(phi * (c64 - mean[..., None]) ** 2, -1)
    np.testing.assert_allclose(g_hard[0], np.asarray(weights) * 2 * sigma * var, rtol=1e-4, atol=1e-5)  # float32 softmax-gradient noise


def test_nearest_center_under_jit_and_vmap():
    z, centers = _setup_centers()
    q_jit, s_jit = jax.jit(nearest_center)(z, centers)
    q, s = nearest_center(z, centers)
    np.testing.assert_array_equal(q_jit, q)
    np.testing.assert_array_equal(s_jit, s)
    q_vmap, _ = jax.vmap(lambda zz: nearest_center(zz, centers))(z)
    np.testing.assert_array_equal(q_vmap, q)
