"""The numeric guard of training (method §4): a step whose loss (or any gradient) is NaN or
infinite changes no weights. The check itself never syncs with a GPU: the flag is a device tensor.
* CPU: the flag is read on the host (free there) and optimizer.step() is skipped;
  finite steps run exactly the code they always did (bit-identical fp32 path).
* CUDA with fused Adam (the fast path): the flag is Adam's `found_inf`, so the fused
  kernel skips the update and the step count (as under a GradScaler): an exact skip.
* CUDA without fused Adam (fp32 on a GPU): the gradients are zeroed where the flag
  is set; Adam still applies its (finite) momentum for that step.
The LR schedule, the EMA cadence and the step counter advance over a skipped step.
Counters (in a row, in all) live on the device and are read where the loss is
(every log_every steps, every save; every skipped step on the CPU): after
train.max_nonfinite_steps in a row training stops with NonFiniteLoss, saving nothing.
Saves also refuse non-finite weights, so a checkpoint never holds NaN or inf.
"""

from __future__ import annotations

import torch

from .errors import UserError


class NonFiniteLoss(UserError):
    """Training stopped: the loss was NaN/inf for train.max_nonfinite_steps steps in a row."""


class NonFiniteGuard:
    """The guard's state and steps, mixed into `training.Trainer` (which provides model, ema,
    optimizer, config, step and _saved_step)."""

    def _init_guard(self, device: torch.device) -> None:
        """How a step with a non-finite loss is skipped on this device, and the counters."""
        self._guard_mode = "host" if device.type == "cpu" else ("found_inf" if self._fused else "zero_grad")
        zeros = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self._one = torch.ones((), device=device)
        self._amp_check = True               # torch's fused gradient check works on this device
        self._bad_run = zeros(torch.long)    # skipped steps in a row, ending at the current step
        self._bad_max = zeros(torch.long)    # the longest such run since the last check
        self._bad_total = zeros(torch.long)  # skipped steps in all
        self._last_ok: torch.Tensor | None = None  # whether the last step was applied (bool tensor)
        self.skipped_steps = 0               # host copy of _bad_total as of the last check

    def _guarded_optimizer_step(self, loss: torch.Tensor) -> bool | None:
        """optimizer.step() unless the loss or a gradient is NaN/inf (module docstring).

        Returns whether the step was applied where that is known without a device sync
        (the CPU), else None.
        """
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        found_inf = self._nonfinite_flag(loss, grads)
        skip = found_inf > 0
        self._last_ok = ~skip
        self._bad_run.add_(1).mul_(skip)
        torch.maximum(self._bad_max, self._bad_run, out=self._bad_max)
        self._bad_total.add_(skip)
        if self._guard_mode == "host":
            if bool(skip):
                return False
            self.optimizer.step()
            return True
        if self._guard_mode == "found_inf":  # fused Adam skips the update and the step count
            self.optimizer.found_inf = found_inf
        else:
            for g in grads:
                g.masked_fill_(skip, 0.0)
        self.optimizer.step()
        return None

    def _nonfinite_flag(self, loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
        """1.0 (float32, on the device) if the loss or any gradient is NaN/inf, else 0.0."""
        found_inf = (~torch.isfinite(loss.detach())).float()
        if self._amp_check:
            try:
                # GradScaler's multi-tensor check: sets found_inf to 1 if any gradient is not
                # finite; it multiplies the gradients by one, which leaves every bit as it was.
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self._one)
                return found_inf
            except (RuntimeError, NotImplementedError, AttributeError):  # no kernel for this device
                self._amp_check = False
        if grads:
            bad = torch.stack([~torch.isfinite(g).all() for g in grads]).any()
            found_inf = torch.maximum(found_inf, bad.float())
        return found_inf

    def _read_counters(self) -> tuple[float, int, int, int]:
        """(window loss sum, applied steps in the window, longest skipped run, skipped in all):
        one host read-back."""
        vals = torch.stack([self._win_sum, self._win_ok.float(), self._bad_max.float(),
                            self._bad_total.float()]).tolist()
        return vals[0], int(vals[1]), int(vals[2]), int(vals[3])

    def _check_nonfinite(self, counters: tuple[float, int, int, int] | None = None) -> None:
        """Stop (NonFiniteLoss) after train.max_nonfinite_steps skipped steps in a row."""
        _, _, worst, total = counters or self._read_counters()
        self.skipped_steps = total
        limit = self.config.train.max_nonfinite_steps
        if worst >= limit:
            kept = (f"the last checkpoint (step {self._saved_step}) is intact" if self._saved_step is not None
                    else "nothing was saved")
            raise NonFiniteLoss(
                f"training stopped at step {self.step}: the loss was NaN or infinite for {worst} steps in a row "
                f"(train.max_nonfinite_steps = {limit}; {total} skipped in all; the weights stayed finite); "
                f"{kept}; lower train.lr and train again with --overwrite")
        self._bad_max.copy_(self._bad_run)

    def _check_weights_finite(self) -> None:
        tensors = [*self.model.parameters(), *self.ema.module.parameters()]
        if not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            kept = f"step {self._saved_step}" if self._saved_step is not None else "none"
            raise NonFiniteLoss(f"training stopped at step {self.step}: the weights are no longer finite; not "
                                f"saving over the last checkpoint ({kept}); lower train.lr and train again "
                                "with --overwrite")
