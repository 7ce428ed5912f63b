"""Test setup: four simulated CPU devices (multi-device code is exercised everywhere), Kodak discovery."""

import os
import pathlib

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kodak_dir() -> pathlib.Path:
    """The Kodak folder (LCOMP_KODAK or ../shared/data/kodak); tests that need it skip when it is absent."""
    path = pathlib.Path(os.environ.get("LCOMP_KODAK", REPO.parent / "shared" / "data" / "kodak"))
    if not (path / "kodim01.png").is_file():
        pytest.skip(f"Kodak images not found at {path} (set LCOMP_KODAK to the folder with kodim01..24.png)")
    return path
