"""The one training engine every codec plugs into.

    config (experiments/configs/<name>.py) -> codec (registry) + data (lcomp.data) + one optax optimizer per
    parameter group -> a jitted, data-parallel train step -> orbax checkpoints, metrics, progress bar.

Data parallelism is today's form of pmap: a `Mesh` over every device with one axis, "data"; the batch is
sharded along it with `NamedSharding(mesh, P("data"))`, everything else is replicated (`P()`), and `jax.jit`
inserts the gradient all-reduce. On several hosts `jax.distributed.initialize()` makes `jax.devices()` global
and each process feeds its own slice of the global batch.

Exact resume: the training batches are a pure function of `(seed, step)` and the step's random key is
`fold_in(key(seed), step)`, so the step number is the whole position of the data iterator. A run killed at any
moment resumes from its last checkpoint and reaches the same parameters as an uninterrupted run.

Objectives: `Codec.loss` returns one scalar, which every parameter group minimises (one backward pass), or
`{group: scalar}`, one objective per group (Mentzer 2018: the autoencoder minimises distortion + beta * rate,
the context model its cross-entropy). Then the step runs the codec's forward pass once (`jax.vjp`) and one
backward pass per group, with a one-hot cotangent over the objectives, keeping only that group's part of the
gradient: group g moves along the gradient of objective g with respect to its own parameters only, and XLA
drops the rest of each backward pass. The codec needs neither a second forward pass nor stop_gradient tricks
to keep one group's objective away from another group. The objectives dict must name exactly the codec's
parameter groups (a `TrainingError` on the first step otherwise). `metrics["loss"]` is the codec's own "loss"
metric if it reports one, else the sum of the objectives; each objective is logged as `objective/<group>`.

Training windows: group g is updated at `optim.<g>.train_from_step <= step < optim.<g>.train_until_step`
(0: no end). Outside its window the update is skipped (`lax.cond`, so a frozen group's backward pass does
not run when it has its own objective): its parameters and optimizer state stay bit-identical, so its
learning-rate schedule counts only the steps it trained, and its logged `grad_norm/<g>` is 0. Li 2018's
staged training is this with windows per group.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lcomp import configs
from lcomp.codecs import registry
from lcomp.errors import ConfigError, TrainingError
from lcomp.metric_writers import MetricWriter

log = logging.getLogger("lcomp.train")

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


# --- optimizers ---------------------------------------------------------------------------------------------


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Warmup (linear) followed by the configured decay."""
    lr = float(cfg.learning_rate)
    if cfg.schedule == "constant":
        decay = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        if cfg.decay_steps <= 0:
            raise ConfigError("cosine schedule needs optim.<group>.decay_steps > 0")
        decay = optax.cosine_decay_schedule(lr, cfg.decay_steps)
    elif cfg.schedule == "step":
        decay = optax.piecewise_constant_schedule(lr, {int(b): float(cfg.decay_rate) for b in cfg.boundaries})
    elif cfg.schedule == "exponential":
        if cfg.decay_steps <= 0:
            raise ConfigError("exponential schedule needs optim.<group>.decay_steps > 0")
        decay = optax.exponential_decay(lr, int(cfg.decay_steps), float(cfg.decay_rate), staircase=True)
    else:
        raise ConfigError(f"unknown schedule {cfg.schedule!r} (constant, cosine, step, exponential)")
    if cfg.warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, lr, int(cfg.warmup_steps))
        return optax.join_schedules([warmup, decay], [int(cfg.warmup_steps)])
    return decay


def training_window(cfg: ml_collections.ConfigDict, group: str) -> tuple[int, int]:
    """`(train_from_step, train_until_step)` of one group's optimizer section (until 0: no end), checked
    here so that an impossible window fails before any compilation instead of silently never training."""
    start = configs.integer_setting(f"optim.{group}.train_from_step", cfg.get("train_from_step", 0), minimum=0)
    until = configs.integer_setting(f"optim.{group}.train_until_step", cfg.get("train_until_step", 0), minimum=0)
    if until and until <= start:
        raise ConfigError(
            f"optim.{group}.train_until_step={until} must be 0 (no end) or greater than "
            f"train_from_step={start}: the group would never train"
        )
    return start, until


def build_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """One parameter group's optax optimizer from its config section."""
    schedule = learning_rate_schedule(cfg)
    if cfg.optimizer == "adam":
        opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.b1 or None)
    else:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r} (adam, adamw, sgd)")
    if cfg.grad_clip_norm and cfg.grad_clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
    return opt


# --- state and mesh -----------------------------------------------------------------------------------------


def make_mesh(devices=None) -> Mesh:
    """A one-axis ("data") mesh over the given devices (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def _state_dict(step, params, opt_state, state) -> dict:
    # A plain dict (not a custom pytree class) so that orbax saves and restores it without registration.
    return {"step": step, "params": params, "opt_state": opt_state, "state": state}


def make_variables_init_fn(codec, config: ml_collections.ConfigDict):
    """The function that builds a fresh model's `{"params", "state"}` (no optimizer involved).

    Needs only the `model`, `data.patch_size` and `train.seed` parts of a config, so inference loading can
    know a checkpoint's parameter structure without the optimizer sections."""
    size = config.data.patch_size
    example = {"image": np.zeros((1, size, size, 3), np.uint8)}
    seed = config.train.seed

    def init():
        variables = codec.init(jax.random.fold_in(jax.random.key(seed), 0), example)
        return {"params": variables["params"], "state": variables.get("state", {})}

    return init


def make_init_fn(codec, config: ml_collections.ConfigDict, optimizers: dict | None = None):
    """The function that builds a fresh train state (params, optimizer states, codec state, step).

    Also used with `jax.eval_shape` to know a checkpoint's structure before restoring it."""
    optimizers = optimizers or {g: build_optimizer(config.optim[g]) for g in codec.param_groups}
    init_variables = make_variables_init_fn(codec, config)

    def init():
        variables = init_variables()
        params = variables["params"]
        opt_state = {g: optimizers[g].init(params[g]) for g in codec.param_groups}
        return _state_dict(jnp.zeros((), jnp.int32), params, opt_state, variables["state"])

    return init


def _with_sharding(shapes, sharding):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def abstract_train_state(codec, config: ml_collections.ConfigDict, sharding) -> dict:
    """Shapes, dtypes and the wanted sharding of every leaf of a train state (for orbax restores)."""
    return _with_sharding(jax.eval_shape(make_init_fn(codec, config)), sharding)


def abstract_variables(codec, config: ml_collections.ConfigDict, sharding) -> dict:
    """Shapes, dtypes and sharding of a model's `{"params", "state"}`: the part of a train state that
    inference restores (`lcomp.models`), built without any optimizer."""
    return _with_sharding(jax.eval_shape(make_variables_init_fn(codec, config)), sharding)


@dataclasses.dataclass
class TrainResult:
    train_state: dict
    last_metrics: dict
    steps_per_second: float


class Trainer:
    """Builds everything a run needs from a config; `fit()` trains, resuming from the workdir if possible."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | pathlib.Path,
        *,
        devices=None,
        batches=None,
        codec=None,
    ):
        self.config = config
        self.workdir = pathlib.Path(workdir)
        _maybe_initialize_distributed(config)
        registry.import_codec_module(config.get("codec_module", ""))
        self.codec = codec if codec is not None else registry.create(config.codec, config.model)
        self.groups = tuple(self.codec.param_groups)
        missing = [g for g in self.groups if g not in config.optim]
        if missing:
            raise ConfigError(f"config.optim has no section for parameter group(s) {missing} of {config.codec}")
        self.optimizers = {g: build_optimizer(config.optim[g]) for g in self.groups}
        self.windows = {g: training_window(config.optim[g], g) for g in self.groups}

        self.mesh = make_mesh(devices)
        self.replicated = NamedSharding(self.mesh, P())
        self.data_sharding = NamedSharding(self.mesh, P("data"))
        num_devices = self.mesh.devices.size
        if config.data.batch_size % num_devices:
            raise ConfigError(
                f"data.batch_size={config.data.batch_size} is not divisible by the {num_devices} devices"
            )
        self.batches = batches if batches is not None else self._default_batches()

        self._train_step = jax.jit(
            self._step_fn,
            in_shardings=(self.replicated, self.data_sharding),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=(0,),
        )
        self._checkpoints = None

    # --- construction helpers -----------------------------------------------------------------------------
    def _default_batches(self):
        from lcomp import data

        cfg = self.config.data
        spec = source_spec(cfg)
        kodak = data.kodak_dir().resolve()
        if spec["source"] == "kodak" or (spec.get("path") and pathlib.Path(spec["path"]).resolve() == kodak):
            raise ConfigError("Kodak is the evaluation set: never train on it (choose another data.source)")
        source = data.make_source(spec)
        fraction = cfg.get("dead_leaves_fraction", 0.0)
        synthetic = None
        if fraction:
            synthetic = data.DeadLeavesSource(
                count=cfg.get("dead_leaves_count", 2000), size=cfg.get("dead_leaves_size", 128), seed=cfg.seed
            )
        return data.TrainBatches(
            source,
            patch_size=cfg.patch_size,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            permute_channels=cfg.get("permute_channels", False),
            rotate90=cfg.get("rotate90", False),
            synthetic_source=synthetic,
            synthetic_fraction=fraction,
        )

    def init_state(self) -> dict:
        """Fresh parameters, optimizer states and codec state, replicated over the mesh."""
        init = make_init_fn(self.codec, self.config, self.optimizers)
        return jax.jit(init, out_shardings=self.replicated)()

    # --- the step -----------------------------------------------------------------------------------------
    def _step_fn(self, train_state: dict, batch: dict):
        step = train_state["step"]
        rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.config.train.seed), 1), step)
        params, opt_state = train_state["params"], train_state["opt_state"]

        def forward(params):
            objective, (metrics, new_codec_state) = self.codec.loss(
                params, train_state["state"], batch, rng, train=True
            )
            return self._checked_objective(objective), (dict(metrics), new_codec_state)

        # One forward pass; the backward passes below reuse its residuals.
        objective, backward, (metrics, new_codec_state) = jax.vjp(forward, params, has_aux=True)
        if isinstance(objective, dict):
            gradient = {g: self._own_gradient(backward, objective, g) for g in self.groups}
            total = sum(objective[g] for g in self.groups)
            finite = jnp.all(jnp.stack([jnp.isfinite(objective[g]) for g in self.groups]))
            for g in self.groups:
                metrics[f"objective/{g}"] = objective[g]
        else:
            (grads,) = backward(jnp.ones_like(objective))
            gradient = {g: (lambda g=g: grads[g]) for g in self.groups}
            total = objective
            finite = jnp.isfinite(objective)
        metrics["loss"] = metrics.get("loss", total)
        finite &= jnp.isfinite(metrics["loss"])

        new_params, new_opt_state = {}, {}
        for g in self.groups:
            # Each group has its own optimizer, learning rate, state and training window, all in this one step.
            new_params[g], new_opt_state[g], grad_norm = self._update_group(
                g, step, gradient[g], params[g], opt_state[g]
            )
            metrics[f"grad_norm/{g}"] = grad_norm
            finite &= jnp.isfinite(grad_norm)
        metrics["finite"] = finite
        new_state = _state_dict(step + 1, new_params, new_opt_state, new_codec_state)
        return new_state, metrics

    def _checked_objective(self, objective):
        """The codec's objective as a scalar array or `{group: scalar}` in group order; a wrong set of
        groups or a non-scalar is a codec bug, reported while tracing the first step."""
        name = self.codec.name or type(self.codec).__name__
        if isinstance(objective, Mapping):
            missing = [g for g in self.groups if g not in objective]
            extra = [k for k in objective if k not in self.groups]
            if missing or extra:
                raise TrainingError(
                    f"codec {name!r}: loss returned objectives for {sorted(map(str, objective))}, but its "
                    f"parameter groups are {list(self.groups)} (one objective per group: missing {missing}, "
                    f"unexpected {extra}); return one scalar to give every group the same objective"
                )
            checked = {g: jnp.asarray(objective[g]) for g in self.groups}
        else:
            checked = {"": jnp.asarray(objective)}
        for g, value in checked.items():
            if value.shape != ():
                where = f" for group {g!r}" if g else ""
                raise TrainingError(f"codec {name!r}: loss returned an objective{where} of shape {value.shape}, "
                                    "not a scalar")
        return checked if isinstance(objective, Mapping) else checked[""]

    @staticmethod
    def _own_gradient(backward, objective: dict, group: str):
        """A thunk computing d objective[group] / d params[group]: the cotangent is one for the group's
        objective and zero for the others, and only the group's own component is kept (XLA prunes the
        other groups' parameter gradients). A thunk, so a frozen group's backward pass is never run."""

        def gradient():
            cotangent = {g: (jnp.ones_like if g == group else jnp.zeros_like)(v) for g, v in objective.items()}
            (grads,) = backward(cotangent)
            return grads[group]

        return gradient

    def _update_group(self, group: str, step, gradient, params, opt_state):
        """`(params, opt_state, grad_norm)` after this step: updated inside the group's training window,
        unchanged (bit for bit, grad_norm 0) outside it."""

        def train_group():
            grads = gradient()
            updates, new_opt_state = self.optimizers[group].update(grads, opt_state, params)
            return optax.apply_updates(params, updates), new_opt_state, optax.tree.norm(grads).astype(jnp.float32)

        def keep():
            return params, opt_state, jnp.zeros((), jnp.float32)

        start, until = self.windows[group]
        if start == 0 and until == 0:  # always trained: no conditional in the compiled step
            return train_group()
        active = step >= start
        if until:
            active &= step < until
        return jax.lax.cond(active, train_group, keep)

    def to_global(self, local_batch: dict) -> dict:
        """Assembles each process's slice into one array sharded along the mesh's data axis."""
        return {
            k: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(v))
            for k, v in local_batch.items()
        }

    def train_step(self, train_state: dict, local_batch: dict):
        """One jitted step; `train_state` is donated (do not reuse it afterwards)."""
        return self._train_step(train_state, self.to_global(local_batch))

    # --- checkpoints --------------------------------------------------------------------------------------
    @property
    def checkpoints(self):
        if self._checkpoints is None:
            import orbax.checkpoint as ocp

            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.config.train.keep_checkpoints, create=True
            )
            self._checkpoints = ocp.CheckpointManager(
                (self.workdir / CHECKPOINT_DIR).resolve(), options=options
            )
        return self._checkpoints

    def save(self, train_state: dict) -> None:
        import orbax.checkpoint as ocp

        step = int(jax.device_get(train_state["step"]))
        self.checkpoints.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(train_state)))

    def restore_or_init(self) -> dict:
        """The latest checkpoint in the workdir, or a fresh state if there is none."""
        import orbax.checkpoint as ocp

        latest = self.checkpoints.latest_step()
        if latest is None:
            fresh = self.init_state()
            source = self.config.train.get("init_from", "")
            return self._warm_start(fresh, source) if source else fresh
        abstract = abstract_train_state(self.codec, self.config, self.replicated)
        try:
            restored = self.checkpoints.restore(
                latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except Exception as exc:  # orbax/tensorstore errors: report which checkpoint and why
            raise TrainingError(
                f"cannot restore checkpoint {latest} in {self.workdir / CHECKPOINT_DIR}: {exc}"
            ) from exc
        return restored["state"]

    def _warm_start(self, fresh: dict, source) -> dict:
        """`train.init_from`: a fresh run whose parameters and codec state come from another model (a
        workdir's latest checkpoint or an exported model), e.g. Li 2018's stage 2 from its stage 1. The
        optimizer states and the step start fresh. The two models must have identical parameter trees."""
        from lcomp.models import load_model

        loaded = load_model(source)
        if loaded.codec.name != self.codec.name:
            raise ConfigError(f"train.init_from {source} holds a {loaded.codec.name!r} model, this run trains {self.codec.name!r}")
        for key in ("params", "state"):
            want = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), fresh[key])
            have = jax.tree.map(lambda x: (tuple(np.shape(x)), str(np.asarray(x).dtype)), loaded.variables[key])
            if jax.tree.structure(want) != jax.tree.structure(have) or jax.tree.leaves(want) != jax.tree.leaves(have):
                raise ConfigError(f"train.init_from {source}: its {key} do not match this model's (other widths?)")
        log.info("initialised from %s", loaded.label)
        state = dict(fresh)
        for key in ("params", "state"):
            state[key] = jax.device_put(jax.tree.map(jnp.asarray, loaded.variables[key]), self.replicated)
        return state

    # --- the loop -----------------------------------------------------------------------------------------
    def write_config(self) -> None:
        """Records the run's config; a workdir trained with another model config is refused."""
        if jax.process_index() != 0:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / CONFIG_FILE
        current = json.loads(configs.to_json(self.config))
        if path.exists():
            previous = json.loads(path.read_text())
            for key in ("codec", "model"):
                if previous.get(key) != current.get(key):
                    raise ConfigError(
                        f"{self.workdir} holds a run with a different {key!r} config; "
                        "use a new --workdir or the original config"
                    )
        path.write_text(json.dumps(current, indent=2, sort_keys=True))

    def fit(self, num_steps: int | None = None) -> TrainResult:
        cfg = self.config.train
        num_steps = cfg.num_steps if num_steps is None else num_steps
        if cfg.debug_nans:
            jax.config.update("jax_debug_nans", True)
        self.write_config()
        train_state = self.restore_or_init()
        start = int(jax.device_get(train_state["step"]))
        writer = MetricWriter(self.workdir, enabled=jax.process_index() == 0)
        last_saved = start if start > 0 else None
        pending: list[dict] = []
        last_metrics: dict = {}
        steps_per_second = 0.0
        progress = _progress_bar(cfg.progress and jax.process_index() == 0, start, num_steps)
        tick, tick_step = time.perf_counter(), start
        try:
            for step, local_batch in self._iterate(start):
                if step >= num_steps:
                    break
                train_state, metrics = self.train_step(train_state, local_batch)
                pending.append(metrics)
                done = step + 1
                is_last = done == num_steps
                check = cfg.check_finite_every and done % cfg.check_finite_every == 0
                save_now = done % cfg.checkpoint_every == 0 or is_last
                if check or save_now:
                    _raise_if_not_finite(pending, done, last_saved, self.workdir)
                if done % cfg.log_every == 0 or is_last:
                    now = time.perf_counter()
                    steps_per_second = (done - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, done
                    last_metrics = _mean_metrics(pending)
                    _raise_if_not_finite(pending, done, last_saved, self.workdir)
                    last_metrics["steps_per_second"] = steps_per_second
                    writer.write_scalars(done, last_metrics)
                    pending = []
                    progress.set_postfix(
                        loss=f"{last_metrics['loss']:.4g}",
                        bpp=f"{last_metrics.get('bpp', float('nan')):.3f}",
                        steps_s=f"{steps_per_second:.2f}",
                    )
                if save_now:
                    self.save(train_state)
                    last_saved = done
                progress.update(1)
            self.checkpoints.wait_until_finished()
        finally:
            progress.close()
            writer.close()
        return TrainResult(train_state, last_metrics, steps_per_second)

    def _iterate(self, start: int) -> Iterator[tuple[int, dict]]:
        if hasattr(self.batches, "iterate"):
            yield from self.batches.iterate(start_step=start, prefetch=self.config.data.get("prefetch", 2))
        else:  # any object with batch(step)
            step = start
            while True:
                yield step, self.batches.batch(step)
                step += 1


def source_spec(data_config) -> dict:
    """The image-source part of a `data` config section, in the form `lcomp.data.make_source` takes."""
    spec = {"source": data_config.source}
    takes = {"folder": ("path",), "embedded": ("split",), "tfds": ("name", "split", "data_dir"), "kodak": ("path",)}
    for key in takes.get(data_config.source, ()):
        value = data_config.get(key)
        if value not in ("", None):
            spec[key] = value
    return spec


def _mean_metrics(pending: list[dict]) -> dict:
    fetched = jax.device_get(pending)
    keys = [k for k in fetched[0] if k != "finite"]
    return {k: float(np.mean([m[k] for m in fetched])) for k in keys}


def _raise_if_not_finite(pending: list[dict], step: int, last_saved: int | None, workdir) -> None:
    flags = jax.device_get([m["finite"] for m in pending])
    if not all(bool(f) for f in flags):
        where = f"step {last_saved}" if last_saved is not None else "no checkpoint yet"
        raise TrainingError(
            f"non-finite loss or gradient within the {len(flags)} steps up to step {step}; training stopped. "
            f"The last good checkpoint in {workdir} is kept ({where}). Lower the learning rate, enable "
            "gradient clipping (--config.optim.<group>.grad_clip_norm=1.0) or set --config.train.debug_nans=True"
        )


class _NoProgress:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress_bar(enabled: bool, start: int, total: int):
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)


def _maybe_initialize_distributed(config) -> None:
    cfg = config.get("distributed")
    if not cfg or not cfg.enabled:
        return
    if jax.distributed.is_initialized():
        return
    kwargs: dict[str, Any] = {}
    if cfg.coordinator_address:
        kwargs["coordinator_address"] = cfg.coordinator_address
    if cfg.num_processes > 0:
        kwargs["num_processes"] = cfg.num_processes
    if cfg.process_id >= 0:
        kwargs["process_id"] = cfg.process_id
    jax.distributed.initialize(**kwargs)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, **kwargs) -> TrainResult:
    """Trains (or resumes) the run described by `config` in `workdir`."""
    return Trainer(config, workdir, **kwargs).fit()
