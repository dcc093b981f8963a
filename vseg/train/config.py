"""Configuration of a VOS training run and the schedules that depend only on it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vseg.errors import VsegError


@dataclass
class TrainConfig:
    """Everything a training run depends on (with its seed, the run is reproducible)."""

    model: str = "stm"  # "stm", "lite" or "spvos" (gates trained from stm weights: init_weights)
    data: str = ""  # dataset root: DAVIS-2017 or YouTube-VOS layout
    out: str = "vseg-train"  # run folder: checkpoints/ (and the weights unless `weights` is set)
    weights: str | None = None  # final weights file; None: <out>/<model>.safetensors
    split: str = "train"
    steps: int = 1500
    batch_size: int = 1
    # clips (see VOSClipDataset)
    clip_len: int = 3
    max_skip: int = 5
    # max-skip curriculum: ((fraction of `steps`, max skip from there on), ...), ascending
    skip_schedule: tuple[tuple[float, int], ...] = ()
    # share of clips drawn around an object leaving and coming back (see VOSClipDataset)
    reentry_fraction: float = 0.0
    max_objects: int = 2
    crop: tuple[int, int] = (128, 224)
    scale_range: tuple[float, float] = (0.9, 1.1)
    flip: bool = True
    num_workers: int = 0
    # optimisation
    lr: float = 5e-4
    weight_decay: float = 0.05
    schedule: str = "cosine"  # "cosine" or "step" (x step_gamma at each of step_milestones)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    step_milestones: tuple[float, ...] = (0.8,)  # fractions of `steps`
    step_gamma: float = 0.1
    grad_clip: float = 3.0
    # > 0: keep an exponential moving average of the weights with this decay (e.g. 0.999) and
    # ship and validate it instead of the last step's weights (see train/ema.py)
    ema_decay: float = 0.0
    # BatchNorm: recalibrate over norm_calibration_batches fresh clips and freeze at this fraction
    # of `steps` (None: never), so training ends with the statistics inference uses (see train/norm.py)
    freeze_norm_at: float | None = None
    norm_calibration_batches: int = 64
    # bootstrapped CE: all pixels until bootstrap_start, then down to the hardest
    # bootstrap_fraction by bootstrap_end (both fractions of `steps`)
    bootstrap_fraction: float = 0.15
    bootstrap_start: float = 0.1
    bootstrap_end: float = 0.5
    dice_weight: float = 0.0
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    # bfloat16 autocast (weights and optimizer stay float32): on CUDA, and on CPUs with native
    # bfloat16 (AVX512-BF16 / AMX), where an stm step runs about 2x faster than float32
    amp: bool = False
    model_options: dict = field(default_factory=dict)  # config overrides for build_model
    init_weights: str | None = None  # start from these weights instead of random init
    # checkpoints, validation, output
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    resume: str | None = None  # a checkpoint folder, or a run folder (its newest checkpoint)
    val_data: str | None = None
    val_split: str = "val"
    val_every: int = 0  # 0: only at the end (when val_data is given)
    val_sequences: int | None = None
    val_size: tuple[int, int] | None = None
    half_weights: bool = True  # ship float16 weights (stm: 24 MB instead of 48 MB)
    progress: bool = True
    log_every: int = 25
    # spvos: mixed sparse training (dense and sparse batches alternate; budgets from the
    # model's [budget_low, budget_high], set through model_options)
    sparsity_weight: float = 1.0
    sparse_every: int = 2  # every n-th batch sparse (1: all sparse)
    gumbel_tau: float = 1.0
    # the gates start untrained from stm weights: they may learn faster than the network
    gate_lr_scale: float = 1.0
    # lite: online distillation from an stm teacher
    teacher_weights: str | None = None  # trained stm; None: teacher trained jointly from scratch
    teacher_lr: float | None = None  # None: 0.1 * lr with teacher_weights, else lr; 0: frozen
    teacher_options: dict = field(default_factory=dict)  # stm config overrides of a from-scratch teacher
    use_kd: bool = True  # False: the student trains on its task loss alone
    use_smooth: bool = True
    use_stff: bool = True
    use_discriminator: bool = True
    use_adaptive_lr: bool = True
    feature_kd_weight: float = 1.0
    logit_kd_weight: float = 0.0
    kd_temperature: float = 1.0
    adversarial_weight: float = 0.01
    discriminator_lr: float = 1e-4


@dataclass
class TrainResult:
    """What a run produced. history: one dict of losses per step; validation: dicts with step,
    J&F, J, F; steps_per_second excludes validation and checkpoint time."""

    model: str
    steps: int
    weights: Path | None
    checkpoint: Path | None
    final_loss: float
    history: list[dict]
    validation: list[dict]
    wall_seconds: float
    steps_per_second: float


def pick_device(name: str | None) -> torch.device:
    """cuda when available (or asked for), else cpu. The CPU's intra-op threads stay as PyTorch
    set them (OMP_NUM_THREADS, else one per physical core), so two runs side by side can each
    be given one core instead of both spinning on all of them."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of the base LR at 0-based ``step``: linear warm-up, then cosine or step decay."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    progress = step / max(1, cfg.steps)
    if cfg.schedule == "cosine":
        decay = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    elif cfg.schedule == "step":
        decay = cfg.step_gamma ** sum(progress >= m for m in cfg.step_milestones)
    else:
        raise VsegError(f"unknown LR schedule {cfg.schedule!r} (cosine or step)")
    return warm * decay


def norm_freeze_step(cfg: TrainConfig) -> int | None:
    """0-based step before which BatchNorm is recalibrated and frozen (None: never)."""
    if cfg.freeze_norm_at is None:
        return None
    return min(cfg.steps, max(0, round(cfg.freeze_norm_at * cfg.steps)))


def hard_pixel_fraction(cfg: TrainConfig, step: int) -> float:
    """Share of pixels the bootstrapped CE keeps at ``step`` (1 -> bootstrap_fraction)."""
    start, end = cfg.bootstrap_start * cfg.steps, cfg.bootstrap_end * cfg.steps
    if step < start:
        return 1.0
    if step >= end or end <= start:
        return cfg.bootstrap_fraction
    return 1.0 + (cfg.bootstrap_fraction - 1.0) * (step - start) / (end - start)
