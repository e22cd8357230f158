"""Training configuration: typed sections, YAML in and out, strict validation."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import UserError
from .pyramid import DEFAULT_MAX_PIXELS, MIN_SIDE
from .schedule import T_STEPS

PATCH_STEPS = 10   # model.patch_steps' default, measured (docs/method.md §11.10)
LAYOUT_T = 60      # model.layout_t's default, measured (docs/method.md §11.11)
PATCH_CANDIDATES = 16   # model.patch_candidates' default, measured (docs/method.md §11.12)
PATCH_CONTEXT = 1.0     # model.patch_context's default, measured (docs/method.md §11.11, §11.13)


@dataclass
class ImageConfig:
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class ModelConfig:
    dim: int = 160
    # The network trains on, and serves, the K coarsest scales; the closed-form patch denoiser
    # serves the finer ones (docs/method.md §11). None: every scale, the paper; 0: no network.
    trained_scales: Optional[int] = field(default=None, metadata={"type": int})
    # Steps the sampler takes at each scale the patch denoiser serves, respaced (its posterior mean
    # is exact at any t, so far fewer steps than the network's do; method §11.10). null: every step.
    patch_steps: Optional[int] = field(default=PATCH_STEPS, metadata={"type": int})
    # Where the patch denoiser serves scale 0 (a training-free model), scale 0 starts from the
    # picture's coarsest level noised to this t instead of from pure noise: patches alone make no
    # layout (method §11.11). null: pure noise (a texture's samples, no layout).
    layout_t: Optional[int] = field(default=LAYOUT_T, metadata={"type": int})
    # The patch denoiser weighs only the k best of a picture's patches for each query, found through
    # a 16-dimensional index (method §11.6, §11.12): 3-4x faster at the same quality, but tiles
    # (--tile) no longer give bit-equal pictures. null: every patch, the exact posterior.
    patch_candidates: Optional[int] = field(default=PATCH_CANDIDATES, metadata={"type": int})
    # τ of the blurry context at the finer patch scales: each patch is also weighed by how well its
    # blurry version matches the up-sampled coarser scale there, which keeps a scene's layout
    # (method §11.11). Larger: looser. null: no context, better for textures, which have no layout
    # to keep (method §11.13).
    patch_context: Optional[float] = field(default=PATCH_CONTEXT, metadata={"type": float})


@dataclass
class TrainConfig:
    steps: int = 120_000
    batch_size: int = 32
    # Batch sizes for the coarsest scales, from scale 0 on; finer scales use batch_size.
    # Empty (the paper): batch_size everywhere. A recipe lever: coarse scales are small,
    # so on a GPU a bigger batch there costs little (docs/recipe-steps/README.md).
    coarse_batch_sizes: list[int] = field(default_factory=list)
    lr: float = 1e-3
    lr_milestones: list[int] = field(default_factory=lambda: [20_000, 40_000, 70_000, 80_000, 90_000, 110_000])
    lr_gamma: float = 0.5
    ema_decay: float = 0.995
    ema_every: int = 10
    ema_start: int = 2_000       # before this step the EMA is a copy of the live weights
    checkpoint_every: int = 10_000
    log_every: int = 100         # loss is read back (a host sync on GPU) this often
    grid_samples: int = 4        # samples drawn for the grid at the end of training
    keep_checkpoints: int = 2    # training checkpoints kept in checkpoints/ (0: only checkpoint.pt)
    max_nonfinite_steps: int = 20  # stop after this many NaN/inf losses in a row (those steps are skipped)


@dataclass
class Config:
    image: ImageConfig = field(default_factory=ImageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_SECTIONS = {"image": ImageConfig, "model": ModelConfig, "train": TrainConfig}


# A decimal or scientific number as written by hand (1e-3, 5E-4, +2e3, .5); not nan, inf or words.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _check_type(where: str, value: Any, default: Any, optional: type | None = None) -> Any:
    """`value` checked against the type of `default`; a field whose default is None (`optional`
    names its type) takes None or that type."""
    if optional is not None:
        if value is None:
            return None
        default = optional()
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str) and _NUMBER.fullmatch(value) and math.isfinite(float(value)):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot, or no exponent sign) as a string
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        expected = "list of whole numbers" if isinstance(default, list) else type(default).__name__
        raise UserError(f"{where}: expected {expected}, got {value!r}")
    return value


def config_from_dict(data: dict[str, Any] | None, source: str = "config") -> Config:
    """Defaults overridden by `data`; unknown keys and wrong types are errors."""
    cfg = Config()
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of sections (image, model, train)")
    for section, values in data.items():
        if section not in _SECTIONS:
            raise UserError(f"{source}: unknown section '{section}'; known: {', '.join(_SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"{source}: section '{section}' must be a mapping")
        target = getattr(cfg, section)
        fields = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if key not in fields:
                raise UserError(f"{source}: unknown key '{section}.{key}'; known: {', '.join(sorted(fields))}")
            setattr(target, key, _check_type(f"{source}: {section}.{key}", value, getattr(target, key),
                                             fields[key].metadata.get("type")))
    validate(cfg, source)
    return cfg


def validate(cfg: Config, source: str = "config") -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UserError(f"{source}: {msg}")

    need(cfg.image.max_pixels >= MIN_SIDE ** 2, f"image.max_pixels must be at least {MIN_SIDE ** 2} ({MIN_SIDE}x{MIN_SIDE})")
    need(cfg.model.dim >= 2 and cfg.model.dim % 2 == 0, "model.dim must be an even number >= 2")
    k = cfg.model.trained_scales
    need(k is None or k >= 0, "model.trained_scales must be >= 0 (0: no network), or null for every scale")
    n = cfg.model.patch_steps
    need(n is None or n >= 2, "model.patch_steps must be >= 2, or null for every step")
    kc = cfg.model.patch_candidates
    need(kc is None or kc >= 1, "model.patch_candidates must be >= 1, or null for the exact posterior")
    tau = cfg.model.patch_context
    need(tau is None or (math.isfinite(tau) and tau > 0), "model.patch_context must be > 0, or null for no context")
    lt = cfg.model.layout_t
    need(lt is None or 1 <= lt < T_STEPS, f"model.layout_t must be in 1..{T_STEPS - 1}, or null for pure noise")
    t = cfg.train
    need(t.steps >= 1, "train.steps must be >= 1")
    need(t.batch_size >= 1, "train.batch_size must be >= 1")
    need(all(b >= 1 for b in t.coarse_batch_sizes), "train.coarse_batch_sizes must all be >= 1")
    need(t.lr > 0, "train.lr must be > 0")
    need(0 < t.lr_gamma <= 1, "train.lr_gamma must be in (0, 1]")
    need(0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1)")
    need(t.ema_every >= 1, "train.ema_every must be >= 1")
    need(t.ema_start >= 0, "train.ema_start must be >= 0")
    need(t.checkpoint_every >= 1, "train.checkpoint_every must be >= 1")
    need(t.log_every >= 1, "train.log_every must be >= 1")
    need(t.grid_samples >= 0, "train.grid_samples must be >= 0")
    need(t.keep_checkpoints >= 0, "train.keep_checkpoints must be >= 0")
    need(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps must be >= 1")
    need(list(t.lr_milestones) == sorted(t.lr_milestones), "train.lr_milestones must be increasing")


def scale_batch_size(t: TrainConfig, scale: int) -> int:
    """The training batch at `scale`: coarse_batch_sizes[scale] where given, else batch_size."""
    return t.coarse_batch_sizes[scale] if scale < len(t.coarse_batch_sizes) else t.batch_size


def scale_batch_sizes(t: TrainConfig, n_scales: int) -> list[int]:
    """The training batch at every scale of an `n_scales` pyramid, coarsest first."""
    return [scale_batch_size(t, s) for s in range(n_scales)]


def _ema_copy_and_updates(t: TrainConfig, steps: int) -> tuple[int, int]:
    """The last EMA step at or before ema_start (a plain copy) and the averaging updates after it."""
    copied = min(steps, t.ema_start) // t.ema_every * t.ema_every
    return copied, steps // t.ema_every - copied // t.ema_every


def ema_warning(t: TrainConfig, steps: int | None = None, limit: float = 0.01) -> str | None:
    """One line when weights from the first half of the run make up over `limit` of the final EMA."""
    steps = t.steps if steps is None else steps
    copied, updates = _ema_copy_and_updates(t, steps)
    share = t.ema_decay ** updates
    if share <= limit or 2 * copied >= steps:
        return None
    if updates == 0:  # copied == 0: the EMA still holds the initial weights
        return (f"train.ema_every {t.ema_every} is more than the run's {steps} steps: the EMA, which is what "
                f"gets saved and sampled, keeps the untrained initial weights; lower ema_every (or train longer)")
    suggest = math.floor(1000 * 0.001 ** (1 / updates)) / 1000  # leaves < 0.1 %
    horizon = t.ema_every / (1 - t.ema_decay)
    return (f"train.ema_decay {t.ema_decay:g} (every {t.ema_every} steps) averages over the last ~{horizon:.0f} "
            f"steps, long for a run of {steps}: {100 * share:.0f}% of the final EMA weights would still be "
            f"those of step {copied}, and samples come out noisy; set ema_decay to {suggest:g} or less "
            f"(or train longer)")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first_line})")


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (instead of the last one winning)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:  # the mapping's own keys; '<<' merges may be overridden
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own check reports it
                    continue
                if first is not None:
                    raise _DuplicateKey(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    name = f"config '{path}'"
    if path.is_dir():
        raise UserError(f"{name}: is a folder; give a YAML file (see configs/ for examples)")
    if not path.is_file():
        if path.exists():
            raise UserError(f"{name}: not a regular file; give a YAML file (see configs/ for examples)")
        raise UserError(f"{name}: no such file; see configs/ for examples")
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise UserError(f"{name}: cannot be read (permission denied); check the file's permissions") from None
    except OSError as e:
        raise UserError(f"{name}: cannot be read ({e.strerror or e}); give a readable YAML file") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise UserError(f"{name}: not a text file (binary or not UTF-8); give a YAML file")
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise UserError(f"{name}: key '{e.key}' appears twice (line {e.first_line} and line {e.line}); "
                        f"keep one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{name}: not valid YAML{where}; fix the syntax") from None
    if data is None:  # an empty file is valid YAML for "nothing set": say what that means
        print(f"note: {name} is empty: training with the paper's recipe (configs/paper.yaml)", file=sys.stderr)
    return config_from_dict(data, source=name)
