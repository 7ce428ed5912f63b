"""The error types lcomp raises on bad input.

Everything a user can get wrong (a corrupt file, a file from another model, an unreadable image, a bad
config value) ends in a subclass of :class:`LcompError` with a message that says what was wrong. Code that
calls into dependencies (constriction, Pillow, orbax) catches their exceptions at the boundary and re-raises
one of these, so a user never sees a traceback from inside a dependency.
"""


class LcompError(Exception):
    """Base class of every error lcomp raises on bad input."""


class BitstreamError(LcompError):
    """A compressed file is malformed: truncated, corrupted, wrong magic or version, absurd header."""


class ModelMismatchError(BitstreamError):
    """A well-formed file that was made by another codec or another set of model parameters."""


class ImageError(LcompError):
    """An input image cannot be read or has an unsupported layout or size."""


class ConfigError(LcompError):
    """A configuration is invalid (unknown codec, bad override, impossible setting)."""


class TrainingError(LcompError):
    """Training cannot continue (non-finite loss, incompatible checkpoint)."""
