"""Training `arseg` in the paper's two phases (the lead wires ``vseg train --model arseg``).

Phase 1, stage ``hr`` (``hr_steps``): the full-resolution network (``hr`` + the classifier) on
single frames, cross-entropy at full resolution.

Phase 2: ``hr`` and the classifier are frozen; the low-resolution branch starts as a copy of
``hr`` (:meth:`ARSeg.init_lr_from_hr`). As in the reference code it is first trained alone,
then with CReFF:

- stage ``lr`` (``lr_steps``): frames downscaled to ``lr_scale``;
  CE(classifier(lr_up)) + fst_weight * MSE(lr_up, hr(frame)). The model as it is at the end of
  this stage is also saved as ``<weights stem>-lr-alone.safetensors``: its LR branch is the
  "low-resolution network alone" that AR-Seg is compared with.
- stage ``fusion`` (``fusion_steps``): a keyframe and a frame d = 1..L-1 frames later with the
  codec's motion accumulated between them (:mod:`vseg.train.arseg_data`); the frozen ``hr``
  gives the keyframe feature (warped inside CReFF) and the frame's own feature, FST's target:
  CE(classifier(CReFF)) + fst_weight * MSE(CReFF, hr(frame)). The LR branch is no longer held
  to the target on its own: CReFF adds the attended keyframe feature to it (a residual).
  CReFF's few weights (depthwise convs, its value path starting at zero) learn at
  ``crff_lr_multiplier`` times the base rate; at 1x they take most of a short run to matter.

``init_lr_from_hr`` off keeps the LR branch of ``init_weights`` (to continue phase 2 from
saved weights). AdamW, linear warm-up then cosine decay in each stage, gradient clipping. A batch is a function
of (seed, step) only and the torch RNG (dropout) is checkpointed, so ``resume`` continues exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vseg.errors import InputError, VsegError
from vseg.models.arseg import ARSeg, downscale, lr_size
from vseg.models.registry import build_model, load_model, model_name
from vseg.train.arseg_data import (
    IGNORE,
    load_clips,
    pair_pool,
    sample_frames,
    sample_pairs,
)
from vseg.train.checkpoint import (
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from vseg.train.trainer import save_weights

STAGES = ("hr", "lr", "fusion")


@dataclass
class ARSegTrainConfig:
    """Everything an arseg training run depends on (with its seed, the run is reproducible)."""

    data: str = ""  # CamVid-layout root with videos/<seq>.mp4 (vseg data synth-vss)
    split: str = "train"
    out: str = "vseg-train-arseg"  # run folder: checkpoints/, motion-cache/, the weights
    weights: str | None = None  # final weights; None: <out>/arseg.safetensors
    model_options: dict = field(default_factory=dict)  # ARSegConfig overrides
    init_weights: str | None = None  # start from arseg weights (e.g. hr_steps=0 after a phase-1 run)
    hr_steps: int = 2000  # phase 1
    lr_steps: int = 1000  # phase 2, LR branch alone
    fusion_steps: int = 2000  # phase 2, LR branch + CReFF
    batch_size: int = 8
    crop: tuple[int, int] = (192, 256)  # at most this, multiples of 8
    flip: bool = True
    lr: float = 2e-3  # base learning rate of each stage
    crff_lr_multiplier: float = 10.0  # CReFF's few weights (depthwise convs) learn this much faster
    init_lr_from_hr: bool = True  # phase 2 starts with lr = hr (False: keep init_weights' LR branch)
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    grad_clip: float = 5.0
    fst_weight: float = 1.0
    keyframe_interval: int | None = None  # None: keyframes are the videos' I-frames
    max_clips: int | None = None
    cache_dir: str | None = None  # None: <out>/motion-cache
    seed: int = 0
    device: str | None = None  # None: cuda when available, else cpu
    threads: int | None = None  # CPU threads; None: all cores
    half_weights: bool = False
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    resume: str | None = None  # a checkpoint folder, or a run folder (its newest checkpoint)

    def stage_steps(self) -> dict[str, int]:
        return {"hr": self.hr_steps, "lr": self.lr_steps, "fusion": self.fusion_steps}

    def stage_at(self, step: int) -> tuple[str, int]:
        """(stage, step within it) of the run's 0-based ``step``."""
        for stage, steps in self.stage_steps().items():
            if step < steps:
                return stage, step
            step -= steps
        raise IndexError("step past the end of training")


@dataclass
class ARSegTrainResult:
    """What a run produced; history holds one dict of losses per step."""

    weights: Path
    lr_alone_weights: Path | None
    checkpoint: Path | None
    history: list[dict]
    wall_seconds: float
    steps_per_second: float


def _check(cfg: ARSegTrainConfig) -> None:
    if not cfg.data:
        raise VsegError("arseg training needs a dataset folder (--data)")
    steps = cfg.stage_steps().values()
    if min(steps) < 0 or sum(steps) < 1:
        raise VsegError(f"stage steps must be >= 0 and not all 0, got {cfg.stage_steps()}")
    if cfg.batch_size < 2 or cfg.checkpoint_every < 1:
        # the pyramid pooling's 1x1 cell has one value per channel and image: BatchNorm needs two images
        raise VsegError(f"arseg needs a batch size >= 2 and checkpoint_every >= 1, got {cfg.batch_size}, "
                        f"{cfg.checkpoint_every}")
    if any(c < 8 or c % 8 for c in cfg.crop):
        raise VsegError(f"crop sizes must be multiples of 8, got {tuple(cfg.crop)}")


def _device(cfg: ARSegTrainConfig) -> torch.device:
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    return device


def _lr_factor(step: int, steps: int, cfg: ARSegTrainConfig) -> float:
    """Multiplier of a stage's base LR at its 0-based ``step``: linear warm-up, then cosine."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0
    cosine = 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
    return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def _initial_model(cfg: ARSegTrainConfig) -> ARSeg:
    if not cfg.init_weights:
        if not cfg.init_lr_from_hr:
            raise InputError("keeping the LR branch (--keep-lr) needs --init-weights to keep it from")
        return build_model("arseg", **cfg.model_options)
    model = load_model(cfg.init_weights)
    if model_name(model) != "arseg":
        raise InputError(f"{cfg.init_weights}: holds a {model_name(model)} model, not arseg")
    return model.float()


class ARSegTrainer:
    """The model, one optimizer per stage, and one training step of each stage."""

    def __init__(self, cfg: ARSegTrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.model = _initial_model(cfg).to(device)
        m = self.model
        # param groups carry a "multiplier" of the stage's scheduled LR
        groups = {"hr": [{"params": [*m.hr.parameters(), *m.classifier.parameters()], "multiplier": 1.0}],
                  "lr": [{"params": list(m.lr.parameters()), "multiplier": 1.0}],
                  "fusion": [{"params": list(m.lr.parameters()), "multiplier": 1.0},
                             {"params": list(m.crff.parameters()), "multiplier": cfg.crff_lr_multiplier}]}
        self.optimizers = {stage: torch.optim.AdamW(g, lr=cfg.lr, weight_decay=cfg.weight_decay)
                           for stage, g in groups.items()}

    def begin_phase2(self) -> None:
        """Copy hr into lr (unless init_lr_from_hr is off): phase 2 starts from the trained
        full-resolution weights."""
        if self.cfg.init_lr_from_hr:
            self.model.init_lr_from_hr()

    def _set_modes(self, stage: str) -> None:
        m = self.model
        m.train()
        for module in (m.hr, m.classifier):
            module.requires_grad_(stage == "hr")
        if stage != "hr":
            m.hr.eval()  # frozen: keyframe features and FST targets as at inference

    def _update(self, stage: str, loss: torch.Tensor, step: int) -> None:
        optimizer = self.optimizers[stage]
        factor = _lr_factor(step, self.cfg.stage_steps()[stage], self.cfg)
        for group in optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor * group["multiplier"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        optimizer.step()

    def hr_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """Cross-entropy of the full-resolution network on frames [B, 3, h, w], labels [B, h, w]."""
        self._set_modes("hr")
        frame, label = batch["frame"].to(self.device), batch["label"].to(self.device)
        logits, _ = self.model.keyframe(frame)
        loss = F.cross_entropy(logits, label, ignore_index=IGNORE)
        self._update("hr", loss, step)
        return {"loss": loss.item(), "ce": loss.item()}

    def _low_resolution(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(upsampled LR feature [B, C, h/8, w/8], the frozen hr feature of the frame: FST's target)."""
        m = self.model
        with torch.no_grad():
            target = m.hr_feature(frame)
        small = downscale(frame, lr_size(*frame.shape[-2:], m.config.lr_scale))
        return m.lr_feature(small, target.shape[-2:]), target

    def _supervise(self, stage: str, feature: torch.Tensor, target: torch.Tensor, label: torch.Tensor,
                   step: int) -> dict[str, float]:
        """CE of the classified feature + fst_weight * MSE to the hr feature; one update."""
        ce = F.cross_entropy(self.model.classify(feature, label.shape[-2:]), label, ignore_index=IGNORE)
        fst = F.mse_loss(feature, target)
        loss = ce + self.cfg.fst_weight * fst
        self._update(stage, loss, step)
        return {"loss": loss.item(), "ce": ce.item(), "fst": fst.item()}

    def lr_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """The LR branch alone on frames [B, 3, h, w], labels [B, h, w]."""
        self._set_modes("lr")
        lr_up, target = self._low_resolution(batch["frame"].to(self.device))
        return self._supervise("lr", lr_up, target, batch["label"].to(self.device), step)

    def fusion_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """LR branch + CReFF on a batch of pairs (key, frame, label, mv: see sample_pairs)."""
        self._set_modes("fusion")
        lr_up, target = self._low_resolution(batch["frame"].to(self.device))
        with torch.no_grad():
            key_feature = self.model.hr_feature(batch["key"].to(self.device))
        fused = self.model.fuse(key_feature, lr_up, batch["mv"].to(self.device))
        return self._supervise("fusion", fused, target, batch["label"].to(self.device), step)


def _save(model: ARSeg, path: Path, half: bool) -> Path:
    return save_weights(model.eval(), path, half)


def train_arseg(config: ARSegTrainConfig,
                progress: Callable[[int, int, dict], None] | None = None) -> ARSegTrainResult:
    """Train `arseg` on ``config.data`` (see the module docstring).

    ``progress(step, total_steps, stats)`` is called after every step (stats: stage and losses).
    Writes ``<out>/checkpoints/step_NNNNNNN/`` every ``checkpoint_every`` steps, at the end of
    each stage and at the end; the weights (default ``<out>/arseg.safetensors``) and, when the
    ``lr`` stage ran, ``<weights stem>-lr-alone.safetensors``.
    """
    cfg = config
    _check(cfg)
    device = _device(cfg)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer = ARSegTrainer(cfg, device)
    clips = load_clips(cfg.data, cfg.split, cfg.cache_dir or out / "motion-cache", cfg.keyframe_interval,
                       cfg.max_clips)
    classes = trainer.model.num_classes
    seen = max(int(c.labels[c.labels != IGNORE].max(initial=0)) for c in clips)
    if seen >= classes:
        raise InputError(f"{cfg.data}: label {seen} is outside the model's {classes} classes (model_options num_classes)")
    pool = pair_pool(clips) if cfg.fusion_steps else None
    weights = Path(cfg.weights) if cfg.weights else out / "arseg.safetensors"
    lr_alone = weights.with_name(weights.stem + "-lr-alone.safetensors") if cfg.lr_steps else None
    modules = {"model": trainer.model}
    start, history = 0, []
    if cfg.resume:
        start = read_checkpoint_state(cfg.resume)["step"]
        history = load_checkpoint(cfg.resume, modules, trainer.optimizers)["history"]
    total = sum(cfg.stage_steps().values())
    stage_ends = set(itertools.accumulate(cfg.stage_steps().values()))
    record = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    began, train_seconds, checkpoint = time.time(), 0.0, None
    for step in range(start, total):
        tick = time.time()
        stage, stage_step = cfg.stage_at(step)
        rng = np.random.default_rng([cfg.seed, step])
        if stage == "hr":
            stats = trainer.hr_step(sample_frames(clips, rng, cfg.batch_size, cfg.crop, cfg.flip), stage_step)
        else:
            if step == cfg.hr_steps:
                trainer.begin_phase2()
            if stage == "lr":
                stats = trainer.lr_step(sample_frames(clips, rng, cfg.batch_size, cfg.crop, cfg.flip), stage_step)
            else:
                batch = sample_pairs(clips, rng, cfg.batch_size, cfg.crop, cfg.flip, pool)
                stats = trainer.fusion_step(batch, stage_step)
        train_seconds += time.time() - tick
        if not all(math.isfinite(v) for v in stats.values()):
            raise RuntimeError(f"step {step + 1} ({stage}): non-finite loss {stats} (lower the learning rate?)")
        history.append({"step": step + 1, "stage": stage, **{k: round(v, 6) for k, v in stats.items()}})
        done = step + 1
        if progress is not None:
            progress(done, total, {"stage": stage, **stats})
        if lr_alone is not None and done == cfg.hr_steps + cfg.lr_steps:
            _save(copy.deepcopy(trainer.model), lr_alone, cfg.half_weights)
        if done % cfg.checkpoint_every == 0 or done in stage_ends:
            checkpoint = save_checkpoint(out / "checkpoints", done, modules, trainer.optimizers,
                                         {"config": record, "history": history}, keep=cfg.keep_checkpoints)
    _save(trainer.model, weights, cfg.half_weights)
    ran = total - start
    return ARSegTrainResult(weights, lr_alone, checkpoint, history, time.time() - began,
                            ran / max(train_seconds, 1e-9))


__all__ = ["STAGES", "ARSegTrainConfig", "ARSegTrainResult", "ARSegTrainer", "train_arseg"]
