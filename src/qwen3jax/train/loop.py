"""The run loop, the same for every phase: from an experiment config it builds the mesh, the loss (which declares
its batch spec), the train state (`state.create_train_state`), the batch source (`batch_sources.SOURCES`), the
frozen models (`frozen.py`) and the phase's evaluator and sampler (`evals.py`); then

    for each step: batch = source.next(state); state, metrics = step(state, batch, frozen)
                   → log / eval / checkpoint (train state + source position)

with progress, metrics, checkpoints (resume, preemption), samples and a curves PNG inside the run directory.

Run directory: config.json (snapshot), checkpoints/, metrics.jsonl, tensorboard/, curves.png, samples.txt,
data_report.json.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from qwen3jax import interrupt, runlog
from qwen3jax.data.pipeline import configured_tokenizer
from qwen3jax.model import ModelConfig
from qwen3jax.model.config import describe
from qwen3jax.model.expert_parallel import describe_exchange
from qwen3jax.model.splash import resolve_kernel
from qwen3jax.parallel import distributed, make_mesh
from qwen3jax.rewards.base import LentModel
from qwen3jax.train.batch import BatchLayout
from qwen3jax.train.batch_sources import SOURCES, BatchSource
from qwen3jax.train.checkpoint import Checkpointer, check_same_shapes, load_params, resolve_init_checkpoint
from qwen3jax.train.evals import EVALS, SAMPLES, EvalError
from qwen3jax.train.frozen import load_frozen_models, load_model, weights_kind
from qwen3jax.train.losses import LOSSES
from qwen3jax.train.metrics import MetricsWriter, format_duration, plot_curves, read_metrics, truncate_metrics
from qwen3jax.train.optim import check_optimizer_settings
from qwen3jax.train.state import create_train_state
from qwen3jax.train.step import FrozenModel, TrainState, train_step

import qwen3jax.distill  # noqa: E402,F401  (registers the distillation loss, batch source and evaluation)
import qwen3jax.rl  # noqa: E402,F401  (registers the RL loss, batch source and evaluation)

# Dense bf16 peak FLOP/s per device, for the MFU estimate (device_kind substring → FLOP/s).
# First match wins: "TPU v5 lite" (v5e) must come before "TPU v5" (v5p).
_PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5": 459e12, "TPU v6": 918e12,
               "H100": 989e12, "H200": 989e12, "B200": 2250e12, "A100": 312e12}  # fmt: skip


class RunStopped(RuntimeError):
    """The run cannot continue (e.g. persistent non-finite gradients); the message says why."""


def peak_flops_per_device(override: float) -> float:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    for name, flops in _PEAK_FLOPS.items():
        if name in kind:
            return flops
    # CPU (or unknown): measure a matmul now, so MFU means "fraction of what this machine's XLA can do".
    n = 1024
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(3):
        f(a).block_until_ready()
    return 3 * 2 * n**3 / (time.perf_counter() - start)


# Settings that do not change what is computed: a run may be resumed with different values of these.
_RESUMABLE_KEYS = ("variant_reason", "log_every", "eval", "checkpoint", "samples", "hardware")


def _config_snapshot(workdir: pathlib.Path, config: ml_collections.ConfigDict, *, write: bool) -> None:
    """Write config.json; refuse to continue a run (a directory with checkpoints) that was made with another config.
    Without checkpoints nothing of the earlier attempt is worth keeping, so its config.json is replaced."""
    path = workdir / "config.json"
    current = json.loads(config.to_json_best_effort(sort_keys=True))
    if path.exists() and (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir()):
        saved = json.loads(path.read_text())
        diff = sorted(k for k in _diff_keys(saved, current) if not k.startswith(_RESUMABLE_KEYS))
        if diff:
            raise RunStopped(
                f"{workdir} holds a run with a different config (differs at: {', '.join(diff[:8])}). Resume it with "
                f"the same settings, or pass another WORKDIR / --workdir; nothing was changed."
            )
    if write:  # whole or not at all: the other processes of a run read it at the same moment (the check above)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(current, indent=2, sort_keys=True))
        partial.replace(path)


def _lookup(config: ml_collections.ConfigDict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in set(a) | set(b) for k in _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def make_run_directory(workdir: pathlib.Path) -> None:
    """mkdir -p, with a one-line error naming the path when it cannot be a run directory."""
    blocker = next((p for p in (workdir, *workdir.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "is a file" if blocker == workdir else f"lies below the file {blocker}"
        raise RunStopped(f"the run directory {workdir} {where}; pass another --workdir (WORKDIR=...)")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunStopped(f"the run directory {workdir} cannot be created ({e.strerror}); pass another --workdir "
                         f"(WORKDIR=...)") from None  # fmt: skip


class Trainer:
    def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path, devices=None):
        """`devices`: the devices of the mesh (default: all), e.g. one device for a single-device reference run."""
        self.config = config
        self.workdir = pathlib.Path(workdir)
        self.primary = jax.process_index() == 0
        self.stop_signal: str | None = None  # the signal that stopped the run early, if one did
        self._frozen: dict[str, FrozenModel] | None = None  # loaded on first use (`frozen_models`)
        for key in ("steps", "log_every", "checkpoint.every", "checkpoint.keep", "global_batch", "seq_len"):
            if _lookup(config, key) < 1:
                raise ValueError(f"config.{key} must be >= 1, got {_lookup(config, key)}")
        if config.micro_batches < 0:
            raise ValueError(f"config.micro_batches must be >= 1, or 0 for one sequence per batch shard per "
                             f"micro-batch; got {config.micro_batches}")  # fmt: skip
        self.mesh = make_mesh(dict(config.mesh), devices)
        self.micro_batches = resolve_micro_batches(config.global_batch, config.micro_batches, dict(self.mesh.shape))
        per_micro = config.global_batch // self.micro_batches
        if config.global_batch % jax.process_count():
            raise ValueError(f"global_batch={config.global_batch} must split evenly over {jax.process_count()} processes")
        check_optimizer_settings(config.optim)
        self.model_cfg = ModelConfig.from_dict(config.model.to_dict())
        # "auto" kernels follow the mesh's devices, which are TPUs also when compiling for a slice from a CPU host.
        platform = self.mesh.devices.flat[0].platform
        self.model_cfg = self.model_cfg.replace(attention_kernel=resolve_kernel(self.model_cfg.attention_kernel, platform))
        loss_cfg = dict(config.loss)
        self.loss_fn = LOSSES.get(loss_cfg.pop("name"))(**loss_cfg)
        # The loss's batch spec at this run's sizes: the source's batches, the step's shardings and aot follow it.
        self.layout = BatchLayout(self.loss_fn.batch_spec, self.mesh, {"batch": config.global_batch, "seq": config.seq_len})
        self.tokenizer = configured_tokenizer_for(config)
        self._check_vocab()
        make_run_directory(self.workdir)
        _config_snapshot(self.workdir, config, write=self.primary)
        self.tokens_per_step = config.global_batch * config.seq_len
        self.flops_per_step = self.model_cfg.flops_per_token(config.seq_len) * self.tokens_per_step
        # Simulated CPU devices share the host's cores: the measured peak is already the whole machine's.
        cpu = jax.devices()[0].platform == "cpu"
        self.peak_flops = peak_flops_per_device(config.hardware.peak_flops) * (1 if cpu else jax.device_count())
        self.log(f"model: {describe(self.model_cfg)}")
        self.log(f"mesh: {dict(self.mesh.shape)} over {self.mesh.size} {self.mesh.devices.flat[0].platform} device(s)")
        m = self.model_cfg
        if m.is_moe and m.moe_expert_exchange != "none" and self.mesh.shape["expert"] > 1:
            token_shards = math.prod(self.mesh.shape[a] for a in ("data", "fsdp", "expert", "context"))
            tokens_per_device = per_micro * config.seq_len // token_shards
            with jax.set_mesh(self.mesh):  # `auto` resolves by the mesh's platform
                self.log(describe_exchange(m.moe_expert_exchange, m.moe_capacity_factor, tokens_per_device,
                                           m.num_experts_per_tok, m.num_experts, self.mesh.shape["expert"]))  # fmt: skip

    def log(self, message: str) -> None:
        if self.primary:
            runlog.say(message)

    # ---- what a run is made of -----------------------------------------------------------------------------------
    def init_state(self) -> TrainState:
        """A fresh train state (weights from `seed`), laid out on the mesh."""
        state, self.schedule = create_train_state(self.model_cfg, self.config.optim, self.config.steps, self.mesh,
                                                  seed=self.config.seed)  # fmt: skip
        return state

    def to_global(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return self.layout.to_global(local_batch)

    def step_function(self, state_shardings, frozen_shardings=None):
        """The jitted train step `(state, batch[, frozen]) -> (state, metrics)` with explicit shardings of the
        state, the batch (the loss's batch spec) and, when given, the frozen models; the state's buffers donated."""
        in_shardings = (state_shardings, self.layout.shardings())
        return jax.jit(
            functools.partial(train_step, loss_fn=self.loss_fn, num_micro_batches=self.micro_batches),
            in_shardings=in_shardings if frozen_shardings is None else (*in_shardings, frozen_shardings),
            out_shardings=(state_shardings, None),
            donate_argnums=0,
        )

    def batch_source(self) -> BatchSource:
        options = dict(self.config.batch_source)
        return SOURCES.get(options.pop("name"))(self, **options)

    def frozen_models(self) -> dict[str, FrozenModel]:
        """The config's frozen models on the mesh, loaded once: the train step and the rewards share them."""
        if self._frozen is None:
            self._frozen = load_frozen_models(self.config.frozen.to_dict(), mesh=self.mesh, student=self.model_cfg)
            for name in self._frozen:
                self.log(f"frozen model {name}: {self.config.frozen[name].path}")
        return self._frozen

    def lend_frozen(self, name: str) -> LentModel:
        """The frozen model `name` for a model-based reward (`{"name": ..., "frozen": name}` in a rewards list)."""
        frozen = self.frozen_models()
        if name not in frozen:
            raise ValueError(f"a reward asks for the frozen model {name!r}, but config.frozen holds {sorted(frozen)}; "
                             f"add frozen.{name}.path")  # fmt: skip
        return LentModel(frozen[name], str(self.config.frozen[name].path), self.tokenizer)

    # ---- loop ---------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """build state → for each step: batch = source.next(state); state = step(state, batch, frozen) → log /
        eval / checkpoint."""
        c = self.config
        state = self.init_state()
        self.source = self.batch_source()
        frozen = self.frozen = self.frozen_models()  # evaluations may read them too (e.g. a teacher)
        self.evaluator = EVALS.get(c.eval.name)(self)
        ckpt = Checkpointer(self.workdir, keep=c.checkpoint.keep, async_save=c.checkpoint.async_save, log=self.log)
        restored = ckpt.restore(state, self.source)  # the newest checkpoint that reads back, if any
        resumed = restored is not None
        if resumed:
            state = restored
        elif c.init_from:
            state = state.replace(params=self._init_params(state.params))
        step = int(state.step)
        metrics_path = self.workdir / "metrics.jsonl"
        # Rows after the checkpoint are logged again; a fresh start drops an earlier, checkpoint-less attempt's rows
        # (its config.json was replaced too). TensorBoard hides its events from the same step on.
        first_new_step = step + 1 if resumed else 0
        if self.primary:
            truncate_metrics(metrics_path, after_step=first_new_step - 1)

        shardings = jax.tree.map(lambda x: x.sharding, (state, frozen))
        step_fn = self.step_function(*shardings)
        writer = MetricsWriter(self.workdir, enabled=self.primary, purge_step=first_new_step)
        stop = _StopFlag()
        final = {}
        if step >= c.steps:  # the results are those logged before (a sweep collects them)
            self.log(f"run already complete at step {step} (steps={c.steps})")
            for row in read_metrics(metrics_path):
                final.update({k: v for k, v in row.items() if k.startswith(("train/", "eval/"))})
        window_start, window_steps, start_step = time.perf_counter(), 0, step
        try:
            with jax.set_mesh(self.mesh):
                if step == 0 and c.eval.every:  # the starting point of the eval curve
                    self.evaluate(state, 0, writer)
                    window_start = time.perf_counter()
                lagging = None  # the previous step's non-finite count, read once this step is queued: no stall
                while step < c.steps:
                    state, metrics = step_fn(state, self.source.next(state), frozen)
                    step += 1
                    window_steps += 1
                    if lagging is not None:
                        self._check_nonfinite(int(lagging))
                    lagging = metrics["nonfinite_in_a_row"]
                    if step % c.log_every == 0 or step == c.steps or step == start_step + 1:
                        metrics = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()}
                        metrics.update({f"train/{k}": v for k, v in self.source.metrics().items()})
                        updates = step - int(state.opt_state.total_notfinite)  # skipped steps do not move the schedule
                        seconds_per_step = (time.perf_counter() - window_start) / window_steps
                        # The first step's time includes compilation: no ETA from it.
                        final = self._report(step, updates, metrics, seconds_per_step, writer, eta=step > start_step + 1)
                        window_start, window_steps = time.perf_counter(), 0
                        self._check_nonfinite(int(metrics["train/nonfinite_in_a_row"]))
                    paused = time.perf_counter()  # checkpoints and evals do not count as step time
                    stopping = stop.agreed()
                    if step % c.checkpoint.every == 0 or step == c.steps or stopping:
                        ckpt.save(state, self.source, force=True)
                    if stopping:
                        self.stop_signal = stop.requested or "SIGTERM"  # another process's: the same preemption
                        if self._eval_due(step):  # a resumed run starts after this step: now or never
                            final.update(self.evaluate(state, step, writer))
                        ckpt.wait()
                        self.log(f"stopped by {stop.requested or 'another process'} at step {step}; checkpoint saved — rerun the same "
                                 f"command to resume")  # fmt: skip
                        return final
                    if self._eval_due(step):
                        final.update(self.evaluate(state, step, writer))
                    window_start += time.perf_counter() - paused
                ckpt.wait()
                if step >= c.steps and c.samples.num:
                    self.write_samples(state)
                if stop.requested:  # came during the final eval, checkpoint wait or samples: complete, yet signalled
                    self.stop_signal = stop.requested
                    self.log(f"{stop.requested} received while the run finished; it is complete")
        finally:
            stop.restore()
            ckpt.close()
            writer.close()
            if self.primary:
                (self.workdir / "data_report.json").write_text(json.dumps(self.source.report(), indent=2, default=str))
                if (self.workdir / "metrics.jsonl").exists():
                    self.log(f"curves: {plot_curves(self.workdir)}")
        return final

    def _init_params(self, abstract_params: dict) -> dict:
        """`init_from`'s parameters (a run, a native checkpoint or an HF folder), saying which step of a run they
        come from and warning if that run did not finish."""
        if weights_kind(self.config.init_from) != "run":
            _, _, params = load_model(self.config.init_from, mesh=self.mesh, runtime=self.model_cfg)
            self.log(f"initialised weights from {self.config.init_from}")
            try:
                check_same_shapes(params, abstract_params, f"init_from {self.config.init_from}")
            except ValueError as e:
                raise RunStopped(str(e)) from None
            return params
        step_dir = resolve_init_checkpoint(self.config.init_from)
        self.log(f"initialised weights from {step_dir}")
        source_config = step_dir.parent.parent / "config.json"
        if step_dir.name.isdigit() and source_config.is_file():
            planned = json.loads(source_config.read_text()).get("steps")
            if isinstance(planned, int) and int(step_dir.name) < planned:
                self.log(f"warning: that run stopped at step {step_dir.name} of its {planned} steps: an unfinished "
                         "stage (resume it first if that was not meant)")  # fmt: skip
        try:
            return load_params(step_dir, abstract_params)
        except ValueError as e:  # another model's checkpoint: one line naming the parameters
            raise RunStopped(str(e)) from None

    def _eval_due(self, step: int) -> bool:
        every = self.config.eval.every
        return bool(every) and (step % every == 0 or step == self.config.steps)

    def _check_nonfinite(self, in_a_row: int) -> None:
        if in_a_row >= self.config.optim.max_nonfinite_steps:
            raise RunStopped(
                f"{in_a_row} steps in a row had a non-finite loss, gradient or update (they were skipped); lower "
                f"optim.peak_lr or check the data"
            )

    def _report(self, step, updates, metrics, seconds_per_step, writer, *, eta: bool) -> dict[str, float]:
        """Log one step. `updates`: updates applied so far; the rate shown is the one the latest of them used."""
        c = self.config
        lr = float(self.schedule(max(updates - 1, 0)))
        tok_s = self.tokens_per_step / seconds_per_step
        mfu = self.flops_per_step / seconds_per_step / self.peak_flops
        metrics.update({"train/lr": lr, "train/tokens_per_s": tok_s, "train/mfu": mfu})
        writer.write(step, metrics)
        skipped = " SKIPPED(non-finite)" if metrics["train/skipped"] else ""
        self.log(
            f"step {step:>6}/{c.steps}  loss {metrics['train/loss']:.4f}  grad_norm {metrics['train/grad_norm']:.3f}  "
            f"lr {lr:.2e}  {tok_s:,.0f} tok/s  MFU {mfu:.1%}  "
            f"ETA {format_duration(seconds_per_step * (c.steps - step) if eta else math.nan)}{skipped}"
        )
        return metrics

    def evaluate(self, state: TrainState, step: int, writer: MetricsWriter) -> dict[str, float]:
        """The phase's evaluation (`eval.name`), logged and written."""
        try:
            result = self.evaluator(state)
        except EvalError as e:
            raise RunStopped(str(e)) from None
        writer.write(step, result)
        shown = "  ".join(f"{k.removeprefix('eval/')} {int(v) if float(v).is_integer() else round(v, 4):,}"
                          for k, v in result.items())  # fmt: skip
        self.log(f"eval  step {step}: {shown}")
        return result

    def _check_vocab(self) -> None:
        """Ids beyond the embedding table would silently read NaN rows: reject the pairing up front."""
        vocab = self.tokenizer.vocab_size
        if vocab > self.model_cfg.vocab_size:
            raise ValueError(
                f"the tokenizer has {vocab} tokens but model.vocab_size is {self.model_cfg.vocab_size}; "
                f"raise model.vocab_size or use a smaller tokenizer (data.vocab_size)"
            )

    def write_samples(self, state: TrainState) -> None:
        """The phase's samples (`samples.name`), into samples.txt."""
        text = SAMPLES.get(self.config.samples.name)(self)(state)
        if self.primary:
            (self.workdir / "samples.txt").write_text(text)
            self.log("samples:\n" + text)


def resolve_micro_batches(global_batch: int, micro_batches: int, mesh_shape: dict[str, int]) -> int:
    """The number of micro-batches a step accumulates: `micro_batches`, or for 0 as many as the mesh allows (one
    sequence per batch shard each: the least memory per device, e.g. for 32K-token sequences). Each micro-batch must
    split evenly over the batch shards (data x fsdp x expert), or every device would compute the whole batch."""
    batch_shards = math.prod(mesh_shape[a] for a in ("data", "fsdp", "expert"))
    resolved = micro_batches or max(global_batch // batch_shards, 1)
    if global_batch % resolved or (global_batch // resolved) % batch_shards:
        raise ValueError(
            f"global_batch={global_batch} / micro_batches={resolved} must be a multiple of the {batch_shards} batch "
            f"shards of the mesh (data × fsdp × expert), or every device would compute the whole batch; "
            f"micro_batches=0 picks the most that fit"
        )
    return resolved


def configured_tokenizer_for(config: ml_collections.ConfigDict):
    from qwen3jax.data.config import parse_data_config

    return configured_tokenizer(parse_data_config(config.data))


class _StopFlag:
    """SIGTERM/SIGINT (pod preemption, Ctrl-C) ask the loop to checkpoint and exit at the next step boundary; a
    second signal restores the default handler, so a hung step can still be interrupted."""

    def __init__(self):
        interrupt.raise_if_interrupted()  # a Ctrl-C during set-up that a library swallowed still ends the run here
        self.requested: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        if self.requested:
            self.restore()
            signal.raise_signal(signum)
        self.requested = signal.Signals(signum).name

    def agreed(self) -> bool:
        """Whether any process was asked to stop: every host must checkpoint and leave at the same step, or the
        others would wait in the next step's collectives forever."""
        return distributed.any_process(bool(self.requested))

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
