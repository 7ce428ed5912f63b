"""Li et al. 2018 as a codec: binary code + learned importance map, both coded by exact 3D context models.

    image -> pad to 8 (edge) -> encoder (network.py) -> e (n channels, sigmoid) and p (importance map)
          -> b = 1[e > 0.5] (straight-through, lcomp.quantize.threshold_ste)
          -> Q = floor(L p) -> mask m[k] = 1[k < (n/L) Q] (importance.py, the paper's backward pass)
          -> map: Q's log2(L) bit-planes (P, h, w)  -> exact context model "map_model"  -> part "map"
          -> code: the bits b[k] with m[k] = 1 (n, h, w) -> exact context model "code_model" -> part "code"
    file  -> map (wavefront) -> Q -> mask -> code bits inside the mask (wavefront) -> c = m * b -> decoder

Both context models are `lcomp.entropy.context3d` networks (four masked (2, 3, 3) convolutions, depth =
bit-plane or code channel) with L = 2 symbols: the spec's 4 x 5 x 5 input-masked context cube re-expressed as
a masked 3D convolution (spec 7.6; the receptive field covers 4 earlier channels and a 9 x 9 window of the
current channel's causal half, so it contains the cube). Inputs: a sent bit is -1 or +1, an unsent bit (outside
the mask) and the padding are 0, a third value the model can tell from both (our choice, spec 7.6). The
arithmetic is exact, so the encoder's ONE dense pass and the decoder's wavefront (4 d + 2 h + w, one cached
batched step per front) give identical integer tables on any machine.

Stages (spec 4.2), the `stage` config field:
    1: no importance map: every one of the n channels is kept and coded, no rate term, no "map" part;
    2: the map, its mask and the rate term gamma * max(mean(p) - r, 0) (spec 4.1's recommended form: a
       mean over positions, r a fraction of the map's range; `rate_target` = r, `gamma`); start it from a
       stage-1 run with `train.init_from`.
Distortion: mean squared error of the [-1, 1] images (Caffe's EuclideanLoss is a per-image sum / 2; a
per-pixel mean makes gamma independent of the patch size, spec 7.5).

The context models are their own optimizer group ("context_model") and minimise their own cross-entropy
(sent code bits + map bits) on the detached code in the same jitted step; the autoencoder never sees that
rate, only the paper's proxy through p. The estimate a file reports (`Compressed.estimated_bits`) is the
models' ideal code length of the very tables the coder used.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lcomp import container
from lcomp.codecs.base import Codec
from lcomp.codecs.li2018 import importance
from lcomp.codecs.li2018.network import Decoder, Encoder, NetworkConfig, to_u8
from lcomp.codecs.registry import register
from lcomp.data import crop, pad_to_multiple
from lcomp.entropy import schedules
from lcomp.entropy.context3d import FREQUENCY_PRECISION, ContextModel, ContextModelConfig, Wavefront, input_values
from lcomp.entropy.range_coding import SymbolEncoder
from lcomp.entropy.side_info import mask_from_counts
from lcomp.errors import BitstreamError, ConfigError
from lcomp.fingerprint import fingerprint
from lcomp.interface import Compressed
from lcomp.quantize import threshold_ste

STAGES = (1, 2)
#: What the context models read for symbol s: bit 0 -> -1, bit 1 -> +1, and UNSENT (= 2) -> 0.
VALUES = np.array([-1.0, 1.0, 0.0], np.float32)
UNSENT = 2
PAD = 0.0


def _inputs(bits, sent):
    """Context-model input (no gradient) of bits in {0, 1} where `sent`, 0 elsewhere."""
    symbols = jnp.where(sent, jnp.asarray(bits, jnp.int32), UNSENT)
    return input_values(jnp.asarray(VALUES), jax.lax.stop_gradient(symbols))


class _BitVolume:
    """One exact context model over a binary volume (depth, h, w): the encoder's dense tables, the decoder's
    wavefront tables, and the decode with the re-encode check (shared by the map and the code)."""

    def __init__(self, model: ContextModel):
        self.model = model

    @functools.partial(jax.jit, static_argnums=(0,))
    def _dense_index(self, params, bits, sent):
        logits = self.model.logits(params, _inputs(bits, sent)[None], jnp.float32(PAD))
        return self.model.logit_index(logits)[0]

    def dense_tables(self, params, sent):
        def dense(bits):
            index = np.asarray(self._dense_index(params, jnp.asarray(bits), jnp.asarray(sent)))
            freqs = np.zeros((*bits.shape, 2), np.uint32)
            freqs[sent] = self.model.frequencies(index[sent])
            return freqs

        return dense

    def wavefront_tables(self, params, sent):
        wave = Wavefront(self.model, params, VALUES, sent.shape, unsent_value=PAD, pad=PAD)
        state = {"next": wave.first, "rows": None}

        def tables(symbols, coding_pass, where):
            t = coding_pass.step[0]
            while state["next"] <= t:  # fronts without sent bits (and the margin fronts) run too
                s = state["next"]
                d, h, w = wave.positions(s - 1)
                state["rows"] = wave.step(s, np.where(sent[d, h, w], symbols[d, h, w], UNSENT).astype(np.int32))
                state["next"] = s + 1
            d, h, w = wave.positions(t)
            return self.model.frequencies(state["rows"][sent[d, h, w]])

        return tables

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def schedule(shape, part) -> schedules.Schedule:
        return schedules.wavefront(*shape, part=part)

    def encode(self, params, bits, sent, part) -> tuple[bytes, float]:
        streams, estimates = schedules.encode(
            self.schedule(bits.shape, part), np.where(sent, bits, 0).astype(np.int32),
            dense_tables=self.dense_tables(params, sent), sent=sent, precision=FREQUENCY_PRECISION,
        )
        return streams[part], estimates[part]

    def decode(self, params, stream: bytes, sent, part) -> np.ndarray:
        tables = self.wavefront_tables(params, sent)
        used = []

        def recording(symbols, coding_pass, where):
            freqs = tables(symbols, coding_pass, where)
            used.append((where, freqs))
            return freqs

        bits = schedules.decode(self.schedule(sent.shape, part), {part: stream}, recording, sent=sent,
                                precision=FREQUENCY_PRECISION)
        if bits.size and bits.max() > 1:
            raise BitstreamError(f"the {part} stream decodes to a symbol outside {{0, 1}} (damaged data)")
        # The range coder has no redundancy: only the exact stream the decoded bits encode to is accepted.
        if used:
            check = SymbolEncoder(FREQUENCY_PRECISION)
            check.encode(np.concatenate([bits[where] for where, _ in used]),
                         freqs=np.concatenate([freqs for _, freqs in used]))
            if check.to_bytes() != bytes(stream):
                raise BitstreamError(f"the {part} stream is not the one its decoded bits encode to (damaged data)")
        elif stream:
            raise BitstreamError(f"this file codes no {part} bits, but its {part} stream is not empty")
        return bits


@register("li2018", config="li2018", zoo="li2018")
class Li2018(Codec):
    """Learning convolutional networks for content-weighted image compression (Li et al., CVPR 2018)."""

    param_groups = ("autoencoder", "context_model")
    pad_multiple = 8
    part_layout = container.PartLayout(side=("map",), streams=("code",))

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.net_config = NetworkConfig.from_mapping(config.get("network", {}))
        self.n = self.net_config.code_channels
        self.levels = int(config.get("levels", 16))
        if self.levels < 2 or self.levels & (self.levels - 1) or self.n % self.levels:
            raise ConfigError(f"levels must be a power of two >= 2 dividing code_channels ({self.n}), got {self.levels}")
        self.planes = importance.planes(self.levels)
        self.stage = int(config.get("stage", 2))
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be 1 (no importance map) or 2, got {self.stage}")
        self.gamma = float(config.get("gamma", 1.0))
        self.rate_target = float(config.get("rate_target", 0.0))
        if not 0.0 <= self.rate_target < 1.0:
            raise ConfigError(f"rate_target is a fraction of the map's range in [0, 1), got {self.rate_target}")
        code_cfg = ContextModelConfig.from_mapping(config.get("code_model", {}), num_centers=2, logit_relu=False)
        map_cfg = ContextModelConfig.from_mapping(config.get("map_model", {}), num_centers=2, logit_relu=False)
        if code_cfg.num_centers != 2 or map_cfg.num_centers != 2:
            raise ConfigError("li2018's context models code bits: num_centers must be 2")
        self.encoder = Encoder(self.net_config)
        self.decoder = Decoder(self.net_config)
        self.code_model = _BitVolume(ContextModel(code_cfg))
        self.map_model = _BitVolume(ContextModel(map_cfg))

    # --- the forward pass ---------------------------------------------------------------------------------
    def _code(self, ae, image):
        """(b, p, m): bits (N, h, w, n) with straight-through gradient, map p (N, h, w), mask m (N, h, w, n)."""
        e, p = self.encoder.apply({"params": ae["encoder"]}, image)
        b = threshold_ste(e, 0.5)
        m = importance.mask(p, self.n, self.levels) if self.stage == 2 else jnp.ones_like(b)
        return b, p, m

    # --- training -----------------------------------------------------------------------------------------
    def init(self, rng, example_batch):
        n, h, w, _ = np.shape(example_batch["image"])
        if h % 8 or w % 8:
            raise ConfigError(f"li2018 trains on patches whose sides are multiples of 8, got {h}x{w}")
        k_enc, k_dec, k_code, k_map = jax.random.split(rng, 4)
        enc = self.encoder.init(k_enc, jnp.zeros((1, h, w, 3), jnp.uint8))
        dec = self.decoder.init(k_dec, jnp.zeros((1, h // 8, w // 8, self.n), jnp.float32))
        params = {
            "autoencoder": {"encoder": enc["params"], "decoder": dec["params"]},
            "context_model": {"code": self.code_model.model.init(k_code), "map": self.map_model.model.init(k_map)},
        }
        return {"params": params, "state": {}}

    def loss(self, params, state, batch, rng, train):
        ae, cm = params["autoencoder"], params["context_model"]
        image = batch["image"]
        x = jnp.asarray(image, jnp.float32) / 127.5 - 1.0
        b, p, m = self._code(ae, image)
        x_hat = self.decoder.apply({"params": ae["decoder"]}, m * b)
        mse = jnp.mean(jnp.square(x_hat - x))
        mean_p = jnp.mean(p)
        rate_loss = self.gamma * jnp.maximum(mean_p - self.rate_target, 0.0) if self.stage == 2 else 0.0 * mean_p

        # The context models' cross-entropy, on the detached code and map (their own objective).
        vol = lambda a: jnp.moveaxis(a, -1, 1)  # (N, h, w, n) -> (N, n, h, w)
        bits = jax.lax.stop_gradient(vol(b)).astype(jnp.int32)
        sent = jax.lax.stop_gradient(vol(m)) > 0
        code_logits = self.code_model.model.logits(cm["code"], _inputs(bits, sent), jnp.float32(PAD))
        code_bits = jnp.sum(self.code_model.model.bits(code_logits, bits) * sent)
        map_bits = jnp.zeros(())
        if self.stage == 2:
            q = importance.level(jax.lax.stop_gradient(p), self.levels)
            shifts = jnp.arange(self.planes - 1, -1, -1)
            planes = (q[:, None] >> shifts[None, :, None, None]) & 1  # (N, P, h, w), most significant first
            all_sent = jnp.ones(planes.shape, bool)
            map_logits = self.map_model.model.logits(cm["map"], _inputs(planes, all_sent), jnp.float32(PAD))
            map_bits = jnp.sum(self.map_model.model.bits(map_logits, planes))
        pixels = x.shape[0] * x.shape[1] * x.shape[2]
        total_ae = mse + rate_loss
        cm_objective = (code_bits + map_bits) / pixels  # bits per pixel: the same scale at any patch size
        metrics = {
            "loss": total_ae,
            "mse": mse,
            "rate_loss": rate_loss,
            "mean_importance": mean_p,
            "kept_fraction": jnp.mean(sent.astype(jnp.float32)),
            "bpp": cm_objective,  # estimated by the context models; files are measured by `lcomp eval`
            "bpp_code": code_bits / pixels,
            "bpp_map": map_bits / pixels,
            "psnr": 10.0 * jnp.log10(4.0 / jnp.maximum(jnp.mean(jnp.square(jnp.clip(x_hat, -1, 1) - x)), 1e-10)),
        }
        return {"autoencoder": total_ae, "context_model": cm_objective}, (metrics, state)

    # --- jitted pieces used by compress/decompress --------------------------------------------------------
    @functools.partial(jax.jit, static_argnums=(0,))
    def _analyse(self, ae, image):
        b, p, _ = self._code(ae, image)
        return b.astype(jnp.int32), importance.level(p, self.levels)

    @functools.partial(jax.jit, static_argnums=(0,))
    def _synthesise(self, ae, code):
        return self.decoder.apply({"params": ae["decoder"]}, code)

    def kept(self, q) -> np.ndarray:
        """The mask (n, h, w) both ends derive from the levels q (h, w); all channels in stage 1."""
        if self.stage == 1:
            return np.ones((self.n, *np.shape(q)), bool)
        return mask_from_counts(np.asarray(q, np.int32) * (self.n // self.levels), self.n)

    def network_timing(self, variables, image, timed) -> dict:
        """`lcomp bench`'s network part: encoder (with binarizer and map) and decoder seconds on this image."""
        ae = variables["params"]["autoencoder"]
        padded, _ = pad_to_multiple(self.check_image(image), self.pad_multiple)
        x = jnp.asarray(padded)[None]
        bits, _ = self._analyse(ae, x)
        code = bits.astype(jnp.float32)
        return {
            "encode_network_seconds": timed(lambda: jax.block_until_ready(self._analyse(ae, x))),
            "decode_network_seconds": timed(lambda: jax.block_until_ready(self._synthesise(ae, code))),
        }

    # --- compress -----------------------------------------------------------------------------------------
    def analyse(self, variables, image):
        """(bits (n, h, w), levels (h, w), kept mask (n, h, w)) of an image."""
        padded, _ = pad_to_multiple(self.check_image(image), self.pad_multiple)
        bits, q = self._analyse(variables["params"]["autoencoder"], jnp.asarray(padded)[None])
        q = np.asarray(q[0])
        kept = self.kept(q)
        return np.where(kept, np.moveaxis(np.asarray(bits[0]), -1, 0), 0).astype(np.int32), q, kept

    def compress(self, variables, image, **settings) -> Compressed:
        if settings:
            raise ConfigError(f"{self.name} has no setting(s) {sorted(settings)}")
        image = self.check_image(image)
        cm = variables["params"]["context_model"]
        bits, q, kept = self.analyse(variables, image)
        parts, estimate = [], 0.0
        if self.stage == 2:
            planes = importance.to_planes(q, self.levels)
            map_part, map_bits = self.map_model.encode(cm["map"], planes, np.ones(planes.shape, bool), "map")
            parts.append(("map", map_part))
            estimate += map_bits
        code_part, code_bits = self.code_model.encode(cm["code"], bits, kept, "code")
        parts.append(("code", code_part))
        header = container.Header(codec=self.name, fingerprint=fingerprint(variables), height=image.shape[0],
                                  width=image.shape[1], settings={})
        data = container.pack(container.Container(header, tuple(parts)))
        return Compressed(data, estimate + code_bits)

    # --- decompress ---------------------------------------------------------------------------------------
    def decode_code(self, variables, data):
        """(bits (n, h, w) with 0 outside the mask, levels (h, w), header) of a file."""
        box, _ = self.unpack_own(variables, data)
        header = box.header
        h, w = -(-header.height // 8), -(-header.width // 8)
        cm = variables["params"]["context_model"]
        if self.stage == 2:
            if "map" not in box.part_names:
                raise BitstreamError("this model's files carry an importance-map part; it is missing")
            shape = (self.planes, h, w)
            q = importance.from_planes(self.map_model.decode(cm["map"], box.part("map"), np.ones(shape, bool), "map"))
        else:
            if "map" in box.part_names:
                raise BitstreamError("this model (stage 1, no importance map) writes no map part")
            q = np.full((h, w), self.levels - 1, np.int32)
        kept = self.kept(q)
        bits = self.code_model.decode(cm["code"], box.part("code"), kept, "code")
        return bits, q, header

    def decompress(self, variables, data, **settings):
        if settings:
            raise ConfigError(f"decompress takes no setting(s) {sorted(settings)}")
        bits, _, header = self.decode_code(variables, data)
        code = jnp.asarray(np.moveaxis(bits, 0, -1), jnp.float32)[None]
        x_hat = self._synthesise(variables["params"]["autoencoder"], code)
        return crop(to_u8(x_hat[0]), (header.height, header.width))
