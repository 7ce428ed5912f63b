"""mentzer2018: causal 3D context model, wavefront schedule, masks, exact tables, real files, two optimizers."""

import itertools
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcomp import configs, container, data, models, train
from lcomp.codecs import registry
from lcomp.codecs.mentzer2018 import importance
from lcomp.entropy.context3d import (
    MASK_A,
    MASK_B,
    ContextModel,
    ContextModelConfig,
    Wavefront,
    front_range,
    input_values,
    pad_value,
)
from lcomp.entropy import schedules
from lcomp.errors import BitstreamError, ConfigError, LcompError, ModelMismatchError

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_STEPS = ["--config.train.num_steps=3", "--config.train.progress=False", "--config.train.checkpoint_every=3"]


# --- the dependency set of spec 5.4 ---------------------------------------------------------------------------


def _moves(mask):
    """Offsets (source - symbol) that one masked (2, 3, 3) layer reads, relative to its centre (1, 1, 1)."""
    return {(kd - 1, kh - 1, kw - 1) for kd, kh, kw in zip(*np.nonzero(mask))}


def _reachable():
    """Offsets a 4-layer stack (A, B, B, B) reads: the Minkowski sum of the layers' moves."""
    reach = _moves(MASK_A)
    for _ in range(3):
        reach = {tuple(np.add(a, b)) for a in reach for b in _moves(MASK_B)}
    return reach


def _spec_offsets():
    """Spec 5.4's closed form, as offsets (dd, dh, dw) = source - symbol."""
    out = set()
    for dh, dw in itertools.product(range(-4, 5), repeat=2):
        if (-4 <= dh <= -1 and -4 <= dw <= -dh) or (dh == 0 and -4 <= dw <= -1):
            out.add((0, dh, dw))
        for k in range(1, 5):
            if dh <= k and 2 * dh + dw <= 3 * k and abs(dh) <= 4 and abs(dw) <= 4:
                out.add((-k, dh, dw))
    return out


#: Offsets spec 5.4's closed form admits that no stack of the four masks reaches (its inequalities are an
#: over-approximation: with d - 1 and dw = 4 every move must step right, and in-channel right steps go up).
SPEC_EXTRA = {(-2, 1, 4), (-1, -1, 4), (-1, 0, 3)}


def test_the_spec_dependency_set_is_what_the_masks_reach():
    reach = _reachable()
    assert reach == _spec_offsets() - SPEC_EXTRA and len(reach) == 294
    dd, dh, dw = np.asarray(sorted(reach)).T
    assert (dd.min(), dh.min(), dw.min(), dh.max(), dw.max(), dd.max()) == (-4, -4, -4, 4, 4, 0)  # (5, 9, 9) box
    assert np.all(4 * dd + 2 * dh + dw < 0)  # every source lies on an earlier front


def _random_context_model(features=6, seed=0):
    model = ContextModel(ContextModelConfig(features=features, num_centers=6, logit_relu=False))
    params = model.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 0.25, p.shape) + (0.3 if p.ndim == 1 else 0.0),
                                                jnp.float32), params)
    centers = jnp.asarray([-2.0, -1.1, -0.3, 0.4, 1.2, 2.1], jnp.float32)
    return model, params, centers


def test_causality_and_receptive_field_of_the_context_model():
    """Changing one symbol never changes the logits of a symbol at an earlier or the same front (nor at an
    earlier (channel, row, column) position), and the positions it reaches are exactly spec 5.4's set."""
    model, params, centers = _random_context_model()
    shape = (5, 9, 9)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 6, shape)
    p = (0, 4, 4)
    volumes = [base]
    for delta in (1, 2, 3, 4, 5):
        changed = base.copy()
        changed[p] = (base[p] + delta) % 6
        volumes.append(changed)
    volumes = jnp.asarray(np.stack(volumes))
    pad = pad_value(centers)
    exact_logits = np.asarray(jax.jit(model.logits)(params, input_values(centers, volumes), pad))
    float_logits = np.asarray(jax.jit(model.float_logits)(params, centers[volumes], centers[0]))
    d, h, w = np.indices(shape)
    front = 4 * d + 2 * h + w
    raster = np.ravel_multi_index((d, h, w), shape)
    for logits, is_exact in ((exact_logits, True), (float_logits, False)):
        moved = np.any(logits[1:] != logits[:1], axis=(0, -1))  # (5, 9, 9): whose logits changed
        assert not np.any(moved & (front <= front[p])), "a symbol's logits depend on a later or simultaneous one"
        assert not np.any(moved & (raster <= raster[p]))
        offsets = {tuple(int(v) for v in np.subtract(p, q)) for q in zip(*np.nonzero(moved))}
        assert offsets <= _reachable()
        if not is_exact:  # the float twin has no rounding that could hide a dependency: the field is exact
            assert offsets == _reachable()
        else:
            assert len(offsets) >= 0.8 * len(_reachable())


def test_perturbing_every_symbol_never_reaches_back_in_the_wavefront():
    """Property over every position of a small volume (batched): sources only ever affect later fronts."""
    model, params, centers = _random_context_model(seed=2)
    shape = (3, 4, 5)
    rng = np.random.default_rng(2)
    base = rng.integers(0, 6, shape)
    positions = list(np.ndindex(*shape))
    volumes = np.repeat(base[None], len(positions) + 1, axis=0)
    for i, p in enumerate(positions):
        volumes[i + 1][p] = (base[p] + 1 + rng.integers(0, 5)) % 6
    logits = np.asarray(jax.jit(model.logits)(params, input_values(centers, jnp.asarray(volumes)), pad_value(centers)))
    front = np.fromfunction(lambda d, h, w: 4 * d + 2 * h + w, shape)
    for i, p in enumerate(positions):
        moved = np.any(logits[i + 1] != logits[0], axis=-1)
        assert not np.any(moved & (front <= front[p])), p


def test_the_wavefront_never_schedules_a_symbol_before_its_sources():
    offsets = np.asarray(sorted(_spec_offsets()))
    schedule = schedules.wavefront(6, 7, 9)
    schedule.check_dependencies(offsets)
    assert len(schedule.passes) == 4 * 5 + 2 * 6 + 9
    assert len(schedules.wavefront(32, 64, 96).passes) == 346  # a Kodak latent
    with pytest.raises(ConfigError):  # the check has teeth: t = 3c + 2h + w is not a valid order
        schedules.wavefront(6, 7, 9, weights=(3, 2, 1)).check_dependencies(offsets)


# --- masks and the quantizer ----------------------------------------------------------------------------------


def test_mask_semantics_of_both_variants():
    k = 8
    y = jnp.asarray([0.0, 0.3, 1.0, 2.5, 7.99, 8.0])
    code = np.asarray(importance.mask(y, k, "code"))
    thesis = np.asarray(importance.mask(y, k, "thesis"))
    np.testing.assert_allclose(code.sum(-1), np.asarray(y), atol=1e-6)  # sum_k m_k = y
    assert np.all((code > 0) == (thesis > 0))  # the same channels are in use ...
    assert set(np.unique(thesis)) <= {0.0, 1.0}  # ... thesis: binary
    np.testing.assert_array_equal(code[3], [1, 1, 0.5, 0, 0, 0, 0, 0])  # one fractional channel, no ceiling
    np.testing.assert_array_equal(np.asarray(importance.counts(jnp.asarray(code))), [0, 1, 1, 3, 8, 8])
    np.testing.assert_array_equal(np.asarray(importance.counts(jnp.asarray(code))), np.ceil(np.asarray(y)))
    # thesis: the ceiling's gradient is the identity, so both variants have the soft ramp's gradient
    g_code = jax.grad(lambda v: jnp.sum(importance.mask(v, k, "code") * jnp.arange(k)))(y)
    g_thesis = jax.grad(lambda v: jnp.sum(importance.mask(v, k, "thesis") * jnp.arange(k)))(y)
    np.testing.assert_allclose(g_code, g_thesis)
    with pytest.raises(ValueError):
        importance.mask(y, k, "other")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny mentzer2018 model (initial parameters, exported as a model folder): coding, not quality.
    Training with the engine is tested below; a trained model codes through the very same functions."""
    path = tmp_path_factory.mktemp("m18tiny")
    cfg = configs.load_config("mentzer2018:tiny")
    codec = registry.create(cfg.codec, cfg.model)
    example = {"image": np.zeros((1, 32, 32, 3), np.uint8)}
    variables = jax.jit(lambda key: codec.init(key, example))(jax.random.key(0))  # one compilation
    models.save_model(path, cfg, variables)
    return models.load_model(path), path


@pytest.fixture(scope="module")
def photo():
    """A crop of a real photograph with flat and busy regions, of a size that needs padding."""
    return np.ascontiguousarray(data.EmbeddedSource(split="eval")[0][40:140, 60:190])  # 100 x 130


@pytest.mark.parametrize("variant", ["code", "thesis"])
def test_unsent_symbols_are_the_center_nearest_zero(tiny_model, photo, variant):
    model, _ = tiny_model
    codec = registry.create("mentzer2018", configs.apply_overrides(model.config.model.copy_and_resolve_references(),
                                                                    [f"--config.mask={variant}"]))
    v = model.variables
    padded, _ = data.pad_to_multiple(photo, 8)
    raw, counts = codec._analyse(v["params"]["autoencoder"], v["state"]["batch_stats"], jnp.asarray(padded)[None])
    raw = np.moveaxis(np.asarray(raw[0]), -1, 0)
    symbols, sent, counts2 = codec.analyse(v, photo)
    np.testing.assert_array_equal(np.asarray(counts[0]), counts2)
    assert np.all(raw[~sent] == codec.zero_symbol(v["params"]["autoencoder"]["centers"]))
    np.testing.assert_array_equal(symbols[sent], raw[sent])
    assert 0 < sent.mean() < 1


# --- exact tables: dense pass == wavefront ---------------------------------------------------------------------


def _recording(tables, log):
    def record(symbols, coding_pass, where):
        freqs = tables(symbols, coding_pass, where)
        log.append((coding_pass.step, np.asarray(freqs).copy()))
        return freqs

    return record


def test_dense_pass_tables_equal_wavefront_tables_exactly(tiny_model, photo):
    model, _ = tiny_model
    codec, v = model.codec, model.variables
    symbols, sent, _ = codec.analyse(v, photo)
    schedule = codec.schedule(symbols.shape)
    dense_log, wave_log = [], []
    dense = codec.dense_tables(v, sent)
    full = dense(symbols)
    streams_dense, est_dense = schedules.encode(
        schedule, symbols, tables=_recording(lambda s, p, where: full[where], dense_log), sent=sent)
    streams_wave, est_wave = schedules.encode(
        schedule, symbols, tables=_recording(codec.wavefront_tables(v, sent), wave_log), sent=sent)
    assert len(dense_log) == len(wave_log) > 0
    for (step_a, a), (step_b, b) in zip(dense_log, wave_log):
        assert step_a == step_b
        np.testing.assert_array_equal(a, b)
    assert streams_dense == streams_wave and est_dense == est_wave
    # ... and the raw logit indices of every symbol, sent or not, on a random-weight model (a denser test).
    model3, params, centers = _random_context_model(features=8, seed=4)
    rng = np.random.default_rng(4)
    volume = rng.integers(0, 6, (4, 5, 7)).astype(np.int32)
    dense_index = np.asarray(model3.logit_index(model3.logits(params, input_values(centers, jnp.asarray(volume)[None]),
                                                               pad_value(centers))))[0]
    wave = Wavefront(model3, params, np.asarray(centers), volume.shape, 0.0)
    first, last = front_range(*volume.shape)
    assert (wave.first, wave.last) == (first, last) == (-21, 4 * 3 + 2 * 4 + 6)
    seen = 0
    for t in range(first, last + 1):
        rows = wave.step(t, volume[tuple(wave.positions(t - 1))])
        d, h, w = wave.positions(t)
        assert np.all(4 * d + 2 * h + w == t)
        np.testing.assert_array_equal(rows, dense_index[d, h, w])
        seen += d.size
    assert seen == volume.size


def test_exact_model_is_close_to_its_float_twin():
    model = ContextModel(ContextModelConfig(features=8, num_centers=6))
    params = jax.tree.map(lambda p: p + 0.05 if p.ndim == 1 else p, model.init(jax.random.key(5)))
    centers = jnp.asarray([-2.0, -1.1, -0.3, 0.4, 1.2, 2.1], jnp.float32)
    volume = jnp.asarray(np.random.default_rng(5).integers(0, 6, (2, 4, 6, 6)))
    a = np.asarray(model.logits(params, input_values(centers, volume), pad_value(centers)))
    b = np.asarray(model.float_logits(params, centers[volume], centers[0]))
    assert np.max(np.abs(a - b)) < 0.25 and np.mean(np.abs(a - b)) < 0.05


# --- real files -----------------------------------------------------------------------------------------------


def test_roundtrip_is_bit_exact(tiny_model, photo):
    model, _ = tiny_model
    codec, v = model.codec, model.variables
    result = codec.compress(v, photo)
    decoded = codec.decompress(v, result.data)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    symbols, sent, _ = codec.analyse(v, photo)
    volume, _ = codec.decode_symbols(v, result.data)
    zero = codec.zero_symbol(v["params"]["autoencoder"]["centers"])
    np.testing.assert_array_equal(volume, np.where(sent, symbols, zero))
    # The decoded pixels are the decoder network on the encoder's own quantized latents.
    expected = codec._synthesise(v["params"]["autoencoder"], v["state"]["batch_stats"],
                                 jnp.asarray(np.moveaxis(volume, 0, -1))[None])
    from lcomp.codecs.mentzer2018.network import to_u8

    np.testing.assert_array_equal(decoded, to_u8(expected[0])[: photo.shape[0], : photo.shape[1]])
    box = container.unpack(result.data)
    assert box.part_names == ("mask", "symbols")


def test_file_size_within_one_percent_of_the_estimate(tiny_model):
    model, _ = tiny_model
    image = np.ascontiguousarray(data.EmbeddedSource(split="eval")[0][:256, :384])
    result = model.codec.compress(model.variables, image)
    header_bits = 8 * container.header_bytes(container.unpack(result.data))
    payload_bits = 8 * len(result.data) - header_bits
    assert result.estimated_bits > 5000
    assert abs(payload_bits - result.estimated_bits) <= 0.01 * result.estimated_bits, (payload_bits, result.estimated_bits)


_DECODE_SCRIPT = """
import sys, numpy as np, jax
from lcomp import models
model = models.load_model({workdir!r})
blob = open({path!r}, 'rb').read()
np.save({out!r}, model.codec.decompress(model.variables, blob))
np.save({sym_out!r}, model.codec.decode_symbols(model.variables, blob)[0])
print(jax.device_count())
"""


@pytest.mark.parametrize(
    "xla_flags, devices",
    [
        ("--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", 1),
        ("--xla_force_host_platform_device_count=3", 3),
    ],
)
def test_same_symbols_and_pixels_whatever_the_thread_or_device_count(tiny_model, photo, tmp_path, xla_flags, devices):
    model, workdir = tiny_model
    path = tmp_path / "x.lcomp"
    path.write_bytes(model.codec.compress(model.variables, photo).data)  # encoded here: 4 devices, 2 threads
    here = model.codec.decompress(model.variables, path.read_bytes())
    script = _DECODE_SCRIPT.format(workdir=str(workdir), path=str(path), out=str(tmp_path / "o.npy"),
                                   sym_out=str(tmp_path / "s.npy"))
    env = dict(os.environ, XLA_FLAGS=xla_flags, OMP_NUM_THREADS="1" if devices == 1 else "2")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(devices)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), here)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), model.codec.decode_symbols(model.variables, path.read_bytes())[0])


def test_damaged_files_end_in_an_lcomp_error_quickly(tiny_model, photo):
    model, _ = tiny_model
    codec, v = model.codec, model.variables
    small = np.ascontiguousarray(photo[:48, :64])
    blob = codec.compress(v, small).data
    codec.decompress(v, blob)  # compiled
    rng = np.random.default_rng(3)
    box = container.unpack(blob)
    cases = []
    for case in range(320):
        damaged = bytearray(blob)
        kind = case % 4
        if kind == 0:
            damaged = damaged[: rng.integers(1, len(damaged))]
        elif kind == 1:
            damaged[rng.integers(0, len(damaged))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # a valid container whose parts are damaged (the CRC cannot help)
            part = rng.integers(0, 2)
            parts = [(n, bytearray(box.part(n))) for n in box.part_names]
            if len(parts[part][1]):
                parts[part][1][rng.integers(0, len(parts[part][1]))] ^= 1 << int(rng.integers(0, 8))
            damaged = container.pack(container.Container(box.header, tuple((n, bytes(b)) for n, b in parts)))
        else:  # parts cut or extended, container rebuilt
            parts = [(n, box.part(n)) for n in box.part_names]
            n, b = parts[rng.integers(0, 2)]
            b = b[: rng.integers(0, max(len(b), 1))] if rng.random() < 0.5 else b + bytes(rng.integers(0, 256, 4).tolist())
            parts = [(m, b if m == n else c) for m, c in parts]
            damaged = container.pack(container.Container(box.header, tuple(parts)))
        cases.append(bytes(damaged))
    slowest = 0.0
    for damaged in cases:
        if damaged == blob:
            continue
        start = time.perf_counter()
        with pytest.raises(LcompError):
            codec.decompress(v, damaged)
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 2.0, slowest
    other = jax.tree.map(lambda x: np.asarray(x) * 1.0001, v)
    with pytest.raises(ModelMismatchError):
        codec.decompress(other, blob)
    odd = container.pack(container.Container(box.header, (("symbols", box.part("symbols")),)))
    with pytest.raises(BitstreamError):
        codec.decompress(v, odd)


# --- training: two optimizer states, per-group objectives -------------------------------------------------------


def _changed(a, b):
    return any(np.any(np.asarray(x) != np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_two_optimizer_states_advance_independently_with_their_own_rates(tmp_path):
    """The engine, 2 devices: each group has its own Adam state and learning rate, in one jitted step; the
    BatchNorm statistics are those of the whole (sharded) batch, as the codec computes them on one device."""
    cfg = configs.load_config("mentzer2018:tiny", [
        "--config.train.progress=False", "--config.optim.autoencoder.learning_rate=0.0",
        "--config.optim.context_model.learning_rate=0.01", "--config.model.pc_loss=own",
        "--config.model.distortion=mse"])  # MSE: a faster compilation; the objectives' routing is the same
    trainer = train.Trainer(cfg, tmp_path, devices=jax.devices()[:2])
    state = trainer.init_state()
    params0 = jax.device_get(state["params"])
    codec_state0 = jax.device_get(state["state"])
    state, metrics = trainer.train_step(state, trainer.batches.batch(0))
    codec_state1 = jax.device_get(state["state"])
    state, metrics = trainer.train_step(state, trainer.batches.batch(1))
    params = jax.device_get(state["params"])
    assert not _changed(params0["autoencoder"], params["autoencoder"])  # learning rate 0
    assert _changed(params0["context_model"], params["context_model"])
    counts = [int(np.asarray(leaf)) for leaf in jax.tree.leaves(state["opt_state"]) if np.ndim(leaf) == 0]
    assert counts and all(c == 2 for c in counts)  # each group's own Adam state counted both steps
    # Adam's first steps move a parameter by about the learning rate: the context model's own rate.
    moved = np.max(np.abs(np.asarray(params["context_model"]["logits"]["bias"])
                          - np.asarray(params0["context_model"]["logits"]["bias"])))
    assert 0.005 < moved <= 0.0201
    assert float(metrics["grad_norm/autoencoder"]) > 0 and float(metrics["grad_norm/context_model"]) > 0
    # Synced batch statistics: the 2-device step's running averages = the codec's single-device forward.
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.train.seed), 1), 0)
    _, (_, single) = jax.jit(lambda p, s, b: trainer.codec.loss(p, s, b, rng, train=True))(
        params0, codec_state0, trainer.batches.batch(0))
    for a, b in zip(jax.tree.leaves(jax.device_get(single)), jax.tree.leaves(codec_state1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_code_semantics_the_context_model_learns_only_through_the_hinge(tiny_model, photo):
    """pc_loss="total" (released code): the context model's objective is the total loss, so with the hinge
    inactive (H_soft < H_target) its gradient is exactly zero, and with the hinge active it is not.
    (pc_loss="own", the thesis, is trained in the engine test above.)"""
    cfg = configs.load_config("mentzer2018:tiny", ["--config.model.distortion=mse"])
    codec = registry.create(cfg.codec, cfg.model)
    v = tiny_model[0].variables  # the same tiny architecture (the distortion switch has no parameters)
    batch = {"image": np.stack([photo[:32, :32], photo[32:64, 32:64]])}

    @jax.jit
    def grads(variables, batch, h_target):  # everything an argument: no constant folding of the network
        codec.h_target = h_target  # traced: one compilation for every target

        def objective(cm):
            params = {"autoencoder": variables["params"]["autoencoder"], "context_model": cm}
            obj, (metrics, _) = codec.loss(params, variables["state"], batch, jax.random.key(0), train=True)
            return obj["context_model"], metrics["H_soft"]

        return jax.grad(objective, has_aux=True)(variables["params"]["context_model"])

    def norm(tree):
        return float(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))

    inactive, h_soft = grads(v, batch, jnp.float32(100.0))
    assert float(h_soft) < 100.0 and norm(inactive) == 0.0
    active, h_soft = grads(v, batch, jnp.float32(0.0))
    assert float(h_soft) > 0.0 and norm(active) > 0.0


def test_cli_compress_decompress_info(tiny_model, photo, tmp_path, capsys):
    from lcomp import cli

    model, path = tiny_model
    source, packed, out = tmp_path / "in.png", tmp_path / "x.lcomp", tmp_path / "out.png"
    data.save_image(source, photo)
    assert cli.main(["compress", "--checkpoint", str(path), str(source), str(packed)]) == 0
    assert cli.main(["decompress", "--checkpoint", str(path), str(packed), str(out)]) == 0
    np.testing.assert_array_equal(data.load_image(out), model.codec.decompress(model.variables, packed.read_bytes()))
    assert cli.main(["info", str(packed)]) == 0
    assert "mentzer2018" in capsys.readouterr().out
    assert cli.main(["cut", "--iterations", "1", str(packed), str(tmp_path / "y.lcomp")]) == 2  # not progressive


def test_without_the_mask_part_every_symbol_is_coded_and_the_pixels_are_the_same(tiny_model, photo):
    """send_mask=False (the official code's choice): no count map, masked-out symbols coded too."""
    model, _ = tiny_model
    cfg = model.config.model.copy_and_resolve_references()
    cfg.send_mask = False
    codec = registry.create("mentzer2018", cfg)
    result = codec.compress(model.variables, photo)
    assert container.unpack(result.data).part_names == ("symbols",)
    np.testing.assert_array_equal(codec.decompress(model.variables, result.data),
                                  model.codec.decompress(model.variables, model.codec.compress(model.variables, photo).data))
    with pytest.raises(BitstreamError):  # the two layouts are not interchangeable
        model.codec.decompress(model.variables, result.data)


def test_the_shipped_model_through_the_command_line(tmp_path, capsys):
    """`lcomp compress --codec mentzer2018` codes with the shipped model; `decompress` finds it from the file."""
    from lcomp import cli, metrics

    model = models.load_shipped("mentzer2018")
    image = np.ascontiguousarray(data.EmbeddedSource(split="eval")[0][:192, :256])
    source, packed, out = tmp_path / "in.png", tmp_path / "x.lcomp", tmp_path / "out.png"
    data.save_image(source, image)
    assert cli.main(["compress", "--codec", "mentzer2018", str(source), str(packed)]) == 0
    assert container.unpack(packed.read_bytes()).header.fingerprint == model.fingerprint
    assert cli.main(["decompress", str(packed), str(out)]) == 0  # no --checkpoint: the file names its model
    decoded = data.load_image(out)
    np.testing.assert_array_equal(decoded, model.codec.decompress(model.variables, packed.read_bytes()))
    # A trained model, not initial parameters: a fraction of a bit per pixel for a recognisable picture.
    bpp = 8 * packed.stat().st_size / (192 * 256)
    psnr = float(metrics.psnr(image.astype(np.float32), decoded.astype(np.float32)))
    ms_ssim = float(metrics.ms_ssim(image.astype(np.float32), decoded.astype(np.float32)))
    assert 0.05 < bpp < 1.0 and psnr > 20.0 and ms_ssim > 0.85, (bpp, psnr, ms_ssim)
