"""How the recurrent coder's per-iteration distortions form its training objective (model.iteration_weighting)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcomp import configs, losses
from lcomp.codecs import registry
from lcomp.codecs.rnn import codec as rnn_codec
from lcomp.errors import ConfigError


def test_weight_iterations_values_and_gradients():
    d = jnp.asarray([0.4, 0.1, 0.02])
    assert float(rnn_codec.weight_iterations(d, "uniform")) == pytest.approx(float(jnp.mean(d)))
    assert float(rnn_codec.weight_iterations(d, "sum")) == pytest.approx(float(jnp.sum(d)))
    assert float(rnn_codec.weight_iterations(d, "normalized")) == pytest.approx(1.0)
    assert float(rnn_codec.weight_iterations(d, "linear")) == pytest.approx((0.4 + 0.2 + 0.06) / 3 / 2)
    assert float(rnn_codec.weight_iterations(d, "final")) == pytest.approx(0.02)
    # uniform: every iteration's gradient 1/T, however small its error; normalized: 1/(T d_t), so an
    # iteration with a 20x smaller error is pushed 20x harder (equal relative improvement).
    np.testing.assert_allclose(jax.grad(rnn_codec.weight_iterations)(d, "uniform"), np.full(3, 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(rnn_codec.weight_iterations)(d, "normalized"), 1 / (3 * d), rtol=1e-5)
    with pytest.raises(ConfigError):
        rnn_codec.weight_iterations(d, "later")


def test_ssim_weighted_l1_per_iteration_averages_to_the_scalar_loss():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-0.5, 0.5, (2, 16, 16, 3)), jnp.float32)
    x_hat = jnp.asarray(x[None] + rng.normal(0, [[[[[0.2]]]], [[[[0.05]]]]], (2, 2, 16, 16, 3)), jnp.float32)
    state = losses.init_ssim_weight_state()
    scalar, s1, w1 = losses.ssim_weighted_l1(x, x_hat, state)
    per, s2, w2 = losses.ssim_weighted_l1(x, x_hat, state, per_iteration=True)
    assert per.shape == (2,)
    assert float(per[0]) > float(per[1])  # the noisier first "iteration" has the larger term
    np.testing.assert_allclose(float(jnp.mean(per)), float(scalar), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(w1), np.asarray(w2))
    with pytest.raises(ConfigError):
        losses.ssim_weighted_l1(x, x_hat[0], state, per_iteration=True)


def _codec_and_batch(weighting, loss="ssim_weighted_l1"):
    cfg = configs.load_config(
        "johnston2018:tiny",
        [f"model.iteration_weighting={weighting}", f"model.loss={loss}", "model.network.iterations=3",
         "model.network.priming_steps=0"],
    )
    codec = registry.create(cfg.codec, cfg.model)
    rng = np.random.default_rng(1)
    batch = {"image": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)}
    variables = codec.init(jax.random.key(0), batch)
    return codec, batch, variables


@pytest.mark.parametrize("loss", ["ssim_weighted_l1", "l1"])
def test_codec_objective_follows_the_weighting(loss):
    key = jax.random.key(3)
    results = {}
    for weighting in ("uniform", "normalized"):
        codec, batch, variables = _codec_and_batch(weighting, loss)
        value, (metrics, _) = codec.loss(variables["params"], variables["state"], batch, key, train=True)
        grads = jax.grad(lambda p: codec.loss(p, variables["state"], batch, key, train=True)[0])(variables["params"])
        results[weighting] = (float(value), float(metrics["distortion"]), float(metrics["bits_per_bit"]), grads)
    (u_loss, u_dist, u_bits, u_grad), (n_loss, n_dist, n_bits, n_grad) = results["uniform"], results["normalized"]
    # The logged distortion is the same uniform mean either way; the objective is not.
    assert n_dist == pytest.approx(u_dist, rel=1e-6)
    assert u_loss == pytest.approx(u_dist + u_bits, rel=1e-5)
    assert n_loss == pytest.approx(1.0 + n_bits, rel=1e-5)
    enc_u = jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(u_grad["autoencoder"])])
    enc_n = jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(n_grad["autoencoder"])])
    assert not np.allclose(np.asarray(enc_u), np.asarray(enc_n))
    # The bit model's objective is untouched by the distortion weighting.
    for a, b in zip(jax.tree_util.tree_leaves(u_grad["context_model"]), jax.tree_util.tree_leaves(n_grad["context_model"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)


def test_unknown_iteration_weighting_is_a_config_error():
    cfg = configs.load_config("johnston2018:tiny")
    cfg.model.iteration_weighting = "geometric"
    with pytest.raises(ConfigError, match="iteration_weighting"):
        registry.create(cfg.codec, cfg.model)


def test_deterministic_training_binarizer_is_the_test_time_sign():
    from lcomp.codecs.rnn.network import RNNCoderConfig, RNNCoderNetwork

    x = jnp.asarray(np.random.default_rng(2).uniform(-0.5, 0.5, (1, 32, 32, 3)), jnp.float32)
    key = jax.random.key(5)
    outputs = {}
    for mode in ("stochastic", "deterministic"):
        net = RNNCoderNetwork(RNNCoderConfig.tiny(iterations=3, train_binarizer=mode))
        params = net.init(jax.random.key(0), x.shape)
        outputs[mode] = (net.run_iterations(params, x, key=key, train=True).bits,
                         net.run_iterations(params, x, train=False).bits)
    train_bits, test_bits = outputs["deterministic"]
    np.testing.assert_array_equal(np.asarray(train_bits), np.asarray(test_bits))
    train_bits, test_bits = outputs["stochastic"]
    assert np.mean(np.asarray(train_bits) != np.asarray(test_bits)) > 0.01  # coin flips where |u| < 1
    with pytest.raises(ConfigError, match="train_binarizer"):
        RNNCoderConfig.tiny(train_binarizer="annealed")
