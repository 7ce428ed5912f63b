"""Tests for the recurrent coder's networks (lcomp.codecs.rnn.network)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lcomp.codecs.rnn.network import RNNCoderConfig, RNNCoderNetwork
from lcomp.errors import ConfigError, ImageError
from lcomp.nn import ConvGRUCell, ConvLSTMCell, depth_to_space


def _image(shape=(2, 32, 48, 3), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, minval=-0.5, maxval=0.5)


_PARAMS = {}


def _network(**overrides):
    """A tiny network and its parameters (cached per parameter structure: compiling init is slow)."""
    net = RNNCoderNetwork(RNNCoderConfig.tiny(**overrides))
    c = net.config
    structure = (c.cell, c.residual_gru, c.reconstruction == "residual_scaling")
    if structure not in _PARAMS:
        _PARAMS[structure] = jax.jit(net.init, static_argnums=1)(jax.random.key(1), (1, 32, 64, 3))
    return net, _PARAMS[structure]


def _fast_random_params(net, image_shape):
    """Parameters with the shapes ``init`` gives, drawn from a plain normal with variance 1/fan_in.

    (The real truncated-normal init of the 26 M paper-size parameters takes several seconds on 2 CPUs.)
    """
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), image_shape))
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    fan_in = lambda shape: int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.normal(k, s.shape) / np.sqrt(fan_in(s.shape)) for k, s in zip(keys, leaves)]
    )


# ----------------------------------------------------------------------------------------------------
# Paper-size shapes


def test_paper_size_network_emits_one_eighth_bpp_per_iteration():
    config = RNNCoderConfig()
    assert (config.bits_per_position, config.iterations, config.cell) == (32, 16, "gru")
    net = RNNCoderNetwork(config)
    image = _image((1, 32, 48, 3))
    params = _fast_random_params(net, image.shape)

    # The layer table of spec 3.1 (input / hidden kernels, widths; no biases).
    enc, dec = params["encoder"], params["decoder"]
    assert enc["input_conv"]["kernel"].shape == (3, 3, 3, 64)
    assert enc["rnn_0"]["input_conv"]["kernel"].shape == (3, 3, 64, 3 * 256)
    assert enc["rnn_2"]["hidden_gate_conv"]["kernel"].shape == (1, 1, 512, 2 * 512)
    assert enc["binarizer_conv"]["kernel"].shape == (1, 1, 512, 32)
    assert dec["input_conv"]["kernel"].shape == (1, 1, 32, 512)
    assert dec["rnn_0"]["input_conv"]["kernel"].shape == (3, 3, 512, 3 * 512)
    assert dec["rnn_1"]["input_conv"]["kernel"].shape == (3, 3, 128, 3 * 512)
    assert dec["rnn_1"]["hidden_candidate_conv"]["kernel"].shape == (1, 1, 512, 512)
    assert dec["rnn_2"]["hidden_candidate_conv"]["kernel"].shape == (3, 3, 256, 256)
    assert dec["rnn_3"]["hidden_gate_conv"]["kernel"].shape == (3, 3, 128, 2 * 128)
    assert dec["output_conv"]["kernel"].shape == (1, 1, 32, 3)
    assert not any("bias" in str(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])

    out = jax.jit(lambda p, x: net.run_iterations(p, x, 2))(params, image)
    assert out.bits.shape == (2, 1, 2, 3, 32)
    assert out.reconstructions.shape == (2, 1, 32, 48, 3)
    bits_per_iteration = out.bits[0].size
    assert bits_per_iteration / (32 * 48) == 1 / 8
    assert set(np.unique(np.asarray(out.bits)).tolist()) <= {-1.0, 1.0}
    assert float(jnp.max(jnp.abs(out.reconstructions))) <= 0.5  # one-shot output is 0.5 tanh


def test_hidden_state_shapes_follow_spec():
    gru = RNNCoderNetwork(RNNCoderConfig()).initial_state(2, 64, 96)
    expected_encoder = [(2, 16, 24, 256), (2, 8, 12, 512), (2, 4, 6, 512)]
    expected_decoder = [(2, 4, 6, 512), (2, 8, 12, 512), (2, 16, 24, 256), (2, 32, 48, 128)]
    assert [s.shape for s in gru["encoder"]] == expected_encoder
    assert [s.shape for s in gru["decoder"]] == expected_decoder
    lstm = RNNCoderNetwork(RNNCoderConfig(cell="lstm")).initial_state(2, 64, 96)
    assert [tuple(a.shape for a in s) for s in lstm["encoder"]] == [(e, e) for e in expected_encoder]
    assert [tuple(a.shape for a in s) for s in lstm["decoder"]] == [(d, d) for d in expected_decoder]
    assert not any(jnp.any(a) for a in jax.tree_util.tree_leaves(lstm))


# ----------------------------------------------------------------------------------------------------
# The scan against an independent Python unroll of the same cells


def _conv(p, x, stride=1):
    y = lax.conv_general_dilated(x, p["kernel"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"] if "bias" in p else y


def _reference_unroll(config, params, image, num_iterations):
    """T17/J18 iterations written out with plain Python loops over the cells (spec 2.1, 9.3)."""
    def cell(features, ki, kh, stride):
        kwargs = dict(input_kernel_size=ki, hidden_kernel_size=kh, strides=stride)
        if config.cell == "gru":
            return ConvGRUCell(features, residual_output=config.residual_gru, **kwargs)
        return ConvLSTMCell(features, **kwargs)

    enc_cells = [cell(*a, 2) for a in zip(config.encoder_rnn_features, config.encoder_input_kernels, config.encoder_hidden_kernels)]
    dec_cells = [cell(*a, 1) for a in zip(config.decoder_rnn_features, config.decoder_input_kernels, config.decoder_hidden_kernels)]
    n, h, w, _ = image.shape
    enc_states = [c.initial_state(n, h // 2 ** (i + 2), w // 2 ** (i + 2)) for i, c in enumerate(enc_cells)]
    dec_states = [c.initial_state(n, h // 2 ** (4 - i), w // 2 ** (4 - i)) for i, c in enumerate(dec_cells)]
    pe, pd = params["encoder"], params["decoder"]
    x_hat = jnp.zeros_like(image)
    all_bits, all_recs = [], []
    for t in range(num_iterations):
        runs = 1 + (config.priming_steps if t == 0 else config.diffusion_steps)
        features = _conv(pe["input_conv"], image - x_hat, 2)
        for _ in range(runs):
            y = features
            for i, c in enumerate(enc_cells):
                enc_states[i], y = c.apply({"params": pe[f"rnn_{i}"]}, enc_states[i], y)
        u = jnp.tanh(_conv(pe["binarizer_conv"], y))
        bits = jnp.where(u >= 0, 1.0, -1.0)  # only the last run's code is sent
        features = _conv(pd["input_conv"], bits)
        for _ in range(runs):
            y = features
            for i, c in enumerate(dec_cells):
                dec_states[i], y = c.apply({"params": pd[f"rnn_{i}"]}, dec_states[i], y)
                y = depth_to_space(y, 2)
        out = _conv(pd["output_conv"], y)
        if config.reconstruction == "one_shot":
            x_hat = 0.5 * jnp.tanh(out)
        else:
            x_hat = x_hat + jnp.tanh(out)
        all_bits.append(bits)
        all_recs.append(x_hat)
    return jnp.stack(all_bits), jnp.stack(all_recs)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(priming_steps=2, diffusion_steps=1),
        dict(cell="lstm", reconstruction="additive", priming_steps=1, diffusion_steps=2),
        dict(residual_gru=True, reconstruction="additive", remat=True, priming_steps=3),
    ],
    ids=["gru-one-shot", "gru-primed", "lstm-additive-primed", "residual-gru-additive-remat"],
)
def test_scan_equals_python_unroll(overrides):
    net, params = _network(**overrides)
    image = _image()
    out = jax.jit(lambda p, x: net.run_iterations(p, x, 4))(params, image)
    ref_bits, ref_recs = jax.jit(lambda p, x: _reference_unroll(net.config, p, x, 4))(params, image)
    np.testing.assert_array_equal(out.bits, ref_bits)
    np.testing.assert_allclose(out.reconstructions, ref_recs, atol=1e-5)
    np.testing.assert_allclose(out.distortion, jnp.mean(jnp.abs(ref_recs - image), axis=(2, 3, 4)), atol=1e-5)


def test_priming_and_diffusion_emit_no_bits_but_change_the_result():
    image = _image()
    base_net, params = _network()
    base = jax.jit(lambda p, x: base_net.run_iterations(p, x, 3))(params, image)
    for k, d in [(1, 0), (2, 0), (3, 0), (0, 1), (0, 2), (3, 2)]:
        net = RNNCoderNetwork(dataclasses.replace(base_net.config, priming_steps=k, diffusion_steps=d))
        out = jax.jit(lambda p, x: net.run_iterations(p, x, 3))(params, image)  # same parameters for every k, d
        assert out.bits.shape == base.bits.shape == (3, 2, 2, 3, 32)
        assert out.reconstructions.shape == base.reconstructions.shape
        if k:  # priming changes the first iteration already
            assert not np.allclose(out.reconstructions[0], base.reconstructions[0])
        else:  # diffusion leaves the first iteration alone and changes the later ones
            np.testing.assert_array_equal(out.reconstructions[0], base.reconstructions[0])
            assert not np.allclose(out.reconstructions[1:], base.reconstructions[1:])


# ----------------------------------------------------------------------------------------------------
# Encoder-only / decoder-only entry points


@pytest.mark.parametrize(
    "overrides",
    [dict(priming_steps=2, diffusion_steps=1), dict(cell="lstm", reconstruction="additive"), dict(reconstruction="residual_scaling")],
    ids=["gru-primed", "lstm-additive", "residual-scaling"],
)
def test_encode_then_decode_equals_joint_scan(overrides):
    net, params = _network(**overrides)
    image = _image((2, 32, 64, 3))
    joint, bits = jax.jit(lambda p, x: (net.run_iterations(p, x, 5), net.encode_iterations(p, x, 5)))(params, image)
    np.testing.assert_array_equal(bits, joint.bits)
    decoded = jax.jit(net.decode_iterations)(params, bits)
    np.testing.assert_allclose(decoded, joint.reconstructions, atol=1e-6)
    if overrides.get("priming_steps"):
        # Progressive: decoding a prefix of the iterations gives the prefix of the reconstructions.
        np.testing.assert_allclose(jax.jit(net.decode_iterations)(params, bits[:2]), decoded[:2], atol=1e-6)


def test_decoder_accepts_sabr_zeros_deterministically():
    net, params = _network(priming_steps=1, diffusion_steps=1)
    image = _image()
    bits = jax.jit(lambda p, x: net.encode_iterations(p, x, 4))(params, image)
    keep = jax.random.bernoulli(jax.random.key(5), 0.6, bits.shape[:4])
    sabr_bits = bits * keep[..., None]
    decode = jax.jit(net.decode_iterations)
    first, second = decode(params, sabr_bits), decode(params, sabr_bits)
    np.testing.assert_array_equal(first, second)
    assert bool(jnp.all(jnp.isfinite(first)))
    assert not np.allclose(first, decode(params, bits))
    # Closed-loop SABR: the joint scan with a bit mask returns the zeroed bits and the decoder's images.
    closed = jax.jit(lambda p, x, m: net.run_iterations(p, x, 4, bit_mask=m))(params, image, keep)
    assert np.all(np.asarray(closed.bits)[~np.asarray(keep)] == 0)
    np.testing.assert_allclose(decode(params, closed.bits), closed.reconstructions, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Training mode


def test_training_mode_is_stochastic_keyed_and_differentiable_with_and_without_remat():
    net, params = _network(remat=True)
    image = _image((1, 32, 32, 3))
    run = jax.jit(lambda p, k: net.run_iterations(p, image, 3, key=k, train=True))
    a, b, a_again = run(params, jax.random.key(0)), run(params, jax.random.key(1)), run(params, jax.random.key(0))
    assert set(np.unique(np.asarray(a.bits)).tolist()) == {-1.0, 1.0}
    assert not np.array_equal(a.bits, b.bits)
    np.testing.assert_array_equal(a.bits, a_again.bits)
    with pytest.raises(ValueError):
        net.run_iterations(params, image, 3, train=True)

    results = []
    for remat in (True, False):
        net, params = _network(remat=remat)
        loss = lambda p: jnp.mean(net.run_iterations(p, image, 3, key=jax.random.key(0), train=True).distortion)
        results.append(jax.jit(jax.value_and_grad(loss))(params))
    grads = results[0][1]
    # The straight-through binarizer lets the reconstruction loss reach every encoder layer.
    for name in ("input_conv", "rnn_0", "rnn_2", "binarizer_conv"):
        assert float(sum(jnp.abs(g).sum() for g in jax.tree_util.tree_leaves(grads["encoder"][name]))) > 0
    # Rematerialisation changes neither the loss nor the gradients.
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for g0, g1 in zip(jax.tree_util.tree_leaves(results[0][1]), jax.tree_util.tree_leaves(results[1][1])):
        np.testing.assert_allclose(g0, g1, rtol=1e-4, atol=1e-8)


# ----------------------------------------------------------------------------------------------------
# Configuration


def test_config_from_mapping_and_validation():
    config = RNNCoderConfig.from_mapping({"cell": "lstm", "encoder_rnn_features": [8, 8, 8], "priming_steps": 3})
    assert config.encoder_rnn_features == (8, 8, 8) and isinstance(hash(config), int)
    assert RNNCoderConfig.tiny().decoder_rnn_features == (16, 16, 16, 8)
    with pytest.raises(ConfigError):
        RNNCoderConfig.from_mapping({"no_such_field": 1})
    for bad in [dict(cell="rnn"), dict(reconstruction="scaled"), dict(decoder_rnn_features=(512, 512, 256)),
                dict(decoder_rnn_features=(512, 512, 256, 126)), dict(priming_steps=-1),
                dict(residual_gru=True, cell="lstm"), dict(output_activation="relu")]:
        with pytest.raises(ConfigError):
            RNNCoderConfig(**bad)
    assert RNNCoderConfig(reconstruction="residual_scaling").pad_multiple == 32
    assert RNNCoderConfig().pad_multiple == 16
    assert RNNCoderConfig(reconstruction="residual_scaling", gain_block=16).pad_multiple == 16
    with pytest.raises(ConfigError, match="gain_block"):
        RNNCoderConfig(reconstruction="residual_scaling", gain_block=24)


def test_residual_scaling_gain_block_16_fits_48_pixel_patches():
    """gain_block=16: one gain per 16x16 block (one stride-2 conv fewer), so 48-pixel patches are valid."""
    image = _image((1, 48, 48, 3))
    with pytest.raises(ImageError):  # the port's G needs multiples of 32
        RNNCoderNetwork(RNNCoderConfig.tiny(reconstruction="residual_scaling")).check_image_shape(image.shape)
    net = RNNCoderNetwork(RNNCoderConfig.tiny(reconstruction="residual_scaling", gain_block=16))
    params = jax.jit(net.init, static_argnums=1)(jax.random.key(1), image.shape)
    assert sorted(params["gain"]) == ["conv_0", "conv_1", "conv_2", "conv_3"]
    gain = net.gain.apply({"params": params["gain"]}, image)
    assert gain.shape == (1, 3, 3, 1) and bool(jnp.all(gain >= 1.0))
    joint = jax.jit(lambda p, x: net.run_iterations(p, x, 3))(params, image)
    np.testing.assert_allclose(jax.jit(net.decode_iterations)(params, joint.bits), joint.reconstructions, atol=1e-6)
    # The first update is the decoder output divided by g_0 = 1; later ones by G's per-block gains.
    assert not np.allclose(joint.reconstructions[1], joint.reconstructions[0])


def test_image_shape_is_checked():
    net, params = _network()
    with pytest.raises(ImageError):
        net.run_iterations(params, jnp.zeros((1, 30, 48, 3)), 1)
    with pytest.raises(ImageError):
        net.init(jax.random.key(0), (1, 32, 32, 1))
