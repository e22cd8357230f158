"""Mapping the reference implementation's state dicts and checkpoints onto `Denoiser`."""

from __future__ import annotations

import re

import torch

from .errors import UserError

_BLOCK_PARTS = {
    "mlp.1": "cond.1",
    "time_reshape": "cond_to_channels",
    "ds_conv": "depthwise",
    "net.0": "conv1",
    "net.2": "conv2",
    "res_conv": "skip",
}
_BLOCK_KEY = re.compile(r"^l([1-4])\.(mlp\.1|time_reshape|ds_conv|net\.0|net\.2|res_conv)\.(weight|bias)$")
_TOP_KEYS = {"time_mlp.0": "embed.0", "time_mlp.2": "embed.2", "final_conv.0": "out"}


def reference_key(key: str) -> str:
    """One reference key (no prefix) → this library's key."""
    m = _BLOCK_KEY.match(key)
    if m:
        block, part, kind = m.groups()
        return f"blocks.{int(block) - 1}.{_BLOCK_PARTS[part]}.{kind}"
    module, _, kind = key.rpartition(".")
    if module in _TOP_KEYS and kind in ("weight", "bias"):
        return f"{_TOP_KEYS[module]}.{kind}"
    raise KeyError(key)


def from_reference_state_dict(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Keep the denoiser's entries of `sd` (keys starting with `prefix`) and rename them."""
    out = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        try:
            out[reference_key(key[len(prefix):])] = value.detach().float().clone()
        except KeyError:
            continue  # schedule buffers and other non-network entries
    return out


def load_reference_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The EMA denoiser weights of a reference checkpoint `{'model': ..., 'ema': ...}`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint '{path}': no such file; give the reference's model-*.pt file") from None
    except Exception as e:  # pickle errors, zip errors, truncated files
        raise UserError(f"checkpoint '{path}': cannot be read as a PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint '{path}': not a reference checkpoint (expected a dict with 'ema' or 'model')")
    sd = next((ckpt[k] for k in ("ema", "model") if isinstance(ckpt.get(k), dict) and ckpt[k]), ckpt)
    sd = {k: v for k, v in sd.items() if isinstance(k, str) and torch.is_tensor(v)}
    weights = from_reference_state_dict(sd, prefix="denoise_fn.")
    if not weights:
        weights = from_reference_state_dict(sd)
    if "blocks.1.conv1.weight" not in weights:
        raise UserError(f"checkpoint '{path}': no SinDDM denoiser weights found (keys 'denoise_fn.l1...' expected)")
    _check_complete(weights, path)
    return weights


def _check_complete(weights: dict[str, torch.Tensor], path: str) -> None:
    """Refuse missing or misshapen entries now rather than failing later when sampling."""
    from .model import Denoiser, infer_width

    try:
        Denoiser(infer_width(weights)).load_state_dict(weights)
    except (RuntimeError, ValueError) as e:
        detail = " ".join(str(e).split())
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise UserError(f"checkpoint '{path}': the denoiser weights do not fit SinDDM's network ({detail})") from None
