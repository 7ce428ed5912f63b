"""The training engine, on the toy codec, a two-group test codec and four simulated CPU devices."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lcomp import configs, container, models, train
from lcomp.codecs.base import Codec
from lcomp.errors import ConfigError, TrainingError
from tests.toy_codec import toy_config

REPO = pathlib.Path(__file__).resolve().parent.parent


def _params(result_or_state):
    state = getattr(result_or_state, "train_state", result_or_state)
    return jax.tree.map(np.asarray, jax.device_get(state["params"]))


# --- a two-group codec whose gradients are known in closed form ----------------------------------------------

W0 = np.array([0.3, -0.1, 0.7], np.float32)
V0 = np.array([-0.2, 0.4, 0.1], np.float32)


def _objectives(params, batch):
    """Each group's objective depends on the other group's parameters too, so a group that received the
    gradient of the sum (or of the other objective) would move differently from one that got its own."""
    w, v = params["encoder"]["w"], params["prior"]["v"]
    features = jnp.mean(jnp.asarray(batch["image"], jnp.float32) / 255.0, axis=(0, 1, 2))
    return {"encoder": jnp.sum((w * features - 0.5) ** 2) + jnp.sum(v * w), "prior": jnp.sum((v - w) ** 2)}


def _sum_objective(params, batch):
    objectives = _objectives(params, batch)
    return objectives["encoder"] + objectives["prior"]


class TwoGroupCodec(Codec):
    """Engine fixture (trains only, never codes): two groups, deterministic (ignores the step's key).

    `model.objective` picks what `loss` returns: "per_group" ({group: objective}), "scalar" (their sum),
    "loss_metric" (per group, plus its own "loss" metric), "missing" or "extra" (a wrong set of groups)."""

    name = "two_group_test"
    param_groups = ("encoder", "prior")

    def init(self, rng, example_batch):
        return {"params": {"encoder": {"w": jnp.asarray(W0)}, "prior": {"v": jnp.asarray(V0)}}, "state": {}}

    def loss(self, params, state, batch, rng, train):
        objectives = _objectives(params, batch)
        metrics = {"bpp": jnp.zeros(())}
        mode = self.config.objective
        if mode == "scalar":
            return objectives["encoder"] + objectives["prior"], (metrics, state)
        if mode == "loss_metric":
            metrics["loss"] = objectives["encoder"]
        elif mode == "missing":
            del objectives["prior"]
        elif mode == "extra":
            objectives["context"] = objectives["prior"]
        return objectives, (metrics, state)

    def compress(self, variables, image, **settings):
        raise NotImplementedError("TwoGroupCodec is a training fixture: it has no bitstream")

    def decompress(self, variables, data, **settings):
        raise NotImplementedError("TwoGroupCodec is a training fixture: it has no bitstream")


def _two_group_trainer(tmp_path, objective="per_group", *, encoder=None, prior=None, devices=None):
    """A Trainer on TwoGroupCodec; both groups plain SGD (no momentum) unless `encoder`/`prior` say otherwise."""
    cfg = configs.base_config()
    cfg.codec = TwoGroupCodec.name
    cfg.model = ml_collections.ConfigDict({"objective": objective})
    cfg.data.patch_size = 8
    cfg.data.batch_size = 8
    sgd = dict(learning_rate=0.1, optimizer="sgd", b1=0.0)
    cfg.optim = ml_collections.ConfigDict(
        {
            "encoder": configs.optimizer_config(**{**sgd, **(encoder or {})}),
            "prior": configs.optimizer_config(**{**sgd, **(prior or {})}),
        }
    )
    cfg.train.progress = False
    return train.Trainer(cfg, tmp_path, codec=TwoGroupCodec(cfg.model), devices=devices)


def _copy(tree):
    # Real copies: on the CPU backend device_get may alias buffers that the next (donating) step reuses.
    return jax.tree.map(lambda x: np.array(x, copy=True), jax.device_get(tree))


def _run_steps(trainer, steps):
    """Every train state (host copies) from the initial one to after `steps` steps, and each step's metrics."""
    state = trainer.init_state()
    states, metrics = [_copy(state)], []
    for step in range(steps):
        state, step_metrics = trainer.train_step(state, trainer.batches.batch(step))
        states.append(_copy(state))
        metrics.append(_copy(step_metrics))
    return states, metrics


def _assert_moved_by(before, after, expected_update, group):
    for key in before["params"][group]:
        np.testing.assert_allclose(
            after["params"][group][key] - before["params"][group][key], expected_update[key], rtol=1e-4,
            atol=1e-7, err_msg=f"group {group!r}, parameter {key!r}",
        )


def test_each_group_gets_its_own_learning_rate_and_schedule(tmp_path):
    trainer = _two_group_trainer(
        tmp_path, "scalar",
        encoder=dict(learning_rate=0.1, schedule="step", boundaries=(2,), decay_rate=0.1),
        prior=dict(learning_rate=0.02, schedule="exponential", decay_steps=1, decay_rate=0.5),
    )
    # The schedules, written out independently of lcomp.train.learning_rate_schedule.
    rate = {"encoder": lambda step: 0.1 if step < 2 else 0.01, "prior": lambda step: 0.02 * 0.5**step}
    states, metrics = _run_steps(trainer, 4)
    for step in range(4):
        before, after = states[step], states[step + 1]
        batch = trainer.batches.batch(step)
        # A single scalar objective: every group moves along its gradient of it, at its own rate.
        grads = jax.grad(_sum_objective)(before["params"], batch)
        for group in ("encoder", "prior"):
            update = {k: -rate[group](step) * np.asarray(g) for k, g in grads[group].items()}
            _assert_moved_by(before, after, update, group)
        np.testing.assert_allclose(metrics[step]["loss"], _sum_objective(before["params"], batch), rtol=1e-5)
        assert not any(k.startswith("objective/") for k in metrics[step])


def test_each_group_follows_the_gradient_of_its_own_objective_only(tmp_path):
    trainer = _two_group_trainer(tmp_path, "per_group")
    states, metrics = _run_steps(trainer, 3)
    for step in range(3):
        before, after = states[step], states[step + 1]
        batch = trainer.batches.batch(step)
        objectives = _objectives(before["params"], batch)
        for group in ("encoder", "prior"):
            own = jax.grad(lambda p, g=group: _objectives(p, batch)[g])(before["params"])[group]
            _assert_moved_by(before, after, {k: -0.1 * np.asarray(v) for k, v in own.items()}, group)
            # The sum's gradient differs here, so the check above tells the two apart.
            summed = jax.grad(_sum_objective)(before["params"], batch)[group]
            assert not np.allclose(np.asarray(summed["w" if group == "encoder" else "v"]),
                                   np.asarray(own["w" if group == "encoder" else "v"]), rtol=1e-2)
            np.testing.assert_allclose(metrics[step][f"objective/{group}"], objectives[group], rtol=1e-5)
        # No "loss" metric from the codec: the progress bar shows the sum of the objectives.
        np.testing.assert_allclose(metrics[step]["loss"], objectives["encoder"] + objectives["prior"], rtol=1e-5)
        assert metrics[step]["finite"]


def test_the_codecs_own_loss_metric_is_what_the_progress_bar_shows(tmp_path):
    trainer = _two_group_trainer(tmp_path, "loss_metric")
    states, metrics = _run_steps(trainer, 1)
    objectives = _objectives(states[0]["params"], trainer.batches.batch(0))
    np.testing.assert_allclose(metrics[0]["loss"], objectives["encoder"], rtol=1e-5)
    np.testing.assert_allclose(metrics[0]["objective/prior"], objectives["prior"], rtol=1e-5)


@pytest.mark.parametrize(
    "objective, message", [("missing", r"missing \['prior'\]"), ("extra", r"unexpected \['context'\]")]
)
def test_objectives_must_name_exactly_the_parameter_groups(tmp_path, objective, message):
    trainer = _two_group_trainer(tmp_path, objective)
    with pytest.raises(TrainingError, match=message):
        trainer.train_step(trainer.init_state(), trainer.batches.batch(0))


@pytest.mark.parametrize("objective", ["per_group", "scalar"])
def test_a_group_outside_its_training_window_is_frozen_bit_for_bit(tmp_path, objective):
    start, until = 2, 4
    trainer = _two_group_trainer(
        tmp_path, objective,
        encoder=dict(optimizer="adam", learning_rate=1e-2, b1=0.9),
        prior=dict(optimizer="adam", learning_rate=1e-2, b1=0.9, train_from_step=start, train_until_step=until),
    )
    states, metrics = _run_steps(trainer, 6)
    for step in range(6):
        before, after = states[step], states[step + 1]
        prior_before = jax.tree.leaves((before["params"]["prior"], before["opt_state"]["prior"]))
        prior_after = jax.tree.leaves((after["params"]["prior"], after["opt_state"]["prior"]))
        if start <= step < until:
            assert not np.array_equal(after["params"]["prior"]["v"], before["params"]["prior"]["v"])
            assert metrics[step]["grad_norm/prior"] > 0
        else:
            for a, b in zip(prior_before, prior_after):
                np.testing.assert_array_equal(a, b)
            assert metrics[step]["grad_norm/prior"] == 0
        # The group without a window trains at every step.
        assert not np.array_equal(after["params"]["encoder"]["w"], before["params"]["encoder"]["w"])
    # Its optimizer (and so its schedule) counted only the steps it trained.
    counts = [x for x in jax.tree.leaves(states[-1]["opt_state"]["prior"]) if np.issubdtype(x.dtype, np.integer)]
    assert counts and all(int(c) == until - start for c in counts)
    encoder_counts = [x for x in jax.tree.leaves(states[-1]["opt_state"]["encoder"])
                      if np.issubdtype(x.dtype, np.integer)]
    assert all(int(c) == 6 for c in encoder_counts)


@pytest.mark.parametrize(
    "window, message",
    [
        (dict(train_from_step=-1), "train_from_step must be >= 0"),
        (dict(train_from_step=3, train_until_step=3), "train_until_step=3 must be 0"),
        (dict(train_from_step=3, train_until_step=2), "never train"),
        (dict(train_until_step=-5), "train_until_step must be >= 0"),
    ],
)
def test_impossible_training_windows_are_config_errors(tmp_path, window, message):
    with pytest.raises(ConfigError, match=message):
        _two_group_trainer(tmp_path, prior=window)


def test_four_devices_are_simulated():
    assert jax.device_count() == 4, "conftest must set --xla_force_host_platform_device_count=4"


def test_loss_falls_on_four_devices(tmp_path):
    cfg = toy_config(num_steps=50)
    trainer = train.Trainer(cfg, tmp_path)
    assert trainer.mesh.devices.size == 4
    result = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    # Both parameter groups moved, each with its own optimizer state.
    assert set(result.train_state["opt_state"]) == {"autoencoder", "entropy_model"}
    assert records[-1]["grad_norm/entropy_model"] > 0
    assert (tmp_path / "tensorboard").is_dir() and any((tmp_path / "tensorboard").iterdir())


def test_four_device_step_equals_one_device_step(tmp_path):
    cfg = toy_config()
    one = train.Trainer(cfg, tmp_path / "one", devices=jax.devices()[:1])
    four = train.Trainer(cfg, tmp_path / "four", devices=jax.devices())
    batch = one.batches.batch(0)
    s1, m1 = one.train_step(one.init_state(), batch)
    s4, m4 = four.train_step(four.init_state(), batch)
    assert s4["params"]["autoencoder"]["enc1"]["kernel"].sharding.mesh.devices.size == 4
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(_params(s1)), jax.tree.leaves(_params(s4))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _train_command(workdir, steps, every):
    return [
        sys.executable, "-m", "lcomp", "train", "--config", "tests/toy_config.py", "--workdir", str(workdir),
        "--steps", str(steps), f"--config.train.checkpoint_every={every}", "--config.train.log_every=10",
    ]


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    steps, every = 300, 20
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        _train_command(tmp_path / "killed", steps, every), cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline:
        done = [int(p.name) for p in ckpt.glob("*") if p.name.isdigit()] if ckpt.exists() else []
        if done and max(done) >= 60:
            break
        assert proc.poll() is None, "training finished before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = max(int(p.name) for p in ckpt.glob("*") if p.name.isdigit())
    assert latest < steps, "the run must be killed part-way"

    resumed = subprocess.run(_train_command(tmp_path / "killed", steps, every), cwd=REPO, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    killed_then_resumed = models.load_model(tmp_path / "killed")

    cfg = configs.load_config("tests/toy_config.py", [f"--config.train.checkpoint_every={every}"])
    cfg.train.num_steps = steps
    uninterrupted = train.train(cfg, tmp_path / "straight")
    for a, b in zip(jax.tree.leaves(killed_then_resumed.variables["params"]), jax.tree.leaves(_params(uninterrupted))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_compress_decompress_bit_exact_and_rate_is_file_size(tmp_path):
    cfg = toy_config(num_steps=30)
    trainer = train.Trainer(cfg, tmp_path)
    trainer.fit()
    model = models.load_model(tmp_path)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd size: padding and cropping
    compressed = model.codec.compress(model.variables, image)
    data = compressed.data
    decoded = model.codec.decompress(model.variables, data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, model.codec.decompress(model.variables, data))

    # Every byte of the written file is header, index and CRC or a payload part: no hidden bytes.
    path = tmp_path / "image.lcomp"
    path.write_bytes(data)
    info = container.describe(path.read_bytes())
    assert path.stat().st_size == info["header_bytes"] + sum(info["part_bytes"].values())
    # The reported rate is the file's bits over the image's own pixels (not the padded 40 x 56).
    assert info["bits_per_pixel"] == pytest.approx(8 * path.stat().st_size / (37 * 53), rel=1e-12)
    # The payload is within a few words of the model's estimate.
    estimate = compressed.estimated_bits
    payload_bits = 8 * sum(info["part_bytes"].values())
    assert estimate <= payload_bits <= estimate * 1.01 + 64


def test_decompress_refuses_a_file_from_another_model(tmp_path):
    from lcomp.errors import ModelMismatchError

    cfg = toy_config(num_steps=10)
    train.Trainer(cfg, tmp_path / "a").fit()
    cfg_b = toy_config(num_steps=10, seed=1)
    train.Trainer(cfg_b, tmp_path / "b").fit()
    a, b = models.load_model(tmp_path / "a"), models.load_model(tmp_path / "b")
    data = a.codec.compress(a.variables, np.zeros((16, 16, 3), np.uint8)).data
    with pytest.raises(ModelMismatchError, match="model"):
        b.codec.decompress(b.variables, data)
    with pytest.raises(ModelMismatchError):
        models.load_for_file(data, tmp_path / "b")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = toy_config(num_steps=40, checkpoint_every=10)
    trainer = train.Trainer(cfg, tmp_path)
    trainer.fit(num_steps=10)
    good = _params(trainer.restore_or_init())

    cfg.optim.autoencoder.learning_rate = 1e30  # diverges at once
    trainer = train.Trainer(cfg, tmp_path)
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.fit()
    assert trainer.checkpoints.latest_step() == 10
    for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(_params(trainer.restore_or_init()))):
        np.testing.assert_array_equal(a, b)


def test_workdir_with_another_model_config_is_refused(tmp_path):
    train.Trainer(toy_config(num_steps=2), tmp_path).fit()
    cfg = toy_config(num_steps=2)
    cfg.model.channels = 16
    with pytest.raises(ConfigError, match="different 'model'"):
        train.Trainer(cfg, tmp_path).fit()


def test_config_overrides():
    cfg = configs.load_config("tests/toy_config.py", ["--config.train.num_steps=7", "--config.optim.autoencoder.learning_rate=1"])
    assert cfg.train.num_steps == 7 and cfg.optim.autoencoder.learning_rate == 1.0
    with pytest.raises(ConfigError, match="did you mean"):
        configs.load_config("tests/toy_config.py", ["--config.train.num_step=7"])
    with pytest.raises(ConfigError, match="no config named"):
        configs.load_config("no_such_codec")


def _variables_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_inference_loading_restores_only_params_and_state(tmp_path):
    cfg = toy_config(num_steps=10)
    trainer = train.Trainer(cfg, tmp_path)
    trainer.fit()
    full = jax.device_get(trainer.restore_or_init())
    full_variables = {"params": full["params"], "state": full["state"]}
    _variables_equal(models.load_model(tmp_path).variables, full_variables)

    # Loading never builds an optimizer: a workdir loads with its optimizer sections changed or gone.
    config_file = tmp_path / train.CONFIG_FILE
    recorded = json.loads(config_file.read_text())
    recorded["optim"] = {"autoencoder": {"optimizer": "no_such_optimizer"}, "other_group": {}}
    config_file.write_text(json.dumps(recorded))
    _variables_equal(models.load_model(tmp_path).variables, full_variables)
    del recorded["optim"]
    config_file.write_text(json.dumps(recorded))
    loaded = models.load_model(tmp_path)
    _variables_equal(loaded.variables, full_variables)

    # A process with another device count (one, not the four it was trained on) loads the same model.
    script = (
        "import sys; from lcomp import models; "
        "print(models.load_model(sys.argv[1]).fingerprint.hex())"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu")
    one_device = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=env,
                                capture_output=True, text=True)
    assert one_device.returncode == 0, one_device.stderr[-2000:]
    assert one_device.stdout.strip().splitlines()[-1] == loaded.fingerprint.hex()
