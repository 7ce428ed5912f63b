"""li2018: importance-map mask (forward and the paper's backward), binary code coded inside the mask only,
exact context models (causal, dense == wavefront), real files, staged training, damaged files."""

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
from lcomp.codecs.li2018 import importance
from lcomp.codecs.li2018.codec import PAD, UNSENT, VALUES, _inputs
from lcomp.entropy import schedules
from lcomp.entropy.context3d import ContextModel, ContextModelConfig, Wavefront, front_range
from lcomp.errors import BitstreamError, ConfigError, LcompError, ModelMismatchError
from lcomp.quantize import threshold_ste

REPO = pathlib.Path(__file__).resolve().parent.parent


def _tiny_codec(*overrides):
    cfg = configs.load_config("li2018:tiny", list(overrides))
    return cfg, registry.create(cfg.codec, cfg.model)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny stage-2 li2018 model with initial parameters (p near 0.5: about half the channels kept),
    exported as a model folder: coding, not quality. Training is tested below."""
    path = tmp_path_factory.mktemp("li18tiny")
    cfg, codec = _tiny_codec()
    variables = jax.jit(lambda key: codec.init(key, {"image": np.zeros((1, 32, 32, 3), np.uint8)}))(jax.random.key(0))
    models.save_model(path, cfg, variables)
    return models.load_model(path), path


@pytest.fixture(scope="module")
def photo():
    """A crop of a real photograph with flat and busy regions, of a size that needs padding."""
    return np.ascontiguousarray(data.EmbeddedSource(split="eval")[0][40:140, 60:190])  # 100 x 130


def _with_map_bias(model, shift):
    """The model's variables with the importance branch's last bias moved by `shift` (p lower or higher)."""
    v = jax.tree.map(np.array, model.variables)
    v["params"]["autoencoder"]["encoder"]["imp2"]["bias"] = v["params"]["autoencoder"]["encoder"]["imp2"]["bias"] + shift
    return v


# --- binarizer and mask: the spec's formulas on hand-built examples ---------------------------------------------


def test_binarizer_forward_is_a_threshold_and_its_gradient_is_one():
    e = jnp.asarray([0.0, 0.2, 0.5, 0.5001, 0.9, 1.0])
    np.testing.assert_array_equal(threshold_ste(e), [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(threshold_ste(v) * jnp.arange(6.0)))(e), np.arange(6.0))


def test_mask_forward_keeps_n_over_l_channels_per_level():
    n, levels = 16, 4  # 4 channels per level
    p = jnp.asarray([0.0, 0.24, 0.25, 0.49, 0.5, 0.75, 0.999, 1.0])
    q = np.asarray(importance.level(p, levels))
    np.testing.assert_array_equal(q, [0, 0, 1, 1, 2, 3, 3, 3])  # floor(L p), p = 1 (saturated) -> L - 1
    m = np.asarray(importance.mask(p, n, levels))
    np.testing.assert_array_equal(m.sum(-1), 4 * q)
    np.testing.assert_array_equal(m[4], [1] * 8 + [0] * 8)  # channels k < (n/L) Q are kept, the first ones
    assert m.max() == 1 and m.sum(-1).max() == n - n // levels  # never all n (p < 1)


def test_mask_backward_is_the_windowed_sum_of_the_paper():
    """dLoss/dp = L * sum of dLoss/dm_k over k in [g (Q - 1), g (Q + 1)), g = n / L (spec 3.4, Eq. 7)."""
    n, levels = 16, 4
    g = np.arange(1.0, 17.0)  # dLoss/dm_k = k + 1
    for p, window in ((0.1, range(0, 4)), (0.3, range(0, 8)), (0.6, range(4, 12)), (0.9, range(8, 16))):
        grad = jax.grad(lambda v: jnp.sum(importance.mask(v, n, levels) * g))(jnp.float32(p))
        assert float(grad) == levels * sum(g[k] for k in window), p
    # The paper's 1-based form: dm_k/dp = L where ceil(k L / n) - 1 <= L p < ceil(k L / n) + 1.
    for p in np.linspace(0.0, 0.99, 23):
        jac = np.asarray(jax.jacrev(lambda v: importance.mask(v, n, levels))(jnp.float32(p)))
        k = np.arange(1, n + 1)
        lo = np.ceil(k * levels / n) - 1
        expected = np.where((lo <= levels * p) & (levels * p < lo + 2), levels, 0)
        np.testing.assert_array_equal(jac, expected)
    # Batched maps: each position's gradient uses its own level.
    p = jnp.asarray([[0.1, 0.6]])
    grad = jax.grad(lambda v: jnp.sum(importance.mask(v, n, levels) * g))(p)
    np.testing.assert_array_equal(np.asarray(grad), [[4 * g[0:4].sum(), 4 * g[4:12].sum()]])


def test_bit_planes_round_trip_most_significant_first():
    q = np.array([[0, 1, 7], [4, 5, 6]])
    planes = importance.to_planes(q, 8)
    assert planes.shape == (3, 2, 3)
    np.testing.assert_array_equal(planes[:, 1, 0], [1, 0, 0])  # 4 = 100b
    np.testing.assert_array_equal(importance.from_planes(planes), q)


def test_levels_must_be_a_power_of_two_dividing_the_channels():
    with pytest.raises(ConfigError):
        _tiny_codec("--config.model.levels=3")
    with pytest.raises(ConfigError):
        _tiny_codec("--config.model.levels=16")  # 8 channels
    with pytest.raises(ConfigError):
        _tiny_codec("--config.model.stage=3")


# --- context models: causal, exact, dense == wavefront ---------------------------------------------------------


def _random_bit_model(features=6, seed=0):
    model = ContextModel(ContextModelConfig(features=features, num_centers=2, logit_relu=False))
    params = model.init(jax.random.key(seed))
    # Nonzero biases and larger weights, so that no layer is all zero after a ReLU and a change shows.
    params = jax.tree.map(lambda x: x * 3.0 + 0.2 if x.ndim == 1 else x * 3.0, params)
    return model, params


def test_perturbing_any_bit_never_changes_an_earlier_bits_table():
    """Property test over every position of a small volume, with unsent bits: flipping a bit (or sending or
    withholding it) changes only tables of bits at later wavefront fronts t = 4 d + 2 h + w."""
    model, params = _random_bit_model(seed=1)
    shape = (4, 4, 5)
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, shape)
    sent = rng.random(shape) < 0.7
    positions = list(np.ndindex(*shape))
    all_bits = np.repeat(bits[None], len(positions) + 1, axis=0)
    all_sent = np.repeat(sent[None], len(positions) + 1, axis=0)
    for i, p in enumerate(positions):
        if rng.random() < 0.5:
            all_bits[i + 1][p] ^= 1
            all_sent[i + 1][p] = True
        else:
            all_sent[i + 1][p] = not sent[p]
    logits = np.asarray(jax.jit(model.logits)(params, _inputs(jnp.asarray(all_bits), jnp.asarray(all_sent)),
                                              jnp.float32(PAD)))
    front = np.fromfunction(lambda d, h, w: 4 * d + 2 * h + w, shape)
    reached = 0
    for i, p in enumerate(positions):
        moved = np.any(logits[i + 1] != logits[0], axis=-1)
        assert not np.any(moved & (front <= front[p])), p
        reached += moved.sum()
    assert reached > len(positions)  # the perturbations do reach later bits: the test can see a dependency


def test_unsent_bits_are_a_third_input_value():
    assert _inputs(jnp.asarray([0, 1, 0, 1]), jnp.asarray([True, True, False, False])).tolist() == [-1.0, 1.0, 0.0, 0.0]
    assert VALUES[UNSENT] == PAD == 0.0


def test_dense_pass_tables_equal_wavefront_tables_exactly(tiny_model, photo):
    model, _ = tiny_model
    codec, v = model.codec, model.variables
    bits, q, kept = codec.analyse(v, photo)
    assert 0 < kept.mean() < 1
    cm = v["params"]["context_model"]["code"]
    volume = codec.code_model
    schedule = volume.schedule(bits.shape, "code")
    logs = ([], [])
    full = volume.dense_tables(cm, kept)(bits)

    def recording(tables, log):
        def record(symbols, coding_pass, where):
            freqs = tables(symbols, coding_pass, where)
            log.append((coding_pass.step, np.asarray(freqs).copy()))
            return freqs

        return record

    a = schedules.encode(schedule, bits, tables=recording(lambda s, p, where: full[where], logs[0]), sent=kept,
                         precision=16)
    b = schedules.encode(schedule, bits, tables=recording(volume.wavefront_tables(cm, kept), logs[1]), sent=kept,
                         precision=16)
    assert len(logs[0]) == len(logs[1]) > 0
    for (step_a, x), (step_b, y) in zip(*logs):
        assert step_a == step_b
        np.testing.assert_array_equal(x, y)
    assert a == b
    # Every bit's raw logit index, sent or not, on a random-weight model with a random mask.
    model2, params = _random_bit_model(seed=4)
    rng = np.random.default_rng(4)
    bits2 = rng.integers(0, 2, (5, 4, 6)).astype(np.int32)
    sent2 = rng.random(bits2.shape) < 0.6
    dense = np.asarray(model2.logit_index(model2.logits(params, _inputs(jnp.asarray(bits2), jnp.asarray(sent2))[None],
                                                        jnp.float32(PAD))))[0]
    wave = Wavefront(model2, params, VALUES, bits2.shape, unsent_value=PAD, pad=PAD)
    first, last = front_range(*bits2.shape)
    seen = 0
    for t in range(first, last + 1):
        d, h, w = wave.positions(t - 1)
        rows = wave.step(t, np.where(sent2[d, h, w], bits2[d, h, w], UNSENT))
        d, h, w = wave.positions(t)
        np.testing.assert_array_equal(rows, dense[d, h, w])
        seen += d.size
    assert seen == bits2.size


# --- real files -------------------------------------------------------------------------------------------------


def test_roundtrip_is_bit_exact_and_map_and_mask_agree(tiny_model, photo):
    model, _ = tiny_model
    codec, v = model.codec, model.variables
    result = codec.compress(v, photo)
    bits, q, kept = codec.analyse(v, photo)
    decoded_bits, decoded_q, header = codec.decode_code(v, result.data)
    np.testing.assert_array_equal(decoded_q, q)  # the decoder's map is the encoder's ...
    np.testing.assert_array_equal(codec.kept(decoded_q), kept)  # ... and so is the mask it rebuilds
    np.testing.assert_array_equal(decoded_bits, bits)
    decoded = codec.decompress(v, result.data)
    expected = codec._synthesise(v["params"]["autoencoder"], jnp.asarray(np.moveaxis(bits, 0, -1), jnp.float32)[None])
    from lcomp.codecs.li2018.network import to_u8

    np.testing.assert_array_equal(decoded, to_u8(expected[0])[: photo.shape[0], : photo.shape[1]])
    assert container.unpack(result.data).part_names == ("map", "code")


def test_masked_out_bits_are_never_written(tiny_model, photo):
    """A lower map keeps fewer bits, and the file shrinks with it; the estimate counts only kept bits."""
    model, _ = tiny_model
    codec = model.codec
    sizes, kept_bits = [], []
    for shift in (1.5, 0.0, -0.7, -40.0):
        v = _with_map_bias(model, shift)
        _, q, kept = codec.analyse(v, photo)
        box = container.unpack(codec.compress(v, photo).data)
        sizes.append(len(box.part("code")))
        kept_bits.append(int(kept.sum()))
    assert kept_bits[0] > kept_bits[1] > kept_bits[2] > kept_bits[3] == 0
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3] == 0  # no kept bits: an empty code stream
    # Bits outside the mask do not matter: flipping them changes neither the file nor the decoded image.
    v = model.variables
    bits, q, kept = codec.analyse(v, photo)
    full = codec.compress(v, photo).data
    original = codec._analyse

    def flipped(ae, image):
        b, level = original(ae, image)
        return jnp.where(jnp.asarray(np.moveaxis(kept, 0, -1))[None], b, 1 - b), level

    codec._analyse = flipped
    try:
        assert codec.compress(v, photo).data == full
    finally:
        codec._analyse = original


def test_file_size_within_one_percent_of_the_estimate(tiny_model):
    model, _ = tiny_model
    image = np.ascontiguousarray(data.EmbeddedSource(split="eval")[0][:256, :384])
    result = model.codec.compress(model.variables, image)
    header_bits = 8 * container.header_bytes(container.unpack(result.data))
    payload_bits = 8 * len(result.data) - header_bits
    assert result.estimated_bits > 5000
    assert abs(payload_bits - result.estimated_bits) <= 0.01 * result.estimated_bits, (payload_bits, result.estimated_bits)


_DECODE_SCRIPT = """
import numpy as np, jax
from lcomp import models
model = models.load_model({workdir!r})
blob = open({path!r}, 'rb').read()
np.save({out!r}, model.codec.decompress(model.variables, blob))
np.save({bits_out!r}, model.codec.decode_code(model.variables, blob)[0])
print(jax.device_count())
"""


@pytest.mark.parametrize(
    "xla_flags, devices",
    [
        ("--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", 1),
        ("--xla_force_host_platform_device_count=3", 3),
    ],
)
def test_same_bits_and_pixels_whatever_the_thread_or_device_count(tiny_model, photo, tmp_path, xla_flags, devices):
    model, workdir = tiny_model
    path = tmp_path / "x.lcomp"
    path.write_bytes(model.codec.compress(model.variables, photo).data)  # encoded here
    here = model.codec.decompress(model.variables, path.read_bytes())
    script = _DECODE_SCRIPT.format(workdir=str(workdir), path=str(path), out=str(tmp_path / "o.npy"),
                                   bits_out=str(tmp_path / "b.npy"))
    env = dict(os.environ, XLA_FLAGS=xla_flags, OMP_NUM_THREADS="1" if devices == 1 else "2")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(devices)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), here)
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), model.codec.decode_code(model.variables, path.read_bytes())[0])


def test_damaged_files_end_in_an_lcomp_error_quickly(tiny_model, photo):
    model, _ = tiny_model
    codec, v = model.codec, model.variables
    small = np.ascontiguousarray(photo[:48, :64])
    blob = codec.compress(v, small).data
    codec.decompress(v, blob)  # compiled
    rng = np.random.default_rng(3)
    box = container.unpack(blob)
    names = box.part_names
    cases = []
    for case in range(320):
        damaged = bytearray(blob)
        kind = case % 4
        if kind == 0:
            damaged = damaged[: rng.integers(1, len(damaged))]
        elif kind == 1:
            damaged[rng.integers(0, len(damaged))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # a valid container whose map or code is damaged (the CRC cannot help)
            parts = [(n, bytearray(box.part(n))) for n in names]
            part = parts[rng.integers(0, len(parts))][1]
            if len(part):
                part[rng.integers(0, len(part))] ^= 1 << int(rng.integers(0, 8))
            damaged = container.pack(container.Container(box.header, tuple((n, bytes(b)) for n, b in parts)))
        else:  # a part cut or extended, container rebuilt
            n = names[rng.integers(0, len(names))]
            b = box.part(n)
            b = b[: rng.integers(0, max(len(b), 1))] if rng.random() < 0.5 else b + bytes(rng.integers(0, 256, 4).tolist())
            damaged = container.pack(container.Container(box.header, tuple((m, b if m == n else box.part(m)) for m in names)))
        cases.append(bytes(damaged))
    slowest, tried = 0.0, 0
    for damaged in cases:
        if damaged == blob:
            continue
        tried += 1
        start = time.perf_counter()
        with pytest.raises(LcompError):
            codec.decompress(v, damaged)
        slowest = max(slowest, time.perf_counter() - start)
    assert tried > 300 and slowest < 2.0, (tried, slowest)
    other = jax.tree.map(lambda x: np.asarray(x) * 1.0001, v)
    with pytest.raises(ModelMismatchError):
        codec.decompress(other, blob)
    no_map = container.pack(container.Container(box.header, (("code", box.part("code")),)))
    with pytest.raises(BitstreamError):
        codec.decompress(v, no_map)


def test_stage_one_keeps_and_codes_every_channel_and_sends_no_map(tiny_model, photo):
    model, _ = tiny_model
    cfg, stage1 = _tiny_codec("--config.model.stage=1")
    v = model.variables  # the same parameters: the stages differ only in what the forward pass uses
    bits, q, kept = stage1.analyse(v, photo)
    assert kept.all()
    result = stage1.compress(v, photo)
    assert container.unpack(result.data).part_names == ("code",)
    np.testing.assert_array_equal(stage1.decode_code(v, result.data)[0], bits)
    with pytest.raises(BitstreamError):  # stage-2 files need a map, stage-1 files must not have one
        model.codec.decompress(v, result.data)


# --- training ---------------------------------------------------------------------------------------------------

_QUIET = ["--config.train.progress=False"]


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    """A tiny stage-1 run (no map): the start of the stage-2 runs below."""
    workdir = tmp_path_factory.mktemp("li18s1")
    cfg = configs.load_config("li2018:tiny", [*_QUIET, "--config.model.stage=1", "--config.train.num_steps=40",
                                              "--config.train.checkpoint_every=40"])
    train.train(cfg, workdir)
    return workdir


def test_a_higher_rate_weight_gives_a_lower_bpp(stage_one, tmp_path):
    """Stage 2 from the same stage-1 run, gamma 0 (no rate term) against a binding rate term: real files of
    the second are smaller on the same images, and its map is lower."""
    images = [np.ascontiguousarray(img[:96, :96]) for img in list(data.EmbeddedSource(split="eval"))[:2]]
    results = {}
    for gamma in (0.0, 10.0):
        workdir = tmp_path / f"g{gamma}"
        cfg = configs.load_config("li2018:tiny", [*_QUIET, f"--config.model.gamma={gamma}",
                                                  "--config.model.rate_target=0.05", "--config.train.num_steps=25",
                                                  "--config.train.checkpoint_every=25",
                                                  f"--config.train.init_from={stage_one}"])
        result = train.train(cfg, workdir)
        model = models.load_model(workdir)
        sizes = [len(model.codec.compress(model.variables, img).data) for img in images]
        results[gamma] = (sum(sizes), float(result.last_metrics["mean_importance"]))
    assert results[10.0][0] < results[0.0][0], results
    assert results[10.0][1] < results[0.0][1], results


def test_init_from_copies_parameters_and_refuses_another_model(stage_one, tmp_path):
    cfg = configs.load_config("li2018:tiny", [*_QUIET, f"--config.train.init_from={stage_one}"])
    trainer = train.Trainer(cfg, tmp_path / "s2")
    state = trainer.restore_or_init()
    source = models.load_model(stage_one)
    for a, b in zip(jax.tree.leaves(source.variables["params"]), jax.tree.leaves(jax.device_get(state["params"]))):
        np.testing.assert_array_equal(a, b)
    assert int(state["step"]) == 0
    counts = [int(np.asarray(x)) for x in jax.tree.leaves(state["opt_state"]) if np.ndim(x) == 0]
    assert counts and all(c == 0 for c in counts)  # fresh optimizer states
    wider = configs.load_config("li2018:tiny", [*_QUIET, f"--config.train.init_from={stage_one}",
                                                "--config.model.code_model.features=5"])
    with pytest.raises(ConfigError, match="do not match"):
        train.Trainer(wider, tmp_path / "w").restore_or_init()
    other = configs.load_config("mentzer2018:tiny", [*_QUIET, f"--config.train.init_from={stage_one}"])
    with pytest.raises(ConfigError, match="li2018"):
        train.Trainer(other, tmp_path / "m").restore_or_init()


def test_two_groups_train_with_their_own_objectives(tmp_path):
    """The context models learn their own cross-entropy; the autoencoder its distortion + rate term. With the
    autoencoder's rate 0 only the context models move, on 2 devices in one jitted step."""
    cfg = configs.load_config("li2018:tiny", [*_QUIET, "--config.optim.autoencoder.learning_rate=0.0"])
    trainer = train.Trainer(cfg, tmp_path, devices=jax.devices()[:2])
    state = trainer.init_state()
    before = jax.device_get(state["params"])
    state, metrics = trainer.train_step(state, trainer.batches.batch(0))
    after = jax.device_get(state["params"])
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert same(before["autoencoder"], after["autoencoder"])
    assert not same(before["context_model"]["code"], after["context_model"]["code"])
    assert not same(before["context_model"]["map"], after["context_model"]["map"])
    assert float(metrics["bpp_map"]) > 0 and float(metrics["bpp_code"]) > 0
    assert float(metrics["grad_norm/autoencoder"]) > 0


def test_cli_compress_decompress_info(tiny_model, photo, tmp_path, capsys):
    from lcomp import cli

    model, path = tiny_model
    source, packed, out = tmp_path / "in.png", tmp_path / "x.lcomp", tmp_path / "out.png"
    data.save_image(source, photo)
    assert cli.main(["compress", "--checkpoint", str(path), str(source), str(packed)]) == 0
    assert cli.main(["decompress", "--checkpoint", str(path), str(packed), str(out)]) == 0
    np.testing.assert_array_equal(data.load_image(out), model.codec.decompress(model.variables, packed.read_bytes()))
    capsys.readouterr()
    assert cli.main(["info", str(packed)]) == 0
    text = capsys.readouterr().out
    box = container.unpack(packed.read_bytes())
    assert "li2018" in text and "map" in text and "code" in text
    assert str(len(box.part("map"))) in text and str(len(box.part("code"))) in text


def test_the_shipped_model_through_the_command_line(tmp_path, capsys):
    """`lcomp compress --codec li2018` codes with the shipped model; `decompress` finds it from the file."""
    from lcomp import cli, metrics

    model = models.load_shipped("li2018")
    image = np.ascontiguousarray(data.EmbeddedSource(split="eval")[0][:192, :256])
    source, packed, out = tmp_path / "in.png", tmp_path / "x.lcomp", tmp_path / "out.png"
    data.save_image(source, image)
    assert cli.main(["compress", "--codec", "li2018", str(source), str(packed)]) == 0
    assert container.unpack(packed.read_bytes()).header.fingerprint == model.fingerprint
    assert cli.main(["decompress", str(packed), str(out)]) == 0  # no --checkpoint: the file names its model
    decoded = data.load_image(out)
    np.testing.assert_array_equal(decoded, model.codec.decompress(model.variables, packed.read_bytes()))
    # A trained stage-2 model: a map that varies with the content, a fraction of a bit per pixel, a picture.
    _, q, kept = model.codec.analyse(model.variables, image)
    assert len(np.unique(q)) > 2 and 0.1 < kept.mean() < 0.9
    bpp = 8 * packed.stat().st_size / (192 * 256)
    psnr = float(metrics.psnr(image.astype(np.float32), decoded.astype(np.float32)))
    assert 0.03 < bpp < 0.5 and psnr > 19.0, (bpp, psnr)
