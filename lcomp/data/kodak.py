"""Kodak: where the test set lives (`kodak_dir`) and its integrity check (`verify_kodak`, built on
`verify_sha256sums`, which any image folder with a SHA256SUMS file can use).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lcomp.errors import ImageError

KODAK_ENV_VAR = "LCOMP_KODAK"


def kodak_dir() -> Path:
    """The Kodak folder: ``$LCOMP_KODAK`` if set, else ``<repo root>/../shared/data/kodak``.

    The repo root is the folder that contains the ``lcomp`` package. The path is returned whether or not it
    exists; :func:`verify_kodak` and :func:`kodak_source` report a missing folder.
    """
    override = os.environ.get(KODAK_ENV_VAR)
    if override:
        return Path(override).expanduser()
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data" / "kodak"


def verify_kodak(path: str | os.PathLike | None = None) -> list[str]:
    """Check the Kodak folder (default :func:`kodak_dir`) against its ``SHA256SUMS``; see :func:`verify_sha256sums`."""
    folder = Path(path) if path is not None else kodak_dir()
    if not folder.is_dir():
        raise ImageError(f"Kodak folder {folder} does not exist (set {KODAK_ENV_VAR} to its location)")
    return verify_sha256sums(folder)


def verify_sha256sums(folder: str | os.PathLike) -> list[str]:
    """Check every file listed in ``SHA256SUMS`` inside ``folder``; return the verified file names.

    ``SHA256SUMS`` has the ``sha256sum`` format (``<hex digest>  <file name>``, or ``*<file name>``).

    Raises:
      ImageError: folder or ``SHA256SUMS`` missing, a listed file missing, or a digest mismatch (all problems
        are listed in one message).
    """
    folder = Path(folder)
    sums_file = folder / "SHA256SUMS"
    if not folder.is_dir():
        raise ImageError(f"image folder {folder} does not exist")
    if not sums_file.is_file():
        raise ImageError(f"{sums_file} is missing; cannot verify the images")
    expected: dict[str, str] = {}
    for line_number, line in enumerate(sums_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ImageError(f"{sums_file}:{line_number}: not a sha256sum line: {line!r}")
        expected[parts[1].strip().lstrip("*")] = parts[0].lower()
    if not expected:
        raise ImageError(f"{sums_file} lists no files")
    problems = []
    for file_name, digest in expected.items():
        file_path = folder / file_name
        if not file_path.is_file():
            problems.append(f"{file_name}: missing")
            continue
        actual = hashlib.sha256(file_path.read_bytes()).hexdigest()
        if actual != digest:
            problems.append(f"{file_name}: sha256 {actual} != expected {digest}")
    if problems:
        raise ImageError(f"{folder} failed its SHA-256 check ({sums_file.name}):\n  " + "\n  ".join(problems))
    return sorted(expected)
