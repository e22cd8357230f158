"""The training loop (method §4): one random scale per step, L1 loss on the noise.

Reliability (see also `sinddm.checkpoint`):
- Exact resume: a checkpoint holds every RNG state, the optimizer, scheduler and EMA,
  the loss log's open window (the steps since the last loss.csv row) and the numeric
  guard's counters, so a run resumed from any checkpoint, killed or not, continues bit
  for bit (fp32 on the CPU) as the uninterrupted run, loss.csv included. A run that ends
  off the log grid writes a provisional last row; resuming replaces it.
- Numeric guard: a step whose loss or a gradient is NaN/inf changes no weights
  (`sinddm.numeric_guard`).

The Trainer is composed of parts that each own their state and their share of the
checkpoint: `guard` (NonFiniteGuard: "nonfinite"), `loss_log` (LossLog, `sinddm.loss_log`:
"loss_history", "loss_window"; loss.csv, loss.png) and `checkpoints` (CheckpointWriter,
`sinddm.train_checkpoints`: the files written at each checkpoint, the step last saved).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import torch
from torch.optim.lr_scheduler import MultiStepLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .checkpoint import FORMAT, load_latest_train_state, pyramid_from_state, pyramid_to_state
from .config import Config, config_from_dict, scale_batch_size, scale_batch_sizes
from .devices import resolve_precision
from .errors import TrainingStopped, UserError
from .fast import (FastNet, FastOptions, StaticTrainStep, compile_module, ema_update, prepare_backends,
                   retarget_adam)
from .fast.cpu import keep_freed_memory, use_fast_depthwise
from .fast.cpu_train import cpu_training_net
from .hybrid import network_scales
from .loss_log import LossLog
from .model import Denoiser
from .numeric_guard import NonFiniteGuard, NonFiniteLoss, read_scalars  # noqa: F401  (NonFiniteLoss: this module's API)
from .pyramid import Pyramid
from .schedule import Schedule, blend_gammas
from .train_checkpoints import CheckpointWriter


def _bcast(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def diffusion_loss(model, schedule: Schedule, clean: torch.Tensor, blurry: torch.Tensor,
                   gammas: torch.Tensor | None, t: torch.Tensor, noise: torch.Tensor, scale: int) -> torch.Tensor:
    """E|ε - ε_θ(x_t, t, s)|, x_t noised from the blur mixture γ x̃ + (1-γ) x (SinDDM, eq. 3).

    `gammas` is γ^s (length T) for s ≥ 1 and None at scale 0, where x_t is noised from `clean`.
    """
    x = clean
    if gammas is not None:
        g = _bcast(gammas[t])
        x = g * blurry + (1 - g) * clean
    x_t = _bcast(schedule.sqrt_alphas_cumprod[t]) * x + _bcast(schedule.sqrt_one_minus_alphas_cumprod[t]) * noise
    return (model(x_t, t, scale).float() - noise).abs().mean()


class _StopRequests:
    """While active, SIGINT and SIGTERM ask the loop to stop at the end of the current step
    (so a save is never torn and the stop point resumes exactly); a second signal stops at
    once with KeyboardInterrupt. A no-op outside the main thread, where Python cannot
    install handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


class Trainer:
    """Owns the model, its EMA, the optimizer and every RNG, and writes a run folder.

    precision 'fast' runs the network with channels_last and bf16 autocast (on a CPU only
    where bf16 is native), fused Adam, CUDA graphs on CUDA, and on a CPU the network as one
    Function with the fast depthwise gradient (`sinddm.fast`, `sinddm.fast.cpu_train`);
    weights, Adam and the EMA stay fp32. `compile`
    and `cuda_graphs` override the SINDDM_COMPILE / SINDDM_CUDA_GRAPHS environment switches.
    `fast_options` chooses the fast path's features one by one, on any device: the benchmarks
    (benchmarks/speed.py, cpu_levers.py) measure each lever with it, the tests run the CUDA
    path's machinery on a CPU with it.
    """

    def __init__(self, config: Config, pyramid: Pyramid, out_dir: str | Path, device: torch.device,
                 seed: int = 0, source: str = "", precision: str = "fp32", compile: bool | None = None,
                 cuda_graphs: bool | None = None, fast_options: FastOptions | None = None):
        device = torch.device(device)
        self.config, self.pyramid, self.device = config, pyramid, device
        # Scales the network learns: the K coarsest of a hybrid (method §11), else all of them.
        self.trained_scales = network_scales(config, pyramid.n_scales)
        if self.trained_scales == 0:
            raise UserError("model.trained_scales is 0: a training-free model has nothing to train; "
                            "sample from the picture itself (sinddm sample PICTURE)")
        self.precision = resolve_precision(precision, device)
        if fast_options is None and self.precision == "fast":
            fast_options = FastOptions.for_device(device, compile=compile, graphs=cuda_graphs)
        self.fast = fast_options
        if self.fast is not None:
            self.precision = "fast"
            prepare_backends(device)
        if device.type == "cpu":
            keep_freed_memory()  # every precision: no number changes, page faults go
        self.checkpoints = CheckpointWriter(out_dir)  # self.out_dir is its folder
        self.seed, self.source = seed, source
        torch.manual_seed(seed)
        self._build_model()
        self._build_optimizer()
        # Scale choice on a CPU generator (no device sync); t and noise on the device's.
        self.scale_gen = torch.Generator().manual_seed(seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.step = 0
        self.schedule = Schedule.cosine(device=device)
        self.gammas = blend_gammas(self.schedule, pyramid.blur_distance).to(device)
        self.clean = [pyramid.level_tensor(s)[None].to(device) for s in range(pyramid.n_scales)]
        self.blurry = [pyramid.blurry_tensor(s)[None].to(device) for s in range(pyramid.n_scales)]
        self.net = self._loss_network()
        self._static: StaticTrainStep | None = None  # fast mode's step engine, built on first use
        # The parts, each with its own state and its entries of the checkpoint (and checkpoints).
        self.guard = NonFiniteGuard(device, fused=bool(self._fused))
        self.loss_log = LossLog(device)
        self.resume_note: str | None = None   # set by resume() when it fell back to an older checkpoint

    @property
    def out_dir(self) -> Path:
        """The run folder (the checkpoint writer's)."""
        return self.checkpoints.out_dir

    @out_dir.setter
    def out_dir(self, folder: str | Path) -> None:
        self.checkpoints.out_dir = Path(folder)

    def _build_model(self) -> None:
        """The model (its weights drawn from the seeded global RNG), its fast-path form, its EMA."""
        self.model = Denoiser(self.config.model.dim).to(self.device)
        if self.fast is not None and self.fast.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # On a CPU the image path as one Function computing in bf16 (or fp32) itself, no autocast;
        # where it does not apply, the autograd network with the fast depthwise gradient.
        self._cpu_net = None
        if self.fast is not None and self.fast.cpu_kernels:
            if self.fast.cpu_net and not self.fast.compile:
                self._cpu_net = cpu_training_net(self.model, torch.bfloat16 if self.fast.autocast else torch.float32)
            if self._cpu_net is None:
                use_fast_depthwise(self.model)  # same parameters and state-dict keys
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.config.train.ema_decay))
        self._ema_count: int | None = None  # host mirror of ema.n_averaged (read once, lazily)

    def _build_optimizer(self) -> None:
        """Adam and its learning-rate schedule.

        Fused Adam in fast mode (CUDA; a CPU with the fast path's kernels): one multi-tensor
        kernel, no host sync on CUDA, a quarter of the for-loop Adam's time on a CPU; learning
        rates stay Python floats, so the scheduler and checkpoints are as in fp32 runs."""
        tc = self.config.train
        fused = self.fast is not None and (self.device.type == "cuda" or self.fast.cpu_kernels)
        self._fused = True if fused else None
        try:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, fused=self._fused)
        except RuntimeError:  # a torch without fused Adam for this device: the for-loop one
            self._fused = None
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr)
        self.lr_scheduler = MultiStepLR(self.optimizer, milestones=tc.lr_milestones, gamma=tc.lr_gamma)

    def _loss_network(self):
        """The network as the loss sees it: bf16/channels_last/compiled in fast mode."""
        if self.fast is None:
            return self.model
        if self._cpu_net is not None:  # it lays its input out and casts it itself
            return FastNet(self._cpu_net, autocast=False, channels_last=False)
        inner = compile_module(self.model) if self.fast.compile else self.model
        return FastNet(inner, self.fast.autocast, self.fast.channels_last)

    # -- one step -------------------------------------------------------------------------
    def draw_batch(self, scale: int | None = None) -> tuple[int, torch.Tensor, torch.Tensor]:
        """A random scale (or `scale`), then t and noise for it."""
        s = self._draw_scale() if scale is None else scale
        b = scale_batch_size(self.config.train, s)
        t = torch.randint(0, self.schedule.num_timesteps, (b,), generator=self.noise_gen, device=self.device)
        noise = torch.randn((b, *self.clean[s].shape[1:]), generator=self.noise_gen, device=self.device)
        return s, t, noise

    def _draw_scale(self) -> int:
        return int(torch.randint(self.trained_scales, (1,), generator=self.scale_gen))

    def _loss(self, s: int, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        gammas = self.gammas[s - 1] if s > 0 else None
        return diffusion_loss(self.net, self.schedule, self.clean[s], self.blurry[s], gammas, t, noise, s)

    def _static_step(self) -> StaticTrainStep:
        if self._static is None:
            self._static = StaticTrainStep(self._loss, list(self.model.parameters()), self.pyramid.sizes_hw,
                                           scale_batch_sizes(self.config.train, self.pyramid.n_scales),
                                           self.schedule.num_timesteps,
                                           self.device, graphs=self.fast.graphs)
        return self._static

    def fast_status(self) -> dict:
        """What the fast path is actually doing (for logs and benchmarks)."""
        if self.fast is None:
            return {"precision": self.precision}
        st = self._static
        return {"precision": self.precision, "autocast_bf16": self.fast.autocast,
                "channels_last": self.fast.channels_last, "compile": self.fast.compile,
                "cuda_graphs": bool(st.use_graphs) if st is not None else self.fast.graphs,
                "graph_fallback": st.fallback_reason if st is not None else None,
                "fused_adam": bool(self._fused), "cpu_kernels": self.fast.cpu_kernels,
                "cpu_training_net": self._cpu_net is not None}

    def train_step(self, scale: int | None = None) -> torch.Tensor:
        """One optimizer step; `scale` forces the scale (benchmarks) instead of drawing it."""
        if self.fast is None:
            s, t, noise = self.draw_batch(scale)
            loss = self._loss(s, t, noise)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        else:
            # Same draws from the same generators as above, into the graphs' static buffers.
            s = self._draw_scale() if scale is None else scale
            loss = self._static_step().run(s, self.noise_gen)
        applied = self.guard.optimizer_step(self.optimizer, loss, self.model.parameters())
        self.lr_scheduler.step()
        self.step += 1
        tc = self.config.train
        if self.step % tc.ema_every == 0:
            self._update_ema(force_copy=self.step <= tc.ema_start)
        if applied is False:  # CPU: a skipped step is known at once
            self._check_nonfinite()
        return loss.detach()

    def _update_ema(self, force_copy: bool) -> None:
        """AveragedModel.update_parameters' arithmetic without its per-update host syncs.

        Until ema_start the EMA is a copy of the live weights (an average over zero models);
        the first update ever is a copy too, as in AveragedModel.
        """
        if self._ema_count is None:
            self._ema_count = int(self.ema.n_averaged)  # one sync per process, not per update
        copy_weights = force_copy or self._ema_count == 0
        ema_update(list(self.ema.module.parameters()), list(self.model.parameters()),
                   self.config.train.ema_decay, copy_weights)
        if force_copy:
            self.ema.n_averaged.fill_(1)
            self._ema_count = 1
        else:
            self.ema.n_averaged.add_(1)
            self._ema_count += 1

    # -- the loop ---------------------------------------------------------------------------
    def train(self, total_steps: int | None = None, progress: bool = True) -> None:
        """Train up to `total_steps` (default: the config's) and save.

        SIGINT (Ctrl-C) or SIGTERM (`timeout`, a batch scheduler) ends the loop after the
        current step; the state is saved as at any checkpoint, then TrainingStopped is
        raised, and `Trainer.resume` continues exactly from there."""
        with _StopRequests() as stop:
            self._train(total_steps, progress, stop)
        if stop.signum is not None:
            raise TrainingStopped(self.step, stop.signum, self.out_dir, self.source)

    def _train(self, total_steps: int | None, progress: bool, stop: _StopRequests) -> None:
        tc = self.config.train
        total = tc.steps if total_steps is None else total_steps
        self.checkpoints.prepare()  # removes the temporary files of a save that was interrupted
        self.loss_log.reopen()  # the last run ended off the log grid: its window is still open
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=not progress,
                   dynamic_ncols=True)
        self._rate = (self.step, time.perf_counter())
        try:
            while self.step < total:
                loss = self.train_step()
                self.loss_log.add(loss, self.guard.last_ok)
                bar.update(1)
                if self.step % tc.log_every == 0:
                    self._log_row(bar)  # the only host sync: every log_every steps
                if self.step % tc.checkpoint_every == 0 and self.step < total:
                    self.save()
                if stop.signum is not None:
                    break
            if self.loss_log.win_steps:  # ended off the log grid: a provisional row, the window stays open
                self._log_row(bar, close_window=False)
        finally:
            bar.close()
        self.save()

    def _log_row(self, bar, close_window: bool = True) -> None:
        read = read_scalars(self.loss_log.counters() + self.guard.counters())  # one host read-back
        self._check_nonfinite(read[2:])
        mean = self.loss_log.row(self.step, read[:2], close_window)
        n, t0 = self._rate
        rate = (self.step - n) / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(loss=f"{mean:.4f}", steps_s=f"{rate:.1f}", lr=f"{self.optimizer.param_groups[0]['lr']:.1e}")
        self._rate = (self.step, time.perf_counter())

    def _check_nonfinite(self, read: list[float] | None = None) -> None:
        self.guard.check(self.config.train.max_nonfinite_steps, self.step, self.checkpoints.saved_step, read)

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The training checkpoint: the Trainer's own entries, then each part's."""
        state = {
            "format": FORMAT, "step": self.step, "seed": self.seed, "source": self.source,
            "config": self.config.to_dict(), "pyramid": pyramid_to_state(self.pyramid),
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
            "rng": {"scale": self.scale_gen.get_state(), "noise": self.noise_gen.get_state()},
        }
        state.update(self.loss_log.state_dict())  # loss_history, loss_window
        state["nonfinite"] = self.guard.state_dict()
        state["precision"] = self.precision  # what 'auto' resumes with
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from a training checkpoint (`state_dict`), each part from its entries."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        retarget_adam(self.optimizer, self._fused)  # the checkpoint may come from the other precision
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scale_gen.set_state(state["rng"]["scale"])
        self.noise_gen.set_state(state["rng"]["noise"].to("cpu"))
        self.step = int(state["step"])
        self.loss_log.load_state_dict(state)
        self.guard.load_state_dict(state.get("nonfinite"))  # absent in checkpoints of earlier versions
        self.checkpoints.resumed_at(self.step)

    def save(self) -> None:
        """Training state (for --resume, with history), inference model, loss log and curve.

        Every file is written atomically; nothing is written if the guard has to stop
        training or the weights are not finite."""
        self._check_nonfinite()
        self.guard.check_weights_finite([*self.model.parameters(), *self.ema.module.parameters()], self.step,
                                        self.checkpoints.saved_step)
        self.checkpoints.write(self.state_dict(), self.config.train.keep_checkpoints, self.pyramid, self.config,
                               self.source, run_files=[self.loss_log])

    @classmethod
    def resume(cls, run_dir: str | Path, device: torch.device, config: Config | None = None,
               precision: str = "fp32", **fast_kwargs) -> "Trainer":
        """Rebuild a trainer from the run's newest intact training checkpoint, every RNG included.

        That is `run_dir/checkpoint.pt`, or when it is missing or damaged the newest intact
        `checkpoints/step_XXXXXXX.pt` (then `resume_note` says which and why). Nothing in
        the folder changes until `train()` (which first removes the temporary files an
        interrupted save left behind).

        `config` may change only `train.steps` (and other train-loop lengths); anything
        that changes the model or the data must match the checkpoint.

        precision 'auto' continues in the precision the run was trained in, so a run is never
        switched between bf16 and fp32 halfway by a default (a checkpoint that does not say was
        written when a CPU trained in fp32 only); 'fp32' or 'fast' choose.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise UserError(f"--resume: no run folder '{run_dir}'; start without --resume")
        state, path, note = load_latest_train_state(run_dir)
        if precision == "auto":
            precision = state.get("precision") or ("fp32" if torch.device(device).type == "cpu" else "auto")
        saved = config_from_dict(state["config"], source=f"checkpoint '{path}'")
        if config is not None:
            if config.model != saved.model or config.image != saved.image:
                raise UserError(f"--resume: the config's image/model sections differ from the run in "
                                f"'{run_dir}'; resume with the run's own config")
            saved.train = config.train
        trainer = cls(saved, pyramid_from_state(state["pyramid"]), run_dir, device,
                      seed=state["seed"], source=state["source"], precision=precision, **fast_kwargs)
        trainer.load_state_dict(state)
        trainer.resume_note = note
        return trainer
