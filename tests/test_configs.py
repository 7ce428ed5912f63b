"""Config resolution through the installed package, and which codecs `lcomp demo` / `lcomp bench` serve.

The shipped configs live in experiments/configs/ but are imported as `lcomp.experiment_configs` (setup.py
maps the folder onto that package), so a plain `pip install .` finds them without the repository; these
tests check the resolution, the errors, and that the wheel really carries the configs.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from lcomp import bench, cli, configs, demo, models
from lcomp.codecs import registry
from lcomp.codecs.base import Codec
from lcomp.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = ("johnston2018", "toderici2017")


def test_shipped_configs_are_modules_of_the_package():
    assert set(SHIPPED) <= set(configs.shipped_config_names())
    assert not any(name.startswith("_") for name in configs.shipped_config_names())  # _rnn_common is a helper
    config = configs.load_config("johnston2018:tiny")
    assert config.codec == "johnston2018" and config.train.num_steps == 2000
    module = sys.modules["lcomp.experiment_configs.johnston2018"]
    assert pathlib.Path(module.__file__).name == "johnston2018.py"


def test_loading_a_config_leaves_sys_path_alone():
    # A fresh interpreter, so no earlier import hides a sys.path insert made by a config file.
    code = (
        "import sys; before = list(sys.path); from lcomp import configs; "
        "[configs.load_config(n + ':tiny') for n in configs.shipped_config_names()]; "
        "assert sys.path == before, set(sys.path) ^ set(before); print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    for path in (REPO / "experiments" / "configs").glob("*.py"):
        assert "sys.path.insert" not in path.read_text(), path


@pytest.mark.parametrize("codec", SHIPPED)
def test_registry_configs_resolve_through_the_package(codec):
    entry = registry.get(codec)
    assert entry.config in configs.shipped_config_names()
    for variant in ("", "small", "tiny"):
        assert configs.codec_config(codec, variant).codec == codec
    tiny = configs.codec_config(codec, "tiny", ["--config.train.num_steps=3"])
    assert tiny.train.num_steps == 3


def test_every_builtin_codec_names_a_shipped_config():
    builtin = [n for n in registry.names() if registry.get(n).factory.__module__.startswith("lcomp.")]
    assert builtin
    for name in builtin:
        assert configs.codec_config(name).codec == name


def test_a_config_given_by_path(tmp_path):
    own = tmp_path / "my_coder.py"
    own.write_text(
        "from lcomp.experiment_configs._rnn_common import rnn_config\n\n"
        "def get_config(variant=''):\n"
        "    cfg = rnn_config('toderici2017', variant, network=dict(cell='lstm'), loss='l1')\n"
        "    cfg.train.num_steps = 11\n"
        "    return cfg\n"
    )
    config = configs.load_config(f"{own}:tiny", ["--config.data.batch_size=2"])
    assert config.codec == "toderici2017" and config.model.network.cell == "lstm"
    assert config.train.num_steps == 11 and config.data.batch_size == 2
    assert configs.load_config(str(REPO / "tests" / "toy_config.py")).codec == "toy"


def test_config_errors_name_what_exists(tmp_path):
    with pytest.raises(ConfigError, match="no config named 'no_such_codec'") as info:
        configs.load_config("no_such_codec:tiny")
    assert all(name in str(info.value) for name in SHIPPED)
    with pytest.raises(ConfigError, match="no config named"):
        configs.load_config("../tests/toy_config")  # a name is a module of the package, never a path
    with pytest.raises(ConfigError, match="does not exist"):
        configs.load_config(str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match="unknown variant"):
        configs.load_config("johnston2018:huge")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="boom"):
        configs.load_config(str(broken))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(ConfigError, match="no get_config"):
        configs.load_config(str(empty))


# --- demo and bench: which codecs they serve -------------------------------------------------------------


@pytest.fixture
def unservable_codec(monkeypatch):
    """A registered codec whose registered config does not ship with lcomp (removed again afterwards)."""
    registry.names()  # the built-in codecs first, so the copy below holds them
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register("configless_test_codec", config="no_such_config")
    class ConfiglessCodec(Codec):
        """Registered for these tests only; demo and bench must refuse it before building anything."""

        def init(self, rng, example_batch):
            raise AssertionError("a refused codec is never built")

        loss = compress = decompress = init

    return ConfiglessCodec.name


def test_demo_refuses_a_codec_it_cannot_serve(unservable_codec, tmp_path, capsys):
    served = ", ".join(demo.servable_codecs())  # every codec with a shipped tiny config, whatever lands later
    assert set(SHIPPED) <= set(demo.servable_codecs()) and unservable_codec not in served
    with pytest.raises(ConfigError, match="demo cannot serve codec 'configless_test_codec'") as info:
        demo.demo_config(unservable_codec)
    assert served in str(info.value)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--codec", unservable_codec, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lcomp demo: error:" in err and served in err
    assert not out.exists()  # refused before anything was written
    assert cli.main(["demo", "--codec", "no_such_codec", "--out", str(out)]) == 2
    assert "registered codecs" in capsys.readouterr().err


def test_demo_config_applies_overrides_after_choosing_the_codec():
    assert demo.demo_config("toderici2017", ["--config.train.num_steps=5"]).train.num_steps == 5
    with pytest.raises(ConfigError, match="did you mean"):  # the user's typo, not "cannot serve"
        demo.demo_config("toderici2017", ["--config.train.num_step=5"])


def test_bench_refuses_a_codec_it_cannot_serve(unservable_codec, capsys):
    served = ", ".join(bench.servable_codecs())
    assert set(SHIPPED) <= set(bench.servable_codecs()) and unservable_codec not in served
    with pytest.raises(ConfigError, match="bench cannot serve codec 'configless_test_codec'") as info:
        bench.bench_config(unservable_codec, None)
    assert served in str(info.value)
    assert cli.main(["bench", "--codec", unservable_codec]) == 2
    assert served in capsys.readouterr().err


def test_bench_chooses_the_config_to_time(tmp_path):
    spec, config = bench.bench_config(None, None)
    assert spec == "johnston2018" and config.model.network.iterations == 16  # paper size
    spec, config = bench.bench_config("toderici2017", None, ["--config.model.network.iterations=8"])
    assert spec == "toderici2017" and config.model.network.iterations == 8
    spec, config = bench.bench_config(None, str(REPO / "tests" / "toy_config.py"))
    assert config.codec == "toy"
    with pytest.raises(ConfigError, match="configures codec 'toy', not 'johnston2018'"):
        bench.bench_config("johnston2018", str(REPO / "tests" / "toy_config.py"))
    # A recurrent coder is timed with both cells; any other codec with its config as it is.
    assert [label for label, _ in bench._train_variants(configs.codec_config("johnston2018"))] == ["GRU", "LSTM"]
    assert bench._train_variants(config) == [("", [])]


def test_operating_points_demo_and_bench_pick():
    assert demo.cut_counts(16) == [1, 2, 4, 8, 16]
    assert demo.cut_counts(5) == [1, 2, 4, 5]
    assert demo.cut_counts(1) == [1]
    sweep = [{"iterations": t} for t in range(1, 17)]
    assert bench.timing_points(sweep) == [{"iterations": 4}, {"iterations": 8}, {"iterations": 16}]
    assert bench.timing_points([{}]) == [{}]
    assert bench.timing_points([{"q": 1}, {"q": 2}]) == [{"q": 1}, {"q": 2}]


def _random_model(config):
    import jax

    codec = registry.create(config.codec, config.model)
    variables = codec.init(jax.random.key(0), {"image": np.zeros((1, 32, 32, 3), np.uint8)})
    return models.LoadedModel(codec, variables, config, "test")


def _image():
    rng = np.random.default_rng(0)
    return (rng.random((4, 6, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)  # 32 x 48


def test_demo_codes_a_one_shot_codec_at_its_operating_points(tmp_path):
    from tests.toy_codec import toy_config

    points = demo._learned_points(_random_model(toy_config()), _image(), "img", tmp_path, "toy", True)
    assert [p["setting"] for p in points] == [{}]
    assert (tmp_path / "img_default.lcomp").stat().st_size == points[0]["bytes"]
    assert (tmp_path / "img_default.png").is_file()


@pytest.mark.slow
def test_demo_cuts_a_progressive_codec(tmp_path):
    config = configs.codec_config("toderici2017", "tiny", ["--config.model.network.iterations=3"])
    points = demo._learned_points(_random_model(config), _image(), "img", tmp_path, "t17", True)
    assert [p["setting"] for p in points] == [{"iterations": 1}, {"iterations": 2}, {"iterations": 3}]
    sizes = [p["bytes"] for p in points]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3  # each cut is a prefix of the one file
    assert sorted(p.name for p in tmp_path.glob("*.lcomp")) == [f"img_iterations0{t}.lcomp" for t in (1, 2, 3)]


# --- the installed package ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_wheel_carries_the_configs(tmp_path):
    """A non-editable install gets the configs: they are in the wheel as lcomp/experiment_configs/."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "lcomp", src / "lcomp", ignore=ignore)
    shutil.copytree(REPO / "experiments" / "configs", src / "experiments" / "configs", ignore=ignore)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0 and "No matching distribution" in proc.stderr:
        pytest.skip("no build backend available offline")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("lcomp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in ("__init__", "_rnn_common", *SHIPPED):
        assert f"lcomp/experiment_configs/{config}.py" in names
    assert not any(n.startswith("experiments/") for n in names)
    assert "lcomp/zoo/johnston2018/model.json" in names  # package data still travels
