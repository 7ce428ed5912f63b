"""The training engine, on the toy codec and four simulated CPU devices."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lcomp import configs, container, models, train
from lcomp.errors import ConfigError, TrainingError
from tests.toy_codec import toy_config

REPO = pathlib.Path(__file__).resolve().parent.parent


def _params(result_or_state):
    state = getattr(result_or_state, "train_state", result_or_state)
    return jax.tree.map(np.asarray, jax.device_get(state["params"]))


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
    data = model.codec.compress(model.variables, image)
    decoded = model.codec.decompress(model.variables, data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, model.codec.decompress(model.variables, data))

    # The file's size in bits is the reported rate times the pixel count.
    info = container.describe(data)
    bpp = 8 * info["total_bytes"] / (37 * 53)
    assert 8 * len(data) == pytest.approx(bpp * 37 * 53)
    # The payload is within a few words of the model's estimate.
    estimate = model.codec.estimate_bits(model.variables, image)
    payload_bits = 8 * sum(info["part_bytes"].values())
    assert estimate <= payload_bits <= estimate * 1.01 + 64


def test_decompress_refuses_a_file_from_another_model(tmp_path):
    from lcomp.errors import ModelMismatchError

    cfg = toy_config(num_steps=10)
    train.Trainer(cfg, tmp_path / "a").fit()
    cfg_b = toy_config(num_steps=10, seed=1)
    train.Trainer(cfg_b, tmp_path / "b").fit()
    a, b = models.load_model(tmp_path / "a"), models.load_model(tmp_path / "b")
    data = a.codec.compress(a.variables, np.zeros((16, 16, 3), np.uint8))
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
