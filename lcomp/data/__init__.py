"""Images in and out of lcomp: loading, sources, training batches and padding.

Modules, in the order a newcomer meets them (everything public is re-exported here, so ``data.load_image``):

- ``images``: loading and saving one image (:func:`load_image`, :func:`save_image`). Every image inside lcomp
  is a ``uint8`` array of shape ``(H, W, 3)``; this is the one place where files become such arrays.
- ``sources``: ordered, indexable collections of images (:class:`FolderSource`, :class:`EmbeddedSource`,
  :class:`TfdsSource`, :class:`ArraySource`, :func:`kodak_source`) and :func:`make_source`, which builds one
  from a config section.
- ``kodak``: where the shipped test set lives (:func:`kodak_dir`) and its integrity check
  (:func:`verify_kodak`, built on :func:`verify_sha256sums`, which any folder with a ``SHA256SUMS`` can use).
- ``batches``: training batches (:class:`TrainBatches`): a batch is a pure function of ``(seed, step)``, so a
  resumed run sees exactly the batches an uninterrupted run would have seen.
- ``dead_leaves``: procedural training images with natural-image statistics (:func:`dead_leaves_image`,
  :class:`DeadLeavesSource`), mixed into batches with ``TrainBatches(synthetic_source=...)``.
- ``padding``: :func:`pad_to_multiple` and :func:`crop`, which codecs use around their networks.

Decisions that affect pixel values (each is documented again where it is implemented):

- No colour management, ever: ICC profiles, ``gAMA`` and ``sRGB`` chunks are ignored, as the evaluation rules
  for Kodak require (decoding is the same as Pillow's ``Image.open(p).convert("RGB")`` for 8-bit RGB files).
- Transparency is composited onto a white background (what a viewer shows on a white page), not dropped:
  colours under fully transparent pixels are often garbage that should not be coded.
- Samples deeper than 8 bits are scaled with rounding, ``round(v * 255 / 65535)``, not truncated to the high
  byte.
- The EXIF orientation tag is applied (the pixels are turned the way a viewer shows them) unless
  ``exif_orientation=False``.
"""

from lcomp.data.batches import TrainBatches
from lcomp.data.dead_leaves import DeadLeavesSource, dead_leaves_image
from lcomp.data.images import MAX_PIXELS, load_image, save_image
from lcomp.data.kodak import KODAK_ENV_VAR, kodak_dir, verify_kodak, verify_sha256sums
from lcomp.data.padding import crop, pad_to_multiple
from lcomp.data.sources import (
    EMBEDDED_EVAL_PHOTOGRAPHS,
    EMBEDDED_PHOTOGRAPHS,
    IMAGE_EXTENSIONS,
    ArraySource,
    EmbeddedSource,
    FolderSource,
    ImageSource,
    TfdsSource,
    eval_images,
    kodak_source,
    make_source,
)

__all__ = [
    "MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "EMBEDDED_PHOTOGRAPHS",
    "EMBEDDED_EVAL_PHOTOGRAPHS",
    "load_image",
    "save_image",
    "ImageSource",
    "ArraySource",
    "FolderSource",
    "EmbeddedSource",
    "TfdsSource",
    "make_source",
    "KODAK_ENV_VAR",
    "kodak_dir",
    "verify_kodak",
    "verify_sha256sums",
    "kodak_source",
    "TrainBatches",
    "DeadLeavesSource",
    "dead_leaves_image",
    "pad_to_multiple",
    "crop",
    "eval_images",
]
