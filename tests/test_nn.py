"""Tests for lcomp.nn: conv-RNN cells against their equations, the im2col convolution, causal masks and
masked-conv causality, blocks."""

import itertools

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest
from jax import lax

from lcomp.nn import (
    Conv2D,
    ConvGRUCell,
    ConvLSTMCell,
    MaskedConv2D,
    MaskedConv3D,
    ResidualBlock,
    SubpixelUpsample,
    conv2d,
    depth_to_space,
    raster_mask,
    space_to_depth,
)
from lcomp.entropy import masks
from lcomp.entropy.masks import channel_causal_mask, checkerboard_mask, mask_taps
from lcomp.nn.im2col import gather_patches, im2col_conv


def _conv(x, kernel, stride=1):
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )


def _random_like(key, tree, scale=0.5):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [scale * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
    )


# ----------------------------------------------------------------------------------------------------
# Conv-GRU / conv-LSTM


@pytest.mark.parametrize("stride,hidden_kernel", [(1, (1, 1)), (2, (1, 1)), (2, (3, 3))])
def test_conv_gru_matches_t17_equations(stride, hidden_kernel):
    """The fused cell computes z, r and the candidate exactly as T17 eqs. 11-13 (spec 4.2)."""
    features = 5
    cell = ConvGRUCell(features, input_kernel_size=(3, 3), hidden_kernel_size=hidden_kernel, strides=stride)
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 3))
    h = cell.initialize_carry(None, x.shape)
    assert h.shape == (2, 8 // stride, 6 // stride, features)
    h = jax.random.normal(jax.random.key(1), h.shape)  # a non-zero previous state
    params = jax.jit(cell.init)(jax.random.key(2), h, x)["params"]
    assert set(params) == {"input_conv", "hidden_gate_conv", "hidden_candidate_conv"}
    assert all(set(p) == {"kernel"} for p in params.values()), "no bias by default"
    assert params["input_conv"]["kernel"].shape == (3, 3, 3, 3 * features)
    assert params["hidden_gate_conv"]["kernel"].shape == (*hidden_kernel, features, 2 * features)
    assert params["hidden_candidate_conv"]["kernel"].shape == (*hidden_kernel, features, features)

    new_h, out = jax.jit(cell.apply)({"params": params}, h, x)

    w_z, w_r, w = jnp.split(params["input_conv"]["kernel"], 3, axis=-1)
    u_z, u_r = jnp.split(params["hidden_gate_conv"]["kernel"], 2, axis=-1)
    u = params["hidden_candidate_conv"]["kernel"]
    z = jax.nn.sigmoid(_conv(x, w_z, stride) + _conv(h, u_z))
    r = jax.nn.sigmoid(_conv(x, w_r, stride) + _conv(h, u_r))
    expected = (1 - z) * h + z * jnp.tanh(_conv(x, w, stride) + _conv(r * h, u))
    np.testing.assert_allclose(new_h, expected, atol=2e-5)
    np.testing.assert_array_equal(out, new_h)


def test_conv_gru_bias_and_residual_output():
    cell = ConvGRUCell(4, strides=2, use_bias=True, residual_output=True)
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
    h = jax.random.normal(jax.random.key(1), (1, 4, 4, 4))
    variables = jax.jit(cell.init)(jax.random.key(2), h, x)
    params = _random_like(jax.random.key(3), variables["params"])
    assert "bias" in params["input_conv"]
    proj = params["residual_projection"]["kernel"]
    assert proj.shape == (1, 1, 3, 4)
    new_h, out = jax.jit(cell.apply)({"params": params}, h, x)
    plain = ConvGRUCell(4, strides=2, use_bias=True)
    params_plain = {k: v for k, v in params.items() if k != "residual_projection"}
    new_h_plain, _ = jax.jit(plain.apply)({"params": params_plain}, h, x)
    np.testing.assert_allclose(new_h, new_h_plain, atol=1e-6)  # the carry is the plain GRU state
    expected_out = new_h + _conv(x, proj, 2) + params["residual_projection"]["bias"]
    np.testing.assert_allclose(out, expected_out, atol=1e-5)


@pytest.mark.parametrize("stride,hidden_kernel", [(1, (3, 3)), (2, (1, 1))])
def test_conv_lstm_matches_equations(stride, hidden_kernel):
    features = 4
    cell = ConvLSTMCell(features, hidden_kernel_size=hidden_kernel, strides=stride, forget_bias=1.0)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    c0, h0 = cell.initialize_carry(None, x.shape)
    assert c0.shape == h0.shape == (2, 8 // stride, 8 // stride, features)
    c = jax.random.normal(jax.random.key(1), c0.shape)
    h = jax.random.normal(jax.random.key(2), h0.shape)
    params = jax.jit(cell.init)(jax.random.key(3), (c, h), x)["params"]
    assert params["hidden_conv"]["kernel"].shape == (*hidden_kernel, features, 4 * features)
    (new_c, new_h), out = jax.jit(cell.apply)({"params": params}, (c, h), x)
    gates = _conv(x, params["input_conv"]["kernel"], stride) + _conv(h, params["hidden_conv"]["kernel"])
    i, f, j, o = jnp.split(gates, 4, axis=-1)
    expected_c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
    expected_h = jax.nn.sigmoid(o) * jnp.tanh(expected_c)
    np.testing.assert_allclose(new_c, expected_c, atol=2e-5)
    np.testing.assert_allclose(new_h, expected_h, atol=2e-5)
    np.testing.assert_array_equal(out, new_h)


def test_cell_state_helpers_and_odd_sizes():
    cell = ConvGRUCell(6, strides=2)
    assert cell.output_resolution(9, 7) == (5, 4)  # 'SAME': ceil(size / stride)
    assert cell.initial_state(3, 5, 4).shape == (3, 5, 4, 6)
    x = jnp.ones((1, 9, 7, 2))
    h = cell.initialize_carry(None, x.shape)
    params = jax.jit(cell.init)(jax.random.key(0), h, x)
    new_h, _ = jax.jit(cell.apply)(params, h, x)
    assert new_h.shape == (1, 5, 4, 6)
    lstm = ConvLSTMCell(3)
    c, h = lstm.initial_state(2, 4, 4)
    assert c.shape == h.shape == (2, 4, 4, 3) and not jnp.any(c) and not jnp.any(h)


# ----------------------------------------------------------------------------------------------------
# The im2col convolution


_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def _lax_conv(x, kernel, pads, strides):
    return lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=_DIMS[x.ndim - 2], precision=lax.Precision.HIGHEST
    )


@pytest.mark.parametrize(
    "x_shape,kernel_size,pads,strides",
    [
        ((2, 7, 6, 3), (3, 3), ((1, 1), (1, 1)), (1, 1)),
        ((2, 9, 8, 2), (4, 3), ((1, 0), (2, 1)), (2, 2)),
        ((1, 10, 7, 3), (3, 5), ((0, 0), (2, 2)), (3, 1)),
        ((2, 5, 6, 7, 2), (2, 3, 3), ((1, 0), (1, 1), (1, 1)), (1, 1, 1)),
        ((1, 6, 7, 8, 2), (3, 3, 2), ((2, 0), (0, 1), (1, 0)), (1, 2, 3)),
        ((3, 11, 2), (3,), ((2, 0),), (2,)),
    ],
)
def test_im2col_conv_equals_lax_conv(x_shape, kernel_size, pads, strides):
    x = jax.random.normal(jax.random.key(0), x_shape)
    kernel = jax.random.normal(jax.random.key(1), (*kernel_size, x_shape[-1], 4))
    want = _lax_conv(x, kernel, pads, strides)
    got = im2col_conv(x, kernel, pads, strides=strides, precision=lax.Precision.HIGHEST)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
    # Gradients too: both are plain JAX (pads, slices, a matmul).
    g = jax.random.normal(jax.random.key(2), want.shape)
    grads = jax.vjp(lambda a, b: im2col_conv(a, b, pads, strides=strides), x, kernel)[1](g)
    grads_ref = jax.vjp(lambda a, b: _lax_conv(a, b, pads, strides), x, kernel)[1](g)
    for a, b in zip(grads, grads_ref):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)
    # A random subset of taps equals the convolution with the kernel masked to them.
    mask = np.random.default_rng(len(x_shape)).random(kernel_size) < 0.5
    mask.flat[0] = True
    taps = mask_taps(mask)
    masked = kernel * jnp.asarray(mask, kernel.dtype)[..., None, None]
    np.testing.assert_allclose(
        im2col_conv(x, kernel, pads, strides=strides, taps=taps), _lax_conv(x, masked, pads, strides), atol=1e-4
    )
    # The order of the taps does not matter (columns and kernel rows are gathered alike).
    np.testing.assert_allclose(
        im2col_conv(x, kernel, pads, strides=strides, taps=taps[::-1]), _lax_conv(x, masked, pads, strides), atol=1e-4
    )


@pytest.mark.parametrize("traced", [False, True])
def test_im2col_conv_pad_value(traced):
    """Padding with a constant (Mentzer pads with centers[0]), as a compile-time number or a learned array."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 6, 2))
    kernel = jax.random.normal(jax.random.key(1), (2, 3, 3, 2, 3))
    pads = ((1, 0), (1, 1), (2, 1))
    value = -1.75
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)
    want = _lax_conv(padded, kernel, ((0, 0),) * 3, (1, 1, 1))
    pad_value = jnp.float32(value) if traced else value
    got = im2col_conv(x, kernel, pads, pad_value=pad_value, precision=lax.Precision.HIGHEST)
    np.testing.assert_allclose(got, want, atol=1e-4)
    taps = mask_taps(channel_causal_mask())
    got = im2col_conv(x, kernel, pads, taps=taps, pad_value=pad_value)
    masked = kernel * jnp.asarray(channel_causal_mask())[..., None, None]
    np.testing.assert_allclose(got, _lax_conv(padded, masked, ((0, 0),) * 3, (1, 1, 1)), atol=1e-4)
    if traced:  # the padding constant gets its gradient: d/dv of sum(conv) = sum of kernel weights on pads
        grad = jax.grad(lambda v: jnp.sum(im2col_conv(x, kernel, pads, pad_value=v)))(jnp.float32(value))
        ones = jnp.pad(jnp.zeros_like(x), ((0, 0), *pads, (0, 0)), constant_values=1.0)
        expected = jnp.sum(_lax_conv(ones, kernel, ((0, 0),) * 3, (1, 1, 1)))
        np.testing.assert_allclose(grad, expected, rtol=1e-4)


def test_im2col_conv_is_exact_on_integer_grids():
    """Integer-valued operands whose sums stay far below 2^24: HIGHEST precision gives the exact integers."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(-8, 9, (2, 9, 8, 16)), jnp.float32)
    kernel = jnp.asarray(rng.integers(-127, 128, (3, 3, 16, 8)), jnp.float32)
    pads = ((1, 1), (1, 1))
    got = np.asarray(jax.jit(lambda a, b: im2col_conv(a, b, pads, precision=lax.Precision.HIGHEST))(x, kernel))
    xp = np.pad(np.asarray(x, np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    k = np.asarray(kernel, np.int64)
    want = sum(
        np.einsum("nhwc,co->nhwo", xp[:, i : i + 9, j : j + 8], k[i, j]) for i in range(3) for j in range(3)
    )
    np.testing.assert_array_equal(got, want)


def test_gather_patches_layout():
    x = jnp.arange(2 * 4 * 5 * 3, dtype=jnp.float32).reshape(2, 4, 5, 3)
    taps = ((0, 1), (1, 0), (2, 2))
    patches = gather_patches(x, (3, 3), ((1, 1), (1, 1)), taps=taps, pad_value=-1.0)
    assert patches.shape == (2, 4, 5, 9)
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1.0)
    for t, (a, b) in enumerate(taps):  # column t * C_in + c = channel c at taps[t]
        np.testing.assert_array_equal(patches[..., 3 * t : 3 * t + 3], xp[:, a : a + 4, b : b + 5])


def test_im2col_conv_checks_its_arguments():
    x, kernel = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    pads = ((1, 1), (1, 1))
    for kwargs in (
        dict(pads=((1, 1),)),  # one pair for two axes
        dict(pads=((1, -1), (1, 1))),
        dict(pads=pads, strides=(1,)),
        dict(pads=pads, strides=(0, 1)),
        dict(pads=pads, taps=()),  # reads nothing
        dict(pads=pads, taps=((3, 0),)),  # outside the kernel
        dict(pads=pads, taps=((0, 0, 0),)),
        dict(pads=pads, pad_value=jnp.ones(2)),
    ):
        with pytest.raises(ValueError):
            im2col_conv(x, kernel, **kwargs)
    with pytest.raises(ValueError):
        im2col_conv(x, jnp.ones((3, 3, 3, 4)), pads)  # channel mismatch
    with pytest.raises(ValueError):
        im2col_conv(x, jnp.ones((7, 7, 2, 4)), ((0, 0), (0, 0)))  # kernel larger than the input


# ----------------------------------------------------------------------------------------------------
# Causal masks (lcomp.entropy.masks)


def test_channel_causal_masks_match_mentzer_spec():
    """(2, 3, 3): the previous-channel slice fully visible; in the current slice the row above and the tap
    left of the centre (plus the centre for B)."""
    previous = [(0, i, j) for i in range(3) for j in range(3)]
    current_a = [(1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 1, 0)]
    assert mask_taps(channel_causal_mask((2, 3, 3), include_centre=False)) == tuple(previous + current_a)
    assert mask_taps(channel_causal_mask((2, 3, 3), include_centre=True)) == tuple(previous + current_a + [(1, 1, 1)])
    assert channel_causal_mask().sum() == 13 and channel_causal_mask(include_centre=True).sum() == 14
    np.testing.assert_array_equal(MaskedConv3D(1, mask_type="A").mask(), channel_causal_mask())
    np.testing.assert_array_equal(MaskedConv3D(1, mask_type="B").mask(), channel_causal_mask(include_centre=True))
    # Deeper kernels: every earlier slice visible.
    deep = channel_causal_mask((3, 5, 5))
    assert deep[:2].all() and deep[2].sum() == 12 and deep.dtype == np.float32
    with pytest.raises(ValueError):
        channel_causal_mask((3, 3))


def test_raster_and_checkerboard_tap_sets():
    assert mask_taps(raster_mask((3, 3), (1, 1), include_centre=False)) == ((0, 0), (0, 1), (0, 2), (1, 0))
    assert mask_taps(raster_mask((3, 3), (1, 1), include_centre=True)) == ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1))
    assert mask_taps(raster_mask((1, 3), (0, 1), include_centre=False)) == ((0, 0),)
    assert mask_taps(checkerboard_mask((3, 3))) == ((0, 1), (1, 0), (1, 2), (2, 1))  # the 4 edge-neighbours
    board = checkerboard_mask((5, 5))
    assert board.sum() == 12 and board[2, 2] == 0 and board[0, 1] == 1 and board[1, 1] == 0
    assert checkerboard_mask((3, 3, 3)).sum() == 14  # any number of axes: odd offset sum (6 + 8 taps)
    with pytest.raises(ValueError):
        checkerboard_mask((2, 3))
    with pytest.raises(ValueError):
        raster_mask((3, 3), (3, 1), include_centre=True)
    np.testing.assert_array_equal(mask_taps(np.array([[0, 2], [1, 0]])), ((0, 1), (1, 0)))  # row-major
    assert raster_mask is masks.raster_mask  # lcomp.nn re-exports the one implementation


def _causal_stack(x, kernels, masks_, pads):
    """Mask A then mask B layers (ReLU between), as a context model stacks them."""
    for i, (kernel, mask) in enumerate(zip(kernels, masks_)):
        x = im2col_conv(x, kernel, pads, taps=mask_taps(mask), precision=lax.Precision.HIGHEST)
        if i < len(kernels) - 1:
            x = jax.nn.relu(x) + 0.1 * x
    return x


@pytest.mark.parametrize(
    "spatial,kernel_size,make_mask,centre",
    [
        ((5, 6), (3, 3), lambda b: raster_mask((3, 3), (1, 1), b), (1, 1)),
        ((4, 5), (5, 5), lambda b: raster_mask((5, 5), (2, 2), b), (2, 2)),
        ((3, 4, 4), (2, 3, 3), lambda b: channel_causal_mask((2, 3, 3), b), (1, 1, 1)),
    ],
)
def test_causality_by_perturbation(spatial, kernel_size, make_mask, centre):
    """Changing the input at one position never changes outputs at that position or raster-earlier ones."""
    pads = tuple((c, k - 1 - c) for c, k in zip(centre, kernel_size))  # output position aligned with input
    rng = np.random.default_rng(0)
    kernels = [jnp.asarray(rng.normal(size=(*kernel_size, 2, 3)), jnp.float32)]
    kernels += [jnp.asarray(rng.normal(size=(*kernel_size, 3, 3)), jnp.float32)] * 2
    layer_masks = [make_mask(False), make_mask(True), make_mask(True)]
    fn = jax.jit(lambda v: _causal_stack(v, kernels, layer_masks, pads))
    x = jnp.asarray(rng.normal(size=(1, *spatial, 2)), jnp.float32)
    base = np.asarray(fn(x))
    positions = list(itertools.product(*map(range, spatial)))
    for p in positions:
        changed = np.asarray(fn(x.at[(0, *p)].add(3.0)))
        differs = np.any(changed != base, axis=(0, -1))
        for q in positions:
            if q <= p:  # q precedes p in raster order, or is p itself (mask A first layer)
                assert not differs[q], (p, q)
        next_position = positions.index(p) + 1
        if next_position < len(positions) and positions[next_position][:-1] == p[:-1]:
            assert differs[positions[next_position]], p  # the right neighbour reads p (the mask is not empty)


def test_checkerboard_reads_only_the_other_colour():
    rng = np.random.default_rng(1)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.float32)
    taps = mask_taps(checkerboard_mask((3, 3)))
    fn = jax.jit(lambda v: im2col_conv(v, kernel, ((1, 1), (1, 1)), taps=taps))
    x = jnp.asarray(rng.normal(size=(1, 5, 6, 2)), jnp.float32)
    base = np.asarray(fn(x))
    colour = np.add.outer(np.arange(5), np.arange(6)) % 2
    for a, b in itertools.product(range(5), range(6)):
        differs = np.any(np.asarray(fn(x.at[0, a, b].add(1.0))) != base, axis=(0, -1))
        assert not np.any(differs & (colour == colour[a, b]))  # nothing of its own colour
        assert np.any(differs)


# ----------------------------------------------------------------------------------------------------
# Masked convolutions


def _dependency(fn, x):
    """Boolean [out position..., in position...] map: does output (all channels) depend on input?"""
    jac = jax.jacrev(fn)(x)  # out.shape + x.shape
    out_rank = fn(x).ndim
    # Reduce over batch and channel axes of both sides.
    jac = jnp.abs(jac)
    jac = jac.sum(axis=(0, out_rank - 1))  # out batch and out channel
    return np.asarray(jac.sum(axis=(jac.ndim - x.ndim, jac.ndim - 1)) > 0)


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("kernel_size", [(3, 3), (5, 5), (1, 3)])
def test_masked_conv2d_depends_exactly_on_raster_past(mask_type, kernel_size):
    H, W = 5, 6
    layer = MaskedConv2D(3, kernel_size=kernel_size, mask_type=mask_type)
    x = jax.random.normal(jax.random.key(0), (1, H, W, 2))
    params = layer.init(jax.random.key(1), x)
    dep = _dependency(lambda v: layer.apply(params, v), x)
    kh, kw = kernel_size
    for (i, j), (a, b) in itertools.product(itertools.product(range(H), range(W)), repeat=2):
        in_window = abs(a - i) <= kh // 2 and abs(b - j) <= kw // 2
        before = (a, b) < (i, j) or (mask_type == "B" and (a, b) == (i, j))
        assert dep[i, j, a, b] == (in_window and before), (i, j, a, b)


def test_masked_conv2d_stack_is_strictly_causal_and_masked_weights_get_no_gradient():
    first = MaskedConv2D(4, mask_type="A")
    second = MaskedConv2D(2, kernel_size=(3, 3), mask_type="B")
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 1))
    p1 = first.init(jax.random.key(1), x)
    p2 = second.init(jax.random.key(2), first.apply(p1, x))
    fn = lambda v: second.apply(p2, jax.nn.relu(first.apply(p1, v)))
    dep = _dependency(fn, x)
    for i, j, a, b in itertools.product(range(5), repeat=4):
        if (a, b) >= (i, j):
            assert not dep[i, j, a, b]
    grad = jax.grad(lambda p: jnp.sum(first.apply(p, x) ** 2))(p1)["params"]["kernel"]
    mask = first.mask()
    assert np.all(np.asarray(grad)[mask == 0] == 0)
    assert np.all(np.abs(np.asarray(grad)[mask == 1]) > 0)


@pytest.mark.parametrize(
    "layer,shape,dims",
    [
        (MaskedConv2D(4, (3, 3), "A"), (2, 6, 5, 3), ("NHWC", "HWIO", "NHWC")),
        (MaskedConv2D(4, (7, 7), "B", padding=((3, 3), (3, 3))), (1, 9, 8, 2), ("NHWC", "HWIO", "NHWC")),
        (MaskedConv3D(4, (2, 3, 3), "A"), (2, 5, 6, 6, 1), ("NDHWC", "DHWIO", "NDHWC")),
        (MaskedConv3D(3, (4, 5, 5), "B", padding="CAUSAL"), (1, 5, 6, 7, 2), ("NDHWC", "DHWIO", "NDHWC")),
    ],
)
def test_masked_conv_equals_convolution_with_masked_kernel(layer, shape, dims):
    x = jax.random.normal(jax.random.key(0), shape)
    params = layer.init(jax.random.key(1), x)
    params = jax.tree_util.tree_map(lambda a: a + 0.1, params)  # non-zero bias too
    p = params["params"]
    mask = jnp.asarray(layer.mask())[..., None, None]
    pads = layer._padding() if isinstance(layer, MaskedConv3D) else layer.padding

    def reference(kernel, bias, v):
        y = lax.conv_general_dilated(v, kernel * mask, (1,) * (v.ndim - 2), pads, dimension_numbers=dims,
                                     precision=lax.Precision.HIGHEST)
        return y + bias

    np.testing.assert_allclose(layer.apply(params, x), reference(p["kernel"], p["bias"], x), atol=1e-4)
    g = jax.grad(lambda k: jnp.sum(jnp.sin(layer.apply({"params": {"kernel": k, "bias": p["bias"]}}, x))))(p["kernel"])
    g_ref = jax.grad(lambda k: jnp.sum(jnp.sin(reference(k, p["bias"], x))))(p["kernel"])
    np.testing.assert_allclose(g, g_ref, atol=1e-4)


def test_mentzer_3d_masks_match_spec():
    mask_a = raster_mask((2, 3, 3), (1, 1, 1), include_centre=False)
    mask_b = raster_mask((2, 3, 3), (1, 1, 1), include_centre=True)
    expected_current_a = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], np.float32)
    np.testing.assert_array_equal(mask_a[0], np.ones((3, 3)))  # previous channel fully visible
    np.testing.assert_array_equal(mask_a[1], expected_current_a)
    expected_current_b = expected_current_a.copy()
    expected_current_b[1, 1] = 1
    np.testing.assert_array_equal(mask_b[1], expected_current_b)
    assert mask_a.sum() == 13 and mask_b.sum() == 14  # thesis: flat index < 14 / <= 14 of 27 (1-based)
    np.testing.assert_array_equal(MaskedConv3D(1, mask_type="A").mask(), mask_a)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv3d_depends_exactly_on_raster_past(mask_type):
    D, H, W = 3, 4, 4
    layer = MaskedConv3D(2, kernel_size=(2, 3, 3), mask_type=mask_type, padding="CAUSAL")
    x = jax.random.normal(jax.random.key(0), (1, D, H, W, 1))
    params = layer.init(jax.random.key(1), x)
    out = layer.apply(params, x)
    assert out.shape == (1, D, H, W, 2)
    dep = _dependency(lambda v: layer.apply(params, v), x)
    positions = list(itertools.product(range(D), range(H), range(W)))
    for q, p in itertools.product(positions, repeat=2):
        in_window = q[0] - 1 <= p[0] <= q[0] and abs(p[1] - q[1]) <= 1 and abs(p[2] - q[2]) <= 1
        before = p < q or (mask_type == "B" and p == q)
        assert dep[q + p] == (in_window and before), (q, p)


def test_masked_conv3d_valid_padding_shape():
    layer = MaskedConv3D(5, mask_type="B")  # Mentzer: VALID, caller pads
    x = jnp.ones((2, 6, 7, 8, 3))
    params = layer.init(jax.random.key(0), x)
    assert layer.apply(params, x).shape == (2, 5, 5, 6, 5)


def test_mask_type_is_validated():
    layer = MaskedConv2D(1, mask_type="C")
    with pytest.raises(ValueError):
        layer.init(jax.random.key(0), jnp.ones((1, 3, 3, 1)))


# ----------------------------------------------------------------------------------------------------
# Blocks


@pytest.mark.parametrize(
    "size,kernel,stride,padding",
    [
        ((2, 2), (3, 3), 1, "SAME"),  # tiny map: im2col forward
        ((4, 4), (3, 3), 2, "SAME"),
        ((5, 7), (3, 3), 2, "SAME"),  # odd sizes: TF-style bottom/right padding
        ((12, 10), (3, 3), 1, "SAME"),  # large map: native forward, im2col gradient
        ((17, 12), (3, 3), 2, "SAME"),
        ((9, 9), (1, 1), 1, "SAME"),  # plain matmul
        ((16, 16), (2, 2), 2, "SAME"),
        ((12, 13), (5, 5), 1, "VALID"),
        ((16, 16), (8, 8), 4, ((2, 2), (2, 2))),  # Li et al.'s Caffe-style first layer
        ((9, 11), (1, 1), 2, "SAME"),
    ],
)
def test_conv2d_matches_lax_values_and_gradients(size, kernel, stride, padding):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    w = jax.random.normal(jax.random.key(1), (*kernel, 3, 5))
    ref = lambda a, b: lax.conv_general_dilated(
        a, b, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST
    )
    y_ref = ref(x, w)
    g = jax.random.normal(jax.random.key(2), y_ref.shape)
    grads_ref = jax.vjp(ref, x, w)[1](g)
    for method in ("auto", "im2col", "native"):
        y = conv2d(x, w, stride, padding, method=method)
        assert y.shape == y_ref.shape
        np.testing.assert_allclose(y, y_ref, atol=1e-4, rtol=1e-5)
        grads = jax.vjp(lambda a, b: conv2d(a, b, stride, padding, method=method), x, w)[1](g)
        for got, want in zip(grads, grads_ref):
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
    # Jitted and under vmap too.
    np.testing.assert_allclose(jax.jit(lambda a, b: conv2d(a, b, stride, padding))(x, w), y_ref, atol=1e-4)
    np.testing.assert_allclose(jax.vmap(lambda a: conv2d(a, w, stride, padding))(x[:, None])[:, 0], y_ref, atol=1e-4)


def test_conv2d_module_parameters_match_flax_conv():
    x = jnp.ones((1, 8, 8, 3))
    ours = Conv2D(4, (3, 3), strides=2).init(jax.random.key(0), x)["params"]
    flax_params = nn.Conv(4, (3, 3), strides=2).init(jax.random.key(0), x)["params"]
    assert jax.tree_util.tree_map(jnp.shape, ours) == jax.tree_util.tree_map(jnp.shape, flax_params)
    y = Conv2D(4, (3, 3), strides=2).apply({"params": flax_params}, x)
    np.testing.assert_allclose(y, nn.Conv(4, (3, 3), strides=2).apply({"params": flax_params}, x), atol=1e-5)


def test_depth_to_space_tensorflow_channel_order():
    n, h, w, b, c = 2, 3, 4, 2, 5
    x = np.random.default_rng(0).normal(size=(n, h, w, b * b * c)).astype(np.float32)
    y = np.asarray(depth_to_space(jnp.asarray(x), b))
    assert y.shape == (n, h * b, w * b, c)
    for hh, ww, i, j in itertools.product(range(h), range(w), range(b), range(b)):
        np.testing.assert_array_equal(y[:, hh * b + i, ww * b + j, :], x[:, hh, ww, (i * b + j) * c:(i * b + j + 1) * c])


@pytest.mark.parametrize("block", [2, 3])
def test_space_to_depth_is_exact_inverse(block):
    x = jax.random.normal(jax.random.key(0), (2, 6, 12, block * block * 2))
    np.testing.assert_array_equal(depth_to_space(space_to_depth(x, block), block), x)
    np.testing.assert_array_equal(space_to_depth(depth_to_space(x, block), block), x)
    with pytest.raises(ValueError):
        space_to_depth(jnp.ones((1, 5, 6, 1)), 2)
    with pytest.raises(ValueError):
        depth_to_space(jnp.ones((1, 2, 2, 3)), 2)


def test_residual_block_variants():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    block = ResidualBlock(hidden_features=6)
    params = block.init(jax.random.key(1), x)
    y = block.apply(params, x)
    assert y.shape == x.shape
    # Zeroing the second convolution leaves exactly the skip connection.
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, params)
    np.testing.assert_array_equal(block.apply(zeroed, x), x)
    li = ResidualBlock(activation_before_add=True, activation_after_add=True)
    assert np.all(np.asarray(li.apply(li.init(jax.random.key(2), x), x)) >= 0)
    bn = ResidualBlock(use_batch_norm=True)
    variables = bn.init(jax.random.key(3), x)
    y, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    assert y.shape == x.shape and "batch_stats" in updates
    with pytest.raises(ValueError):
        ResidualBlock(features=3).init(jax.random.key(4), x)


def test_subpixel_upsample():
    layer = SubpixelUpsample(3, factor=2)
    x = jnp.ones((1, 4, 5, 7))
    params = layer.init(jax.random.key(0), x)
    assert params["params"]["conv"]["kernel"].shape == (3, 3, 7, 12)
    assert layer.apply(params, x).shape == (1, 8, 10, 3)
