"""`vseg train`: one command for every model, rejecting the options the chosen model would ignore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vseg.cli.common import JsonOut, Seed, app, console, progress, write_json
from vseg.errors import VsegError


@app.command()
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="stm, lite (distilled online from an stm teacher), spvos (gates trained from stm weights given by --init-weights), or arseg.")],
    data: Annotated[Path, typer.Option("--data", help="DAVIS-2017 or YouTube-VOS layout (e.g. from vseg data synth-vos).")],
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps.")] = 1500,
    out: Annotated[Path | None, typer.Option("--out", help="Final weights (.safetensors); default <run-dir>/<model>.safetensors.")] = None,
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Checkpoints and logs.")] = Path("runs/train"),
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Clips per step (default: 1 for VOS models, 8 for arseg).")] = None,
    crop: Annotated[tuple[int, int] | None, typer.Option("--crop", help="Training crop H W (default: 128 224 for VOS models, at most 192 256 for arseg).")] = None,
    scale_range: Annotated[tuple[float, float] | None, typer.Option("--scale-range", help="VOS models: each training clip is resized by a factor drawn from LOW HIGH before the crop (default 0.9 1.1).")] = None,
    clip_len: Annotated[int, typer.Option("--clip-len", help="Frames per training clip (>= 3).")] = 3,
    max_skip: Annotated[int, typer.Option("--max-skip", help="VOS models: largest gap between consecutive sampled frames.")] = 5,
    skip_schedule: Annotated[str | None, typer.Option("--skip-schedule", help="VOS models: a max-skip curriculum, FRACTION:SKIP,... (e.g. 0.1:12,0.7:5: --max-skip until 10% of the steps, 12 until 70%, then 5).")] = None,
    reentry_fraction: Annotated[float, typer.Option("--reentry-fraction", help="VOS models: this share of the training clips, where the sequence has one, shows an object, then a frame without it, then the object back (e.g. 0.3).")] = 0.0,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", help="Linear LR warm-up before the cosine decay.")] = 50,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Steps between checkpoints.")] = 250,
    workers: Annotated[int, typer.Option("--workers", help="VOS models: data-loading processes (0: in the training process).")] = 0,
    lr: Annotated[float | None, typer.Option("--lr", help="Base learning rate (default: 5e-4 for VOS models, 2e-3 for arseg).")] = None,
    seed: Seed = 0,
    val_data: Annotated[Path | None, typer.Option("--val-data", help="Dataset whose --val-split gives the periodic J&F (DAVIS, or YouTube-VOS: objects given on their first annotation, scored on the annotated frames after it).")] = None,
    val_split: Annotated[str, typer.Option("--val-split", help="VOS models: the split of --val-data to validate on (a YouTube-VOS split needs annotations after each object's first: its 'valid' split has none).")] = "val",
    val_every: Annotated[int, typer.Option("--val-every", help="Validate every N steps (0: at the end only).")] = 0,
    val_size: Annotated[tuple[int, int] | None, typer.Option("--val-size", help="VOS models: validate on frames and masks resized to H W (default: the dataset's size).")] = None,
    min_side: Annotated[int | None, typer.Option("--min-side", help="VOS models: record in the weights that frames with a shorter side below N run scaled up to N (what --scale-range trained for, e.g. 320 for 160-pixel clips at 1.7 2.3); vseg run, profile and validation then do so.")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="A checkpoint folder or run folder to continue.")] = None,
    init_weights: Annotated[Path | None, typer.Option("--init-weights", help="Start from these weights and their model config (widths, working size); --min-side overrides theirs.")] = None,
    stage_steps: Annotated[tuple[int, int, int] | None, typer.Option("--stage-steps", help="arseg: steps of its three stages: full resolution, low resolution alone, low resolution + CReFF (default 2000 1000 2000).")] = None,
    lr_from_hr: Annotated[bool, typer.Option("--lr-from-hr/--keep-lr", help="arseg: start phase 2 with the LR branch copied from hr, or keep --init-weights' LR branch (to continue phase 2).")] = True,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="VOS models: bfloat16 autocast (CUDA; on a CPU it depends on the host: measure with benchmarks/train_step_speed.py).")] = False,
    dice_weight: Annotated[float, typer.Option("--dice-weight", help="VOS models: weight of the soft Dice loss added to the cross-entropy.")] = 0.0,
    ema: Annotated[float, typer.Option("--ema", help="VOS models: ship and validate an exponential moving average of the weights with this decay (e.g. 0.999; 0: the last step's weights).")] = 0.0,
    freeze_norm_at: Annotated[float | None, typer.Option("--freeze-norm-at", help="Recalibrate and freeze BatchNorm at this fraction of the steps (e.g. 0.5).")] = None,
    teacher: Annotated[Path | None, typer.Option("--teacher", help="lite: trained stm weights (default: train the teacher jointly).")] = None,
    teacher_lr: Annotated[float | None, typer.Option("--teacher-lr", help="lite: the teacher's learning rate (default: 0.1 x --lr with --teacher, else --lr); 0 freezes it.")] = None,
    kd: Annotated[bool, typer.Option("--kd/--no-kd", help="lite: distillation at all.")] = True,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="lite: Smooth Block for the feature loss.")] = True,
    stff: Annotated[bool, typer.Option("--stff/--no-stff", help="lite: previous-frame priors (STFF).")] = True,
    discriminator: Annotated[bool, typer.Option("--discriminator/--no-discriminator", help="lite: adversarial loss.")] = True,
    adaptive_lr: Annotated[bool, typer.Option("--adaptive-lr/--no-adaptive-lr", help="lite: damp KD when the student lags.")] = True,
    budget_range: Annotated[tuple[float, float] | None, typer.Option("--budget-range", help="spvos: the range of budgets trained for, LOW HIGH (fractions of the gated convs' dense FLOPs; default 0.2 0.8); --budget at inference must lie in it.")] = None,
    sparsity_weight: Annotated[float, typer.Option("--sparsity-weight", help="spvos: weight of the loss pulling the expected cost to the budget.")] = 1.0,
    gate_lr_scale: Annotated[float, typer.Option("--gate-lr-scale", help="spvos: the gates learn at this multiple of --lr (they start untrained).")] = 1.0,
    json_out: JsonOut = None,
) -> None:
    """Train a model: stm; lite by online distillation; spvos by mixed sparse training from stm (resumable, with periodic validation J&F); or arseg in its three stages."""
    from vseg.train import TrainConfig, train_vos

    if model not in ("stm", "lite", "spvos", "arseg"):
        raise VsegError(f"vseg train --model takes stm, lite, spvos or arseg, not {model!r}")
    _reject_foreign_options(ctx, model)
    if teacher_lr is not None and teacher_lr < 0:
        raise VsegError(f"--teacher-lr must be >= 0, got {teacher_lr:g}")
    if gate_lr_scale <= 0:
        raise VsegError(f"--gate-lr-scale must be > 0, got {gate_lr_scale:g}")
    if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
        raise VsegError(f"--scale-range needs 0 < LOW <= HIGH, got {scale_range[0]:g} {scale_range[1]:g}")
    if not 0.0 <= reentry_fraction <= 1.0:
        raise VsegError(f"--reentry-fraction must be in [0, 1], got {reentry_fraction:g}")
    if min_side is not None and min_side < 0:
        raise VsegError(f"--min-side needs N >= 0 (0: frames run at their own size), got {min_side}")
    if val_size is not None and min(val_size) < 16:
        raise VsegError(f"--val-size needs H and W of at least 16 pixels, got {val_size[0]} {val_size[1]}")
    if model == "arseg":
        options = {"batch_size": batch_size, "lr": lr, "crop": tuple(crop) if crop else None,
                   "warmup_steps": warmup_steps if _given(ctx, "warmup_steps") else None,
                   "checkpoint_every": checkpoint_every if _given(ctx, "checkpoint_every") else None}
        _train_arseg(data, run_dir, out, stage_steps, seed, resume, init_weights, lr_from_hr, json_out,
                     {k: v for k, v in options.items() if v is not None})
        return
    cfg = TrainConfig(model=model, data=str(data), out=str(run_dir), weights=str(out) if out else None,
                      steps=steps, batch_size=batch_size or 1, crop=tuple(crop or (128, 224)), clip_len=clip_len,
                      val_size=tuple(val_size) if val_size else None,
                      lr=5e-4 if lr is None else lr, seed=seed,
                      max_skip=max_skip, skip_schedule=parse_skip_schedule(skip_schedule),
                      reentry_fraction=reentry_fraction, warmup_steps=warmup_steps, checkpoint_every=checkpoint_every,
                      num_workers=workers, amp=amp, dice_weight=dice_weight,
                      val_data=str(val_data) if val_data else None, val_split=val_split, val_every=val_every,
                      resume=str(resume) if resume else None, init_weights=str(init_weights) if init_weights else None,
                      freeze_norm_at=freeze_norm_at, ema_decay=ema,
                      teacher_weights=str(teacher) if teacher else None, teacher_lr=teacher_lr, use_kd=kd, use_smooth=smooth, use_stff=stff,
                      use_discriminator=discriminator, use_adaptive_lr=adaptive_lr,
                      sparsity_weight=sparsity_weight, gate_lr_scale=gate_lr_scale,
                      model_options={**_budget_options(budget_range),
                                     **({"min_side": min_side} if min_side is not None else {})},
                      **({"scale_range": tuple(scale_range)} if scale_range else {}))
    result = train_vos(cfg)
    last = result.validation[-1] if result.validation else None
    score = f", validation J&F {last['J&F']:.2f}" if last else ""
    console.print(f"wrote {result.weights} after {result.steps} steps ({result.wall_seconds / 60:.1f} min{score})",
                  highlight=False)
    write_json(json_out, {"config": cfg, "weights": result.weights, "validation": result.validation,
                          "wall_seconds": result.wall_seconds, "steps_per_second": result.steps_per_second})


def parse_skip_schedule(text: str | None) -> tuple[tuple[float, int], ...]:
    """'0.1:12,0.7:5' -> ((0.1, 12), (0.7, 5)); None or '' -> () (one max skip throughout)."""
    if not text:
        return ()
    try:
        pairs = [part.split(":") for part in text.split(",")]
        return tuple((float(fraction), int(skip)) for fraction, skip in pairs)
    except ValueError:  # a part without exactly one ':', or a number that does not parse
        raise VsegError(f"--skip-schedule takes FRACTION:SKIP,... (e.g. 0.1:12,0.7:5), not {text!r}") from None


def _budget_options(budget_range: tuple[float, float] | None) -> dict:
    """spvos config overrides for --budget-range (the default budget moved into the range)."""
    if budget_range is None:
        return {}
    low, high = budget_range
    if not 0.0 <= low <= high <= 1.0:
        raise VsegError(f"--budget-range needs 0 <= LOW <= HIGH <= 1, got {low:g} {high:g}")
    return {"budget_low": low, "budget_high": high, "budget": min(max(0.5, low), high)}


# Options that only some models read: given to another model they are an error, not silently ignored.
_VOS_MODELS = ("stm", "lite", "spvos")
_OPTION_READERS = {
    "stage_steps": ("arseg",), "lr_from_hr": ("arseg",),
    **{name: _VOS_MODELS for name in ("steps", "clip_len", "max_skip", "skip_schedule", "reentry_fraction", "workers", "val_data", "val_split", "val_every",
                                      "val_size", "min_side", "scale_range", "amp", "dice_weight", "freeze_norm_at", "ema")},
    **{name: ("lite",) for name in ("teacher", "teacher_lr", "kd", "smooth", "stff", "discriminator", "adaptive_lr")},
    "budget_range": ("spvos",), "sparsity_weight": ("spvos",), "gate_lr_scale": ("spvos",),
}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` (its parameter name) was given on the command line."""
    source = ctx.get_parameter_source(name)  # by name: typer vendors its own copy of click's enum
    return source is not None and source.name != "DEFAULT"


def _reject_foreign_options(ctx: typer.Context, model: str) -> None:
    """One error line naming the options ``model`` would otherwise silently ignore."""
    foreign = [p for p in ctx.command.params
               if model not in _OPTION_READERS.get(p.name, (model,)) and _given(ctx, p.name)]
    if not foreign:
        return
    flags = ["/".join(p.opts + p.secondary_opts) for p in foreign]
    readers = sorted({", ".join(_OPTION_READERS[p.name]) for p in foreign})
    hint = " (arseg counts its steps per stage: --stage-steps)" if model == "arseg" and "--steps" in flags else ""
    raise VsegError(f"vseg train --model {model} does not take {', '.join(flags)}: "
                    f"{'it is' if len(flags) == 1 else 'they are'} read by {' / '.join(readers)} only{hint}")


def _train_arseg(data: Path, run_dir: Path, out: Path | None, stage_steps, seed: int, resume: Path | None,
                 init_weights: Path | None, lr_from_hr: bool, json_out: Path | None, overrides: dict) -> None:
    from vseg.train.arseg import ARSegTrainConfig, train_arseg

    stages = dict(zip(("hr_steps", "lr_steps", "fusion_steps"), stage_steps)) if stage_steps else {}
    options = dict(stages, init_lr_from_hr=lr_from_hr, **overrides)
    cfg = ARSegTrainConfig(data=str(data), out=str(run_dir), weights=str(out) if out else None, seed=seed, resume=str(resume) if resume else None,
                           init_weights=str(init_weights) if init_weights else None, **options)
    total = sum(cfg.stage_steps().values())
    with progress() as bar:
        job = bar.add_task("train arseg", total=total)
        result = train_arseg(cfg, lambda step, n, stats: bar.update(job, completed=step, total=n))
    console.print(f"wrote {result.weights} after {total} steps ({result.wall_seconds / 60:.1f} min)", highlight=False)
    write_json(json_out, {"config": cfg, "weights": result.weights, "lr_alone_weights": result.lr_alone_weights,
                          "wall_seconds": result.wall_seconds, "steps_per_second": result.steps_per_second})

