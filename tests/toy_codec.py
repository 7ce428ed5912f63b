"""A small test codec: conv autoencoder + rounding + a factorized entropy model.

A fixture for the engine's tests, not a product. It has two parameter groups (its own optimizer each) so
that the multi-optimizer step is exercised, and writes real container files through the real range coder.
It follows codec interface v2: `compress` returns `lcomp.interface.Compressed` (the file and the model's
estimate of its bits, from the same encode), and its files' one part is declared in `part_layout`.
Registered as "toy" when this module is imported (configs name it in `codec_module`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lcomp import container, entropy
from lcomp.codecs.base import Codec
from lcomp.codecs.registry import register
from lcomp.data import crop, pad_to_multiple
from lcomp.errors import ConfigError
from lcomp.fingerprint import fingerprint
from lcomp.interface import Compressed
from lcomp.nn.blocks import depth_to_space
from lcomp.quantize import round_ste

SUPPORT = 8  # symbols are integers in [-SUPPORT, SUPPORT]


class ToyAutoencoder(nn.Module):
    channels: int = 8
    latent: int = 4

    def setup(self):
        self.enc1 = nn.Conv(self.channels, (3, 3), strides=2)
        self.enc2 = nn.Conv(self.latent, (3, 3), strides=2)
        self.dec1 = nn.Conv(self.channels * 4, (3, 3))
        self.dec2 = nn.Conv(3 * 4, (3, 3))

    def encode(self, x):
        return self.enc2(nn.relu(self.enc1(x))) * 4.0

    def decode(self, y):
        h = depth_to_space(nn.relu(self.dec1(y / 4.0)), 2)
        return depth_to_space(self.dec2(h), 2)

    def __call__(self, x):
        return self.decode(self.encode(x))


def _to_float(image_u8):
    return image_u8.astype(jnp.float32) / 255.0 - 0.5


@register("toy", config="toy")
class ToyCodec(Codec):
    """Test fixture: conv autoencoder, rounding, per-channel categorical entropy model."""

    param_groups = ("autoencoder", "entropy_model")
    pad_multiple = 4
    part_layout = container.PartLayout(streams=("latent",))

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.net = ToyAutoencoder(config.get("channels", 8), config.get("latent", 4))
        self.latent = config.get("latent", 4)
        self.rate_weight = config.get("rate_weight", 0.01)

    def init(self, rng, example_batch):
        x = _to_float(jnp.asarray(example_batch["image"]))
        ae = self.net.init(rng, x)["params"]
        logits = jnp.zeros((self.latent, 2 * SUPPORT + 1), jnp.float32)
        return {"params": {"autoencoder": ae, "entropy_model": {"logits": logits}}, "state": {}}

    def _symbol_log_probs(self, logits):
        return jax.nn.log_softmax(logits, axis=-1)  # (C, K)

    def loss(self, params, state, batch, rng, train):
        x = _to_float(batch["image"])
        y = self.net.apply({"params": params["autoencoder"]}, x, method=ToyAutoencoder.encode)
        y_hat = jnp.clip(round_ste(y), -SUPPORT, SUPPORT)
        x_hat = self.net.apply({"params": params["autoencoder"]}, y_hat, method=ToyAutoencoder.decode)
        mse = jnp.mean((x - x_hat) ** 2)
        # The entropy model learns the symbol frequencies (cross-entropy) and never moves the encoder.
        symbols = jax.lax.stop_gradient(y_hat).astype(jnp.int32) + SUPPORT
        log_probs = self._symbol_log_probs(params["entropy_model"]["logits"])
        bits = -jnp.sum(jnp.take_along_axis(log_probs[None, None, None], symbols[..., None], -1)) / jnp.log(2.0)
        bpp = bits / (x.shape[0] * x.shape[1] * x.shape[2])
        loss = mse * 255.0**2 / 100.0 + self.rate_weight * bpp
        return loss, ({"mse": mse, "bpp": bpp}, state)

    # --- coding ---------------------------------------------------------------------------------------------
    def _symbols(self, variables, image):
        padded, _ = pad_to_multiple(image, self.pad_multiple)
        x = _to_float(jnp.asarray(padded)[None])
        y = self.net.apply({"params": variables["params"]["autoencoder"]}, x, method=ToyAutoencoder.encode)
        return np.asarray(jnp.clip(jnp.round(y), -SUPPORT, SUPPORT)).astype(np.int32)[0] + SUPPORT

    def _probs(self, variables, count_per_channel):
        probs = np.asarray(jax.nn.softmax(variables["params"]["entropy_model"]["logits"], axis=-1), np.float64)
        return np.tile(probs, (count_per_channel, 1))  # symbols are flattened channel-last

    def compress(self, variables, image, **settings):
        if settings:
            raise ConfigError(f"{self.name} has no setting(s) {sorted(settings)}")
        image = self.check_image(image)
        symbols = self._symbols(variables, image).reshape(-1)
        # One set of integer frequencies for the coder and for the estimate: the estimate is the exact code
        # length of what the coder writes (up to its final word).
        freqs = entropy.quantize_pmf(self._probs(variables, symbols.size // self.latent))
        enc = entropy.SymbolEncoder()
        enc.encode(symbols, freqs=freqs)
        header = container.Header(
            codec=self.name,
            fingerprint=fingerprint(variables),
            height=image.shape[0],
            width=image.shape[1],
            settings={},
        )
        data = container.pack(container.Container(header, (("latent", enc.to_bytes()),)))
        return Compressed(data, entropy.code_length_bits(symbols, freqs))

    def decompress(self, variables, data, **settings):
        if settings:
            raise ConfigError(f"{self.name} decompress takes no setting(s) {sorted(settings)}")
        box, _ = self.unpack_own(variables, data)
        h, w = box.header.height, box.header.width
        hp, wp = -(-h // self.pad_multiple) * self.pad_multiple, -(-w // self.pad_multiple) * self.pad_multiple
        shape = (hp // 4, wp // 4, self.latent)
        dec = entropy.SymbolDecoder(box.part("latent"))
        symbols = dec.decode(self._probs(variables, shape[0] * shape[1])).reshape(shape)
        y_hat = jnp.asarray(symbols - SUPPORT, jnp.float32)[None]
        x_hat = self.net.apply({"params": variables["params"]["autoencoder"]}, y_hat, method=ToyAutoencoder.decode)
        image = np.asarray(jnp.clip(jnp.round((x_hat[0] + 0.5) * 255.0), 0, 255)).astype(np.uint8)
        return crop(image, (h, w))


def toy_config(**train_overrides) -> ml_collections.ConfigDict:
    from lcomp import configs

    cfg = configs.base_config()
    cfg.codec = "toy"
    cfg.codec_module = "tests.toy_codec"
    cfg.model = ml_collections.ConfigDict(dict(channels=8, latent=4, rate_weight=0.01))
    cfg.data.patch_size = 16
    cfg.data.batch_size = 8
    cfg.optim = ml_collections.ConfigDict(
        {
            "autoencoder": configs.optimizer_config(3e-3),
            "entropy_model": configs.optimizer_config(3e-2),
        }
    )
    cfg.train.num_steps = 50
    cfg.train.log_every = 10
    cfg.train.checkpoint_every = 10
    cfg.train.progress = False
    cfg.train.update(train_overrides)
    return cfg
