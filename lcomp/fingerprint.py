"""The model fingerprint: 8 bytes identifying a model's parameters and state exactly.

Every compressed file carries the fingerprint of the model that wrote it, so a decoder refuses a file that
another model made. Codecs compute it here (not through `lcomp.models`), so the codec packages never import
the model-loading machinery.
"""

from __future__ import annotations

import hashlib

import jax
import numpy as np

_FINGERPRINT_CACHE: list[tuple[object, bytes]] = []


def fingerprint(variables) -> bytes:
    """8 bytes identifying a model's parameters and state exactly (same on every machine)."""
    for obj, value in _FINGERPRINT_CACHE:
        if obj is variables:
            return value
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(
        {"params": variables["params"], "state": variables.get("state", {})}
    )[0]
    for path, leaf in leaves:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    value = digest.digest()[:8]
    # Keep the object alive with its fingerprint so that `is` identifies it; a short list is enough.
    _FINGERPRINT_CACHE.insert(0, (variables, value))
    del _FINGERPRINT_CACHE[4:]
    return value
