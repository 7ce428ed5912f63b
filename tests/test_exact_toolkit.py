"""lcomp.entropy's exact toolkit: worst-case bounds, exactness, causality of every mask type, L-ary tables,
and dense-pass tables == schedule tables."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcomp.entropy import exact, frequencies, schedules
from lcomp.entropy.masks import channel_causal_mask, checkerboard_mask, mask_taps, raster_mask
from lcomp.errors import ConfigError

GRID = exact.DEFAULT_GRID
LOGITS = exact.LogitGrid(steps_per_unit=8, limit=12)


def _conv_params(rng, kernel_size, c_in, c_out, scale=0.3):
    k1, k2 = jax.random.split(rng)
    return {
        "kernel": jax.random.normal(k1, (*kernel_size, c_in, c_out)) * scale,
        "bias": jax.random.normal(k2, (c_out,)) * 0.1,
    }


# --- worst-case bounds --------------------------------------------------------------------------------------


def test_conv_bound_is_taps_times_channels_times_limits():
    x = exact.exact_input(jnp.zeros((1, 5, 5, 7)), bits=4, max_abs=63 / 16)
    params = _conv_params(jax.random.key(0), (3, 3), 7, 2)
    y = exact.conv(x, params)
    assert y.bits == 4 + 8
    assert y.units == 9 * 7 * 127 * 63 + int(8.0 * 2**12)
    taps = mask_taps(raster_mask((3, 3), (1, 1), include_centre=False))
    assert exact.conv(x, params, taps=taps).units == len(taps) * 7 * 127 * 63 + int(8.0 * 2**12)


def test_check_walks_a_whole_stack_and_names_the_layer_that_could_round():
    def net(params, x, width):
        h = exact.exact_input(x, bits=0, max_abs=1)
        h = exact.relu_to_grid(exact.conv(h, params["a"], name="first"))
        return exact.conv(h, params["b"], name="second").value

    narrow = {"a": _conv_params(jax.random.key(1), (3, 3), 4, 64), "b": _conv_params(jax.random.key(2), (3, 3), 64, 8)}
    exact.check_exactness(functools.partial(net, width=64), narrow, jnp.zeros((1, 6, 6, 4)))
    wide = {"a": _conv_params(jax.random.key(1), (3, 3), 4, 512), "b": _conv_params(jax.random.key(2), (3, 3), 512, 8)}
    with pytest.raises(ConfigError, match="second"):
        exact.check_exactness(functools.partial(net, width=512), wide, jnp.zeros((1, 6, 6, 4)))


def test_add_aligns_grids_and_accumulates_bounds():
    a = exact.exact_input(jnp.ones((2,)), bits=2, max_abs=3)
    b = exact.exact_input(jnp.ones((2,)), bits=4, max_abs=1)
    s = exact.add(a, b)
    assert (s.bits, s.units) == (4, 12 * 4 + 16)
    with pytest.raises(ConfigError, match="add"):
        exact.add(exact.exact_input(jnp.ones(1), 0, 2**23), exact.exact_input(jnp.ones(1), 0, 2**23))


# --- exactness ----------------------------------------------------------------------------------------------


def test_exact_conv_equals_integer_arithmetic_in_any_summation_order():
    """The float32 result equals the float64 (exact here) sum of the grid values, however XLA blocks it."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 64, (2, 9, 11, 48)) / 16.0  # activations on 2^-4
    params = _conv_params(jax.random.key(3), (3, 3), 48, 16, scale=0.4)
    y = np.asarray(exact.conv(exact.exact_input(x, 4, 63 / 16), params).value)
    w = np.asarray(exact.quantize_weight(params["kernel"]), np.float64)
    b = np.asarray(exact.quantize_bias(params["bias"], 12), np.float64)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    reference = b + sum(
        np.einsum("nhwc,co->nhwo", xp[:, i : i + 9, j : j + 11], w[i, j]) for i in range(3) for j in range(3)
    )
    np.testing.assert_array_equal(y.astype(np.float64), reference)
    # Every output is an integer multiple of its grid.
    np.testing.assert_array_equal(np.round(y * 2**12), y * 2**12)


def test_quantizers_land_exactly_on_their_grids_and_pass_gradients_straight_through():
    w = jnp.linspace(-0.7, 0.7, 1001)
    q = exact.quantize_weight(w)
    np.testing.assert_array_equal(np.round(np.asarray(q) * 256), np.asarray(q) * 256)
    assert float(jnp.max(jnp.abs(q))) == 127 / 256
    g = jax.grad(lambda v: jnp.sum(exact.quantize_weight(v)))(jnp.array([0.1, 0.2]))
    np.testing.assert_allclose(np.asarray(g), 1.0)
    a = exact.relu_to_grid(exact.exact_input(jnp.linspace(-1, 5, 97), 8, 5)).value
    assert float(a.min()) == 0 and float(a.max()) == 63 / 16
    np.testing.assert_array_equal(np.asarray(a) * 16, np.floor(np.asarray(a) * 16))


# --- causality by perturbation, one test per mask type ------------------------------------------------------


def _influence(fn, shape, position, seed=0):
    """Boolean map of the outputs that change when the input at `position` changes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, shape).astype(np.float32)
    base = np.asarray(fn(x))
    changed = np.zeros(base.shape[:-1], bool)
    for value in (-1.0, 0.0, 1.0):
        y = x.copy()
        y[position] = value
        changed |= np.any(np.asarray(fn(y)) != base, axis=-1)
    return changed


def test_raster_mask_stack_never_lets_a_position_see_itself_or_later_ones():
    params = [_conv_params(jax.random.key(i), (3, 3), c, 8) for i, c in enumerate((1, 8, 8))]
    a = mask_taps(raster_mask((3, 3), (1, 1), False))
    b = mask_taps(raster_mask((3, 3), (1, 1), True))

    @jax.jit
    def net(x):
        h = exact.exact_input(x, 0, 1)
        for i, taps in enumerate((a, b, b)):
            h = exact.conv(h, params[i], taps=taps)
            if i < 2:
                h = exact.relu_to_grid(h)
        return h.value

    shape = (1, 7, 7, 1)
    for pos in [(0, 3, 3, 0), (0, 0, 0, 0), (0, 6, 2, 0)]:
        changed = _influence(net, shape, pos)[0]
        order = np.arange(49).reshape(7, 7)
        assert not np.any(changed[order <= order[pos[1], pos[2]]])  # itself and every earlier position


def test_checkerboard_mask_reads_only_the_other_colour():
    params = _conv_params(jax.random.key(5), (3, 3), 1, 4)
    taps = mask_taps(checkerboard_mask((3, 3)))
    parity = np.add.outer(np.arange(6), np.arange(6)) % 2

    @jax.jit
    def net(x):
        return exact.conv(exact.exact_input(x, 0, 1), params, taps=taps).value

    for pos in [(0, 2, 2, 0), (0, 2, 3, 0)]:
        changed = _influence(net, (1, 6, 6, 1), pos)[0]
        assert not np.any(changed & (parity == parity[pos[1], pos[2]]))
        assert changed.any()


def _channel_causal_net(num_layers=4, features=8, levels=6, seed=7):
    """A Mentzer-style stack over a (C, H, W) symbol volume: (2, 3, 3) channel-causal convs, A then B."""
    a = mask_taps(channel_causal_mask((2, 3, 3), include_centre=False))
    b = mask_taps(channel_causal_mask((2, 3, 3), include_centre=True))
    widths = [1] + [features] * (num_layers - 1) + [levels]
    params = [_conv_params(jax.random.key(seed + i), (2, 3, 3), widths[i], widths[i + 1]) for i in range(num_layers)]
    pads = ((1, 0), (1, 1), (1, 1))  # output (c, h, w) aligned with input (c, h, w)

    def logits(volume):
        h = exact.exact_input(jnp.asarray(volume, jnp.float32)[None, ..., None], 0, levels - 1)
        for i in range(num_layers):
            h = exact.conv(h, params[i], padding=pads, taps=a if i == 0 else b)
            if i < num_layers - 1:
                h = exact.relu_to_grid(h)
        return h.value[0]

    return jax.jit(logits), levels


def test_channel_causal_stack_respects_the_wavefront_order():
    net, levels = _channel_causal_net()
    shape = (5, 8, 8)
    rng = np.random.default_rng(1)
    volume = rng.integers(0, levels, shape).astype(np.float32)
    base = np.asarray(net(volume))
    t = np.add.outer(np.add.outer(4 * np.arange(5), 2 * np.arange(8)), np.arange(8))
    offsets = set()
    for pos in [(2, 4, 4), (0, 0, 0), (4, 7, 7), (1, 3, 6)]:
        changed = np.zeros(shape, bool)
        for value in range(levels):
            y = volume.copy()
            y[pos] = value
            changed |= np.any(np.asarray(net(y)) != base, axis=-1)
        # A symbol's change reaches only symbols strictly later on the wavefront ...
        assert not np.any(changed & (t <= t[pos])), pos
        offsets |= {tuple(np.subtract(pos, q)) for q in zip(*np.nonzero(changed))}
    # ... and the receptive field is the spec's: at most 4 channels back, 4 rows up and +-4 columns.
    offsets = np.array(sorted(offsets))
    assert offsets[:, 0].min() >= -4 and offsets[:, 1].min() >= -4 and np.abs(offsets[:, 2]).max() <= 4
    schedules.wavefront(*shape).check_dependencies(offsets)
    with pytest.raises(ConfigError):  # a schedule that codes all channels of a position together is wrong
        schedules.channel_groups(5, 8, 8, group=5).check_dependencies(offsets)


def test_wavefront_pass_count_matches_the_spec():
    # Kodak latent: K = 32 channels, 64 x 96 positions -> 4*31 + 2*63 + 96 = 346 passes, not 196,608 steps.
    assert len(schedules.wavefront(32, 64, 96).passes) == 346


# --- tables -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 6, 17])
def test_categorical_tables_sum_to_the_precision_with_every_symbol_codable(levels):
    rng = np.random.default_rng(levels)
    index = rng.integers(0, LOGITS.num_indices, (5000, levels))
    index[0] = 0
    index[1] = LOGITS.num_indices - 1
    index[2, 0], index[2, 1:] = LOGITS.num_indices - 1, 0  # one certain symbol
    freqs = frequencies.categorical_frequencies(index, 8, 12, 16)
    assert freqs.dtype == np.uint32 and np.all(freqs.sum(axis=1) == 2**16) and freqs.min() >= 1
    # Close to the float softmax of the rounded logits.
    z = (index - 12 * 8) / 8.0
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert np.abs(freqs / 2**16 - p).max() < (levels + 1) / 2**16
    # Bigger logit, no smaller frequency (within a row).
    order = np.argsort(index, axis=1, kind="stable")
    sorted_freqs = np.take_along_axis(freqs.astype(np.int64), order, axis=1)
    assert np.all(np.diff(sorted_freqs, axis=1) >= -1)


# Frozen output (the file format of L-ary symbols depends on it); the second row is checkable by hand:
# 6 equal weights share 65530 units as 10921 each + 1, the 4 leftover units go to the lowest indices.
PINNED_CATEGORICAL = [[1, 1, 65188, 2, 1, 343], [10923, 10923, 10923, 10923, 10922, 10922]]


def test_categorical_tables_are_pinned():
    index = np.array([[0, 96, 192, 100, 7, 150], [5, 5, 5, 5, 5, 5]])
    freqs = frequencies.categorical_frequencies(index, 8, 12, 16)
    assert freqs.tolist() == PINNED_CATEGORICAL
    with pytest.raises(frequencies.EntropyCodingError):
        frequencies.categorical_frequencies(np.array([[0, 193]]), 8, 12, 16)


def test_binary_table_matches_the_recurrent_coders_format():
    table = frequencies.binary_logit_table(8, 12, 16)
    assert table.shape == (193,) and table[96] == 2**15 and table[0] == 1 and table[-1] == 2**16 - 1
    assert np.all(np.diff(table) >= 0)
    assert table[96 + 8] == round(65536 / (1 + np.exp(-1.0)))


# --- dense pass == schedule -----------------------------------------------------------------------------------


def test_dense_tables_equal_wavefront_tables_and_the_file_round_trips():
    net, levels = _channel_causal_net(num_layers=3, features=6)
    shape = (3, 5, 6)
    rng = np.random.default_rng(4)
    volume = rng.integers(0, levels, shape).astype(np.int32)
    schedule = schedules.wavefront(*shape)

    def tables_from(symbols):
        index = np.asarray(LOGITS.index(net(symbols.astype(np.float32))))
        return frequencies.categorical_frequencies(index.reshape(-1, levels), 8, 12, 16).reshape(*shape, levels)

    def pass_tables(symbols, coding_pass, where):
        return tables_from(symbols)[where]

    dense = tables_from(volume)
    recorded = []
    schedules._walk(schedule, None, lambda s, p, w: recorded.append((w, pass_tables(s, p, w))) or pass_tables(s, p, w),
                    lambda p, w, f: volume[w], np.zeros_like(volume))
    for where, table in recorded:  # identical integers, pass by pass
        np.testing.assert_array_equal(table, dense[where])
    streams_dense, est_dense = schedules.encode(schedule, volume, dense_tables=tables_from)
    streams_pass, est_pass = schedules.encode(schedule, volume, tables=pass_tables)
    assert streams_dense == streams_pass and est_dense == est_pass
    decoded = schedules.decode(schedule, streams_dense, pass_tables)
    np.testing.assert_array_equal(decoded, volume)


def test_schedules_cover_every_symbol_once_and_refuse_overlaps():
    s = schedules.checkerboard_iterations(3, 1, 4, 5, 2, lambda t: f"t{t + 1:02d}")
    assert len(s.passes) == 6 and s.parts == ("t01", "t02", "t03")
    order = s.order()
    assert order[0, 0, 0, 0, 0] == 0 and order[0, 0, 0, 1, 0] == 1 and order[2, 0, 3, 4, 1] == 2 * 2 + 1
    where = np.ones((2, 2), bool)
    with pytest.raises(ConfigError, match="exactly once"):
        schedules.Schedule((2, 2), (schedules.CodingPass("a", where), schedules.CodingPass("a", where)))
