"""The training loop (DESIGN §4): one random scale per step, L1 loss on the noise."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.optim.lr_scheduler import MultiStepLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .checkpoint import (FORMAT, MODEL_FILE, TRAIN_STATE_FILE, atomic_write, ema_weights, load_train_state,
                         pyramid_from_state, pyramid_to_state, save_model)
from .config import Config, config_from_dict
from .errors import UserError
from .model import Denoiser
from .pyramid import Pyramid
from .schedule import Schedule, blend_gammas


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


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is 'fast' on CUDA and 'fp32' elsewhere; 'fast' falls back to fp32 off CUDA."""
    if precision not in ("auto", "fp32", "fast"):
        raise UserError(f"--precision {precision}: use auto, fp32 or fast")
    if device.type != "cuda":
        return "fp32"
    return "fast" if precision == "auto" else precision


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to PyTorch; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: unknown device; use auto, cpu or cuda") from None


class Trainer:
    """Owns the model, its EMA, the optimizer and every RNG, and writes a run folder."""

    def __init__(self, config: Config, pyramid: Pyramid, out_dir: str | Path, device: torch.device,
                 seed: int = 0, source: str = "", precision: str = "fp32"):
        self.config, self.pyramid, self.device = config, pyramid, device
        self.precision = resolve_precision(precision, device)
        self.out_dir = Path(out_dir)
        self.seed, self.source = seed, source
        tc = config.train
        torch.manual_seed(seed)
        self.model = Denoiser(config.model.dim).to(device)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr)
        self.lr_scheduler = MultiStepLR(self.optimizer, milestones=tc.lr_milestones, gamma=tc.lr_gamma)
        # Scale choice on a CPU generator (no device sync); t and noise on the device's.
        self.scale_gen = torch.Generator().manual_seed(seed)
        self.noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        self.step = 0
        self.loss_history: list[tuple[int, float]] = []
        self.schedule = Schedule.cosine(device=device)
        self.gammas = blend_gammas(self.schedule, pyramid.blur_distance).to(device)
        self.clean = [pyramid.level_tensor(s)[None].to(device) for s in range(pyramid.n_scales)]
        self.blurry = [pyramid.blurry_tensor(s)[None].to(device) for s in range(pyramid.n_scales)]

    # -- one step -------------------------------------------------------------------------
    def draw_batch(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        s = int(torch.randint(self.pyramid.n_scales, (1,), generator=self.scale_gen))
        b = self.config.train.batch_size
        t = torch.randint(0, self.schedule.num_timesteps, (b,), generator=self.noise_gen, device=self.device)
        noise = torch.randn((b, *self.clean[s].shape[1:]), generator=self.noise_gen, device=self.device)
        return s, t, noise

    def train_step(self) -> torch.Tensor:
        s, t, noise = self.draw_batch()
        gammas = self.gammas[s - 1] if s > 0 else None
        loss = diffusion_loss(self.model, self.schedule, self.clean[s], self.blurry[s], gammas, t, noise, s)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.lr_scheduler.step()
        self.step += 1
        tc = self.config.train
        if self.step % tc.ema_every == 0:
            if self.step <= tc.ema_start:
                self.ema.n_averaged.zero_()  # an average over zero models is a copy of this one
            self.ema.update_parameters(self.model)
        return loss.detach()

    # -- the loop ---------------------------------------------------------------------------
    def train(self, total_steps: int | None = None, progress: bool = True) -> None:
        tc = self.config.train
        total = tc.steps if total_steps is None else total_steps
        self.out_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=not progress,
                   dynamic_ncols=True)
        window = torch.zeros((), device=self.device)
        n_window, t_window = 0, time.perf_counter()
        while self.step < total:
            window += self.train_step()
            n_window += 1
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == total:
                mean = float(window) / n_window  # the only host sync: every log_every steps
                if mean != mean or mean in (float("inf"), float("-inf")):
                    raise UserError(f"training diverged at step {self.step} (loss {mean}); lower train.lr")
                rate = n_window / max(time.perf_counter() - t_window, 1e-9)
                self.loss_history.append((self.step, mean))
                bar.set_postfix(loss=f"{mean:.4f}", steps_s=f"{rate:.1f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.1e}")
                window.zero_()
                n_window, t_window = 0, time.perf_counter()
            if self.step % tc.checkpoint_every == 0 and self.step < total:
                self.save()
        bar.close()
        self.save()

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": FORMAT, "step": self.step, "seed": self.seed, "source": self.source,
            "config": self.config.to_dict(), "pyramid": pyramid_to_state(self.pyramid),
            "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
            "rng": {"scale": self.scale_gen.get_state(), "noise": self.noise_gen.get_state()},
            "loss_history": [list(p) for p in self.loss_history],
        }

    def save(self) -> None:
        """Training state (for --resume), inference model, loss log and curve."""
        from .plots import loss_curve

        state = self.state_dict()
        atomic_write(self.out_dir / TRAIN_STATE_FILE, lambda tmp: torch.save(state, tmp))
        save_model(self.out_dir / MODEL_FILE, ema_weights(state["ema"]), self.pyramid, self.config,
                   self.step, self.source)
        lines = ["step,loss"] + [f"{s},{l:.6f}" for s, l in self.loss_history]
        (self.out_dir / "loss.csv").write_text("\n".join(lines) + "\n")
        if self.loss_history:
            steps, losses = zip(*self.loss_history)
            loss_curve(list(steps), list(losses), self.out_dir / "loss.png")

    @classmethod
    def resume(cls, run_dir: str | Path, device: torch.device, config: Config | None = None,
               precision: str = "fp32") -> "Trainer":
        """Rebuild a trainer from `run_dir/checkpoint.pt`, every RNG included.

        `config` may change only `train.steps` (and other train-loop lengths); anything
        that changes the model or the data must match the checkpoint.
        """
        path = Path(run_dir) / TRAIN_STATE_FILE
        if not path.is_file():
            raise UserError(f"--resume: no {TRAIN_STATE_FILE} in '{run_dir}'; start without --resume")
        state = load_train_state(path)
        saved = config_from_dict(state["config"], source=f"checkpoint '{path}'")
        if config is not None:
            if config.model != saved.model or config.image != saved.image:
                raise UserError(f"--resume: the config's image/model sections differ from the run in "
                                f"'{run_dir}'; resume with the run's own config")
            saved.train = config.train
        trainer = cls(saved, pyramid_from_state(state["pyramid"]), run_dir, device,
                      seed=state["seed"], source=state["source"], precision=precision)
        trainer.model.load_state_dict(state["model"])
        trainer.ema.load_state_dict(state["ema"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
        trainer.scale_gen.set_state(state["rng"]["scale"])
        trainer.noise_gen.set_state(state["rng"]["noise"].to("cpu"))
        trainer.step = int(state["step"])
        trainer.loss_history = [(int(s), float(l)) for s, l in state["loss_history"]]
        return trainer
