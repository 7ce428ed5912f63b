"""The command line on the toy codec: compress, decompress, info, cut, and clear errors on bad input."""

import json

import numpy as np
import pytest

from lcomp import cli, data, train
from tests.toy_codec import toy_config


@pytest.fixture(scope="module")
def toy_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy")
    train.Trainer(toy_config(num_steps=20), workdir).fit()
    return workdir


@pytest.fixture()
def image_file(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "in.png"
    data.save_image(path, rng.integers(0, 256, (30, 41, 3), dtype=np.uint8))
    return path


def test_compress_info_decompress(toy_workdir, image_file, tmp_path, capsys):
    out = tmp_path / "x.lcomp"
    assert cli.main(["compress", "--checkpoint", str(toy_workdir), str(image_file), str(out)]) == 0
    printed = capsys.readouterr().out
    bpp = float(printed.split(" bpp")[0].split()[-1])
    assert bpp == pytest.approx(8 * out.stat().st_size / (30 * 41), abs=1e-4)
    # The model's estimate comes from the same encode; it covers the payload, so it is below the real rate.
    estimated = float(printed.split("model's estimate ")[1].split()[0])
    assert 0 < estimated < bpp

    assert cli.main(["info", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == "toy" and (info["height"], info["width"]) == (30, 41)
    assert info["total_bytes"] == out.stat().st_size

    png = tmp_path / "x.png"
    assert cli.main(["decompress", "--checkpoint", str(toy_workdir), str(out), str(png)]) == 0
    decoded = data.load_image(png)
    assert decoded.shape == (30, 41, 3)


def test_cut_refuses_a_codec_that_is_not_progressive(toy_workdir, image_file, tmp_path, capsys):
    out = tmp_path / "x.lcomp"
    assert cli.main(["compress", "--checkpoint", str(toy_workdir), str(image_file), str(out)]) == 0
    capsys.readouterr()
    cut = ["cut", "--iterations", "1", str(out), str(tmp_path / "y.lcomp")]
    # From the codec's declared part layout alone, and through the model's own cut_file with --checkpoint.
    for argv in (cut, cut[:1] + ["--checkpoint", str(toy_workdir)] + cut[1:]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("lcomp cut: error: codec 'toy' is not progressive") and "Traceback" not in err
    assert not (tmp_path / "y.lcomp").exists()


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda p: p.write_bytes(b"not an image at all"), "image"),
        (lambda p: p.write_bytes(b""), "empty"),
    ],
)
def test_bad_image_is_a_one_line_error(toy_workdir, tmp_path, capsys, make_input, message):
    bad = tmp_path / "bad.png"
    make_input(bad)
    code = cli.main(["compress", "--checkpoint", str(toy_workdir), str(bad), str(tmp_path / "o.lcomp")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lcomp compress: error:") and message in err.lower()
    assert "Traceback" not in err and not (tmp_path / "o.lcomp").exists()


def test_corrupt_and_foreign_files_are_refused(toy_workdir, image_file, tmp_path, capsys):
    out = tmp_path / "x.lcomp"
    cli.main(["compress", "--checkpoint", str(toy_workdir), str(image_file), str(out)])
    payload = bytearray(out.read_bytes())
    payload[len(payload) // 2] ^= 0x10
    broken = tmp_path / "broken.lcomp"
    broken.write_bytes(bytes(payload))
    capsys.readouterr()
    assert cli.main(["decompress", "--checkpoint", str(toy_workdir), str(broken), str(tmp_path / "y.png")]) == 2
    assert "CRC" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path / "missing.lcomp")]) == 2
    assert "cannot read" in capsys.readouterr().err
    # A file with no shipped model for its codec and no --checkpoint: a clear message.
    assert cli.main(["decompress", str(out), str(tmp_path / "y.png")]) == 2
    assert "no shipped model" in capsys.readouterr().err


def test_full_decode_path_fuzz(toy_workdir, image_file):
    """Mutated and truncated files through the codec's own decompress: an LcompError every time, fast."""
    import time

    from lcomp import models
    from lcomp.errors import LcompError

    model = models.load_model(toy_workdir)
    good = model.encode(data.load_image(image_file)).data
    rng = np.random.default_rng(7)
    outcomes = {"error": 0, "decoded": 0}
    for case in range(300):
        blob = bytearray(good)
        kind = case % 3
        if kind == 0:
            blob = blob[: rng.integers(0, len(blob))]
        elif kind == 1:
            for _ in range(rng.integers(1, 4)):
                blob[rng.integers(0, len(blob))] ^= 1 << int(rng.integers(0, 8))
        else:
            pos = int(rng.integers(0, len(blob)))
            blob[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        start = time.perf_counter()
        try:
            model.codec.decompress(model.variables, bytes(blob))
            outcomes["decoded"] += 1
        except LcompError:
            outcomes["error"] += 1
        assert time.perf_counter() - start < 2.0
    assert outcomes["error"] == 300, outcomes
