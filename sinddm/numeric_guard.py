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

from typing import Iterable

import torch

from .errors import UserError


class NonFiniteLoss(UserError):
    """Training stopped: the loss was NaN/inf for train.max_nonfinite_steps steps in a row."""


def read_scalars(tensors: list[torch.Tensor]) -> list[float]:
    """0-d device tensors as floats, in one host read-back (one sync for all of them)."""
    return torch.stack(tensors).tolist()


def _kept(saved_step: int | None) -> str:
    return f"the last checkpoint (step {saved_step}) is intact" if saved_step is not None else "nothing was saved"


class NonFiniteGuard:
    """Skips the optimizer steps whose loss or gradients are not finite, and counts them.

    Its state is its counters (`state_dict`: the checkpoint's "nonfinite" entry); `mode` says
    how a step is skipped on this device: "host", "found_inf" (fused Adam) or "zero_grad".
    """

    def __init__(self, device: torch.device, fused: bool):
        device = torch.device(device)
        self.mode = "host" if device.type == "cpu" else ("found_inf" if fused else "zero_grad")
        zeros = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self._one = torch.ones((), device=device)
        self._amp_check = True              # torch's fused gradient check works on this device
        self.bad_run = zeros(torch.long)    # skipped steps in a row, ending at the current step
        self.bad_max = zeros(torch.long)    # the longest such run since the last check
        self.bad_total = zeros(torch.long)  # skipped steps in all
        self.last_ok: torch.Tensor | None = None  # whether the last step was applied (bool tensor)
        self.skipped_steps = 0              # host copy of bad_total as of the last check

    # -- one step ---------------------------------------------------------------------------
    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                       parameters: Iterable[torch.Tensor]) -> bool | None:
        """optimizer.step() unless the loss or a gradient is NaN/inf (module docstring).

        Returns whether the step was applied where that is known without a device sync
        (the CPU), else None.
        """
        grads = [p.grad for p in parameters if p.grad is not None]
        found_inf = self._nonfinite_flag(loss, grads)
        skip = found_inf > 0
        self.last_ok = ~skip
        self.bad_run.add_(1).mul_(skip)
        torch.maximum(self.bad_max, self.bad_run, out=self.bad_max)
        self.bad_total.add_(skip)
        if self.mode == "host":
            if bool(skip):
                return False
            optimizer.step()
            return True
        if self.mode == "found_inf":  # fused Adam skips the update and the step count
            optimizer.found_inf = found_inf
        else:
            for g in grads:
                g.masked_fill_(skip, 0.0)
        optimizer.step()
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

    # -- the checks -------------------------------------------------------------------------
    def counters(self) -> list[torch.Tensor]:
        """(longest skipped run since the last check, skipped in all) as float device scalars,
        to read back together with other counters (`read_scalars`) and pass to `check`."""
        return [self.bad_max.float(), self.bad_total.float()]

    def check(self, limit: int, step: int, saved_step: int | None, read: list[float] | None = None) -> None:
        """Stop (NonFiniteLoss) after `limit` (train.max_nonfinite_steps) skipped steps in a row.

        `read` is `counters()` read back, when the caller read them with others; else they
        are read here."""
        worst, total = (int(v) for v in (read or read_scalars(self.counters())))
        self.skipped_steps = total
        if worst >= limit:
            raise NonFiniteLoss(
                f"training stopped at step {step}: the loss was NaN or infinite for {worst} steps in a row "
                f"(train.max_nonfinite_steps = {limit}; {total} skipped in all; the weights stayed finite); "
                f"{_kept(saved_step)}; lower train.lr and train again with --overwrite")
        self.bad_max.copy_(self.bad_run)

    @staticmethod
    def check_weights_finite(tensors: Iterable[torch.Tensor], step: int, saved_step: int | None) -> None:
        """Refuse to save non-finite weights (NonFiniteLoss)."""
        if not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            kept = f"step {saved_step}" if saved_step is not None else "none"
            raise NonFiniteLoss(f"training stopped at step {step}: the weights are no longer finite; not "
                                f"saving over the last checkpoint ({kept}); lower train.lr and train again "
                                "with --overwrite")

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The checkpoint's "nonfinite" entry (one host read each)."""
        return {"run": int(self.bad_run), "total": int(self.bad_total)}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore the counters; None (checkpoints of earlier versions) leaves them at zero."""
        if not state:
            return
        self.bad_run.fill_(int(state["run"]))
        self.bad_max.fill_(int(state["run"]))
        self.bad_total.fill_(int(state["total"]))
        self.skipped_steps = int(state["total"])
