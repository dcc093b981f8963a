"""Training `stm`, and `lite` by online knowledge distillation from `stm`.

:func:`train_vos` is the whole loop: clips from :class:`~vseg.train.vos_data.VOSClipDataset`,
one :meth:`VOSTrainer.train_step` per batch, a progress bar, resumable checkpoints
(:mod:`vseg.train.checkpoint`), periodic validation J&F (:func:`~vseg.train.validate.validate_vos`)
and the final weights through :func:`~vseg.models.registry.save_model`.

`stm` (STCN-style): frame 0 with its ground truth writes memory, every later frame is segmented
from memory and written back with its predicted mask (:func:`~vseg.train.losses.rollout_clip`);
loss = bootstrapped cross-entropy (+ optional dice); AdamW, warm-up then cosine (or step) LR,
gradient clipping.

`lite`: teacher (`stm`) and student step together on each clip (online distillation). The
teacher learns from its own task loss only. The student's loss is its task loss plus
``factor * KD`` where KD is the feature loss (student features lifted to teacher sizes by the
Smooth Blocks, or by plain 1x1 convs when ``use_smooth`` is off), an optional logit KL, and the
adversarial loss of the feature discriminator (which has its own optimizer). ``factor`` is 1, or
the adaptive distillation LR's damping when ``use_adaptive_lr``: it scales the KD part of the
step only; scaling the optimizer's LR instead would damp the task gradient as well. A frozen
teacher (``teacher_lr`` 0) runs only its key encoder unless its logits or loss are read; with
``use_kd`` off there is no teacher and the student trains on its task loss alone.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vseg.errors import VsegError
from vseg.train.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint
from vseg.train.config import TrainConfig, TrainResult, norm_freeze_step, pick_device
from vseg.train.trainer import VOSTrainer, save_weights
from vseg.train.validate import validate_vos
from vseg.train.vos_data import ContinuingSampler, VOSClipDataset, scheduled_skip

__all__ = ["TrainConfig", "TrainResult", "train_vos"]


def _check(cfg: TrainConfig) -> None:
    if not cfg.data:
        raise VsegError("training needs a dataset folder (--data)")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise VsegError(f"steps and batch size must be >= 1, got {cfg.steps}, {cfg.batch_size}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise VsegError(f"the EMA decay must be in [0, 1) (0: off), got {cfg.ema_decay:g}")
    if cfg.checkpoint_every < 1:
        raise VsegError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    if not 0.0 <= cfg.reentry_fraction <= 1.0:
        raise VsegError(f"the re-entry fraction must be in [0, 1], got {cfg.reentry_fraction:g}")
    fractions = [f for f, _ in cfg.skip_schedule]
    if fractions != sorted(fractions) or any(not 0 <= f < 1 for f in fractions) or \
            any(skip < 1 for _, skip in cfg.skip_schedule):
        raise VsegError(f"the max-skip schedule needs ascending fractions in [0, 1) and skips >= 1, "
                        f"got {list(cfg.skip_schedule)}")


def skip_schedule_samples(cfg: TrainConfig) -> tuple[tuple[int, int], ...]:
    """``cfg.skip_schedule`` (fractions of the steps) as VOSClipDataset's (first sample, skip)."""
    return tuple((round(f * cfg.steps) * cfg.batch_size, skip) for f, skip in cfg.skip_schedule)


def max_skip_at_step(cfg: TrainConfig, step: int) -> int:
    """The max skip of the clips of training step ``step`` under ``cfg``'s schedule."""
    return scheduled_skip(step * cfg.batch_size, cfg.max_skip, skip_schedule_samples(cfg))


def _config_record(cfg: TrainConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def train_vos(config: TrainConfig) -> TrainResult:
    """Train ``config.model`` on ``config.data`` for ``config.steps`` steps (see the module docstring).

    Writes ``<out>/checkpoints/step_NNNNNNN/`` every ``checkpoint_every`` steps and at the end,
    and the deployable model to ``weights`` (default ``<out>/<model>.safetensors``; float16 when
    ``half_weights``); a lite run whose teacher trained also writes the teacher next to it
    (``<weights stem>-teacher-stm.safetensors``). With
    ``resume`` the run continues from a checkpoint and ends with the weights the uninterrupted
    run would have had.
    """
    cfg = config
    _check(cfg)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    trainer = VOSTrainer(cfg, device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    start, history, validation = 0, [], []
    if cfg.resume:
        start = read_checkpoint_state(cfg.resume)["step"]
    dataset = VOSClipDataset(cfg.data, cfg.split, clip_len=cfg.clip_len, max_skip=cfg.max_skip,
                             max_objects=cfg.max_objects, crop=cfg.crop, flip=cfg.flip,
                             scale_range=cfg.scale_range, seed=cfg.seed, skip_schedule=skip_schedule_samples(cfg),
                             reentry_fraction=cfg.reentry_fraction)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=ContinuingSampler(start * cfg.batch_size),
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    batches = iter(loader)  # draws a seed from torch's RNG: before the checkpoint restores it
    if cfg.resume:
        state = load_checkpoint(cfg.resume, trainer.modules, trainer.optimizers)
        history, validation = state["history"], state["validation"]
        trainer.load_extra_state(state.get("trainer", {}))
    report = _Reporter(cfg, start)
    began, train_seconds, checkpoint = time.time(), 0.0, None
    freeze_at = norm_freeze_step(cfg)
    try:
        for step in range(start, cfg.steps):
            tick = time.time()
            if freeze_at is not None and step >= freeze_at and not trainer.norm_frozen:
                trainer.freeze_norms(_calibration_batches(cfg, max_skip_at_step(cfg, step)))
                report.note(f"step {step}: BatchNorm recalibrated on {cfg.norm_calibration_batches} batches and frozen")
            stats = trainer.train_step(next(batches), step)
            train_seconds += time.time() - tick
            history.append({"step": step + 1, **{k: round(v, 6) for k, v in stats.items()}})
            if not all(math.isfinite(v) for v in stats.values()):
                raise RuntimeError(f"step {step + 1}: non-finite loss {stats} (lower the learning rate?)")
            done = step + 1
            report.update(done, stats, (done - start) / max(train_seconds, 1e-9))
            last = done == cfg.steps
            if cfg.val_data and ((cfg.val_every and done % cfg.val_every == 0) or last):
                validation.append({"step": done, **_validate(trainer, cfg)})
                report.note(f"step {done}: validation J&F {validation[-1]['J&F']:.2f} "
                            f"(J {validation[-1]['J']:.2f}, F {validation[-1]['F']:.2f})")
            if done % cfg.checkpoint_every == 0 or last:
                state = {"config": _config_record(cfg), "history": history, "validation": validation,
                         "trainer": trainer.extra_state()}
                checkpoint = save_checkpoint(out / "checkpoints", done, trainer.modules, trainer.optimizers,
                                             state, keep=cfg.keep_checkpoints)
    finally:
        report.close()
    weights = Path(cfg.weights) if cfg.weights else out / f"{cfg.model}.safetensors"
    save_weights(trainer.deployable(), weights, cfg.half_weights)
    if trainer.teacher is not None and "teacher" in trainer.optimizers:
        save_weights(trainer.teacher, weights.with_name(weights.stem + "-teacher-stm.safetensors"), cfg.half_weights)
    ran = cfg.steps - start
    return TrainResult(cfg.model, cfg.steps, weights, checkpoint, history[-1]["loss"] if history else float("nan"),
                       history, validation, time.time() - began, ran / max(train_seconds, 1e-9))


def _validate(trainer: VOSTrainer, cfg: TrainConfig) -> dict:
    """Validation J&F of the model being trained; puts it back in training mode afterwards."""
    try:
        result = validate_vos(trainer.final_network, cfg.val_data, split=cfg.val_split,
                              max_sequences=cfg.val_sequences, size=cfg.val_size)
    finally:
        trainer.train_mode()
    return {k: result[k] for k in ("J&F", "J", "F")}


def _calibration_batches(cfg: TrainConfig, max_skip: int) -> list[dict]:
    """``norm_calibration_batches`` collated clips drawn like the training ones of the freezing
    step (``max_skip``) but from their own seed, so the calibration leaves the training sequence
    (and a resumed run) untouched."""
    dataset = VOSClipDataset(cfg.data, cfg.split, clip_len=cfg.clip_len, max_skip=max_skip,
                             max_objects=cfg.max_objects, crop=cfg.crop, flip=cfg.flip,
                             scale_range=cfg.scale_range, seed=cfg.seed + 7919,
                             reentry_fraction=cfg.reentry_fraction)
    # its own generator: making the iterator must not draw from torch's global RNG
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=ContinuingSampler(0),
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    return [next(batches) for _ in range(cfg.norm_calibration_batches)]


class _Reporter:
    """A rich progress bar (loss, steps/s) on a terminal; plain lines every ``log_every`` steps
    otherwise (e.g. a run under nohup writing a log file)."""

    def __init__(self, cfg: TrainConfig, start: int) -> None:
        from rich.console import Console

        self.cfg = cfg
        self.console = Console(stderr=True)
        self.bar = None
        if cfg.progress and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(f"train {cfg.model}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.2f} steps/s"),
                                TimeRemainingColumn(), console=self.console)
            self.task = self.bar.add_task("train", total=cfg.steps, completed=start, loss=float("nan"), rate=0.0)
            self.bar.start()

    def update(self, step: int, stats: dict, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=stats["loss"], rate=rate)
        elif self.cfg.progress and (step % self.cfg.log_every == 0 or step == self.cfg.steps):
            losses = " ".join(f"{k} {v:.4f}" for k, v in stats.items())
            print(f"step {step}/{self.cfg.steps} {losses} | {rate:.3f} steps/s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)
        elif self.cfg.progress:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
