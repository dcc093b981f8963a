"""The models, optimizers and single training step of a VOS run (see :mod:`vseg.train.vos`)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vseg.errors import InputError, VsegError
from vseg.models.gates import mixed_batch_budget
from vseg.models.lite import adversarial_loss, discriminator_loss, feature_distillation_loss, logit_distillation_loss
from vseg.models.registry import build_model, load_model, model_name, save_model
from vseg.models.spvos import spvos_training_step
from vseg.models.stm import KeyFeatures, MemoryNetwork
from vseg.models.weights import load_spvos
from vseg.train.config import TrainConfig, hard_pixel_fraction, lr_factor
from vseg.train.ema import WeightAverage
from vseg.train.losses import clip_task_loss, encode_clip_keys, rollout_clip
from vseg.train.norm import freeze_batchnorm, recalibrate_batchnorm


def _adamw(parameters, lr: float, weight_decay: float, scaled=(), lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW with no decay on biases and normalisation weights (1-D tensors).

    Parameters in ``scaled`` learn at ``lr_scale`` times the rate (each group's ``multiplier``,
    as in the arseg trainer, which :meth:`VOSTrainer.set_step_lr` keeps); with lr_scale 1 they
    are not set apart.
    """
    params = [p for p in parameters if p.requires_grad]
    chosen = {id(p) for p in scaled} if lr_scale != 1.0 else set()
    groups = []
    for scale, members in ((1.0, [p for p in params if id(p) not in chosen]),
                           (lr_scale, [p for p in params if id(p) in chosen])):
        for decay in (True, False):
            group = [p for p in members if (p.dim() > 1) == decay]
            if group or scale == 1.0:
                groups.append({"params": group, "weight_decay": weight_decay if decay else 0.0,
                               "lr": lr * scale, "multiplier": scale})
    return torch.optim.AdamW(groups, lr=lr)


def _feature_adapters(student: MemoryNetwork, teacher: MemoryNetwork) -> nn.ModuleDict:
    """Plain 1x1 convs lifting student features to teacher sizes: feature KD without Smooth Blocks."""
    _, s8, s16 = student.key_encoder.out_channels
    _, t8, t16 = teacher.key_encoder.out_channels
    return nn.ModuleDict({"feat16": nn.Conv2d(s16, t16, 1), "skip8": nn.Conv2d(s8, t8, 1)})


class VOSTrainer:
    """Models, optimizers and one training step; :func:`train_vos` drives it.

    ``modules`` / ``optimizers`` name everything a checkpoint must hold.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.teacher: MemoryNetwork | None = None
        self.adapters: nn.ModuleDict | None = None
        self.damper = None
        self.norm_frozen = False
        if cfg.model == "stm":
            self.model = self._initial_model("stm", cfg.model_options)
        elif cfg.model == "lite":
            kd = cfg.use_kd
            options = {"use_stff": cfg.use_stff, "use_smooth": kd and cfg.use_smooth,
                       "use_discriminator": kd and cfg.use_discriminator,
                       "use_adaptive_lr": kd and cfg.use_adaptive_lr}
            if kd:  # without KD the student never reads the teacher: no teacher at all
                self.teacher = self._teacher().to(device)
                _, t8, t16 = self.teacher.key_encoder.out_channels  # the Smooth Blocks' targets
                options |= {"teacher_feat16": t16, "teacher_skip8": t8}
            self.model = self._initial_model("lite", options | cfg.model_options)
            if kd and self.model.smooth is None:
                self.adapters = _feature_adapters(self.model, self.teacher).to(device)
            self.damper = self.model.make_lr_damper()
        elif cfg.model == "spvos":
            self.model = self._initial_spvos()
        else:
            raise VsegError(f"cannot train model {cfg.model!r} here (stm, lite or spvos)")
        self.model.to(device).train()
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        student_params = self.model.student_parameters() if cfg.model == "lite" else list(self.model.parameters())
        if self.adapters is not None:
            student_params += list(self.adapters.parameters())
        gates = self.model.gate_parameters() if cfg.model == "spvos" else []
        self.optimizers = {"model": _adamw(student_params, cfg.lr, cfg.weight_decay, gates, cfg.gate_lr_scale)}
        if self.teacher is not None and self.teacher_lr > 0:
            self.optimizers["teacher"] = _adamw(self.teacher.parameters(), self.teacher_lr, cfg.weight_decay)
        discriminator = getattr(self.model, "discriminator", None)
        if discriminator is not None:
            self.optimizers["discriminator"] = torch.optim.Adam(discriminator.parameters(), cfg.discriminator_lr,
                                                                betas=(0.5, 0.999))
        self.base_lrs = {"model": cfg.lr, "teacher": self.teacher_lr, "discriminator": cfg.discriminator_lr}

    def _initial_model(self, name: str, options: dict) -> MemoryNetwork:
        """A fresh model, or one continuing ``init_weights``: built with their config (widths,
        working size...), ``options`` overriding it, then loaded with their tensors."""
        if not self.cfg.init_weights:
            return build_model(name, **options)
        start = load_model(self.cfg.init_weights)
        if model_name(start) != name:
            raise InputError(f"{self.cfg.init_weights}: holds a {model_name(start)} model, not {name}")
        model = build_model(name, config=start.config, **options)
        try:
            # Missing keys are fine (e.g. deployed lite weights lack the training-only parts).
            _, unexpected = model.load_state_dict(start.state_dict(), strict=False)
        except RuntimeError:  # a tensor of another shape: an option changed a width
            unexpected = True
        if unexpected:
            raise InputError(f"{self.cfg.init_weights}: weights do not fit this {name} configuration")
        return model

    def _initial_spvos(self) -> MemoryNetwork:
        """spvos starts from trained weights: an stm (fresh gates) or an spvos (continue)."""
        if not self.cfg.init_weights:
            raise VsegError("training spvos needs trained stm weights to start from (--init-weights stm.safetensors)")
        return load_spvos(self.cfg.init_weights, **self.cfg.model_options)

    @property
    def teacher_lr(self) -> float:
        cfg = self.cfg
        if cfg.teacher_lr is not None:
            return cfg.teacher_lr
        return 0.1 * cfg.lr if cfg.teacher_weights else cfg.lr

    def _teacher(self) -> MemoryNetwork:
        if self.cfg.teacher_weights:
            teacher = load_model(self.cfg.teacher_weights)
            if model_name(teacher) != "stm":
                raise InputError(f"{self.cfg.teacher_weights}: the teacher must be an stm model, "
                                 f"this holds {model_name(teacher)}")
        else:
            teacher = build_model("stm", **self.cfg.teacher_options)
        return teacher.train() if self.teacher_lr > 0 else teacher.eval().requires_grad_(False)

    @property
    def modules(self) -> dict[str, nn.Module]:
        found = {"model": self.model, "teacher": self.teacher, "adapters": self.adapters, "ema": self.ema}
        return {k: v for k, v in found.items() if v is not None}

    @property
    def final_network(self) -> MemoryNetwork:
        """What the run ships and validates: the weight average with ``ema_decay``, else the model."""
        return self.ema.average if self.ema is not None else self.model

    def set_step_lr(self, step: int) -> float:
        factor = lr_factor(self.cfg, step)
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lrs[name] * factor * group.get("multiplier", 1.0)
        return factor

    def _trained_networks(self) -> list[MemoryNetwork]:
        return [self.model] + ([self.teacher] if "teacher" in self.optimizers else [])

    def freeze_norms(self, calibration_batches) -> None:
        """Recalibrate the BatchNorm statistics of every network being trained on
        ``calibration_batches`` (a re-iterable of collated clips) and freeze them from now on."""
        for network in self._trained_networks():
            recalibrate_batchnorm(network, calibration_batches, self.device)
        if self.ema is not None:  # new statistics: average only weights trained with them
            self.ema.reset(self.model)
        self.norm_frozen = True
        self.train_mode()

    def train_mode(self) -> None:
        """Back to training mode after validation, BatchNorm staying frozen once it is."""
        for network in self._trained_networks():
            network.train()
            if self.norm_frozen:
                freeze_batchnorm(network)

    def extra_state(self) -> dict:
        """Small non-tensor state for state.json (the damper's running ratio, frozen norms)."""
        state: dict = {"norm_frozen": self.norm_frozen}
        if self.damper is not None:
            state["damper"] = {"average_ratio": self.damper.average_ratio, "factor": self.damper.factor}
        return state

    def load_extra_state(self, state: dict) -> None:
        if self.damper is not None and "damper" in state:
            self.damper.average_ratio = state["damper"]["average_ratio"]
            self.damper.factor = state["damper"]["factor"]
        self.norm_frozen = bool(state.get("norm_frozen", False))
        self.train_mode()

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        """One optimisation step on a collated batch of clips; returns the losses as floats."""
        self.set_step_lr(step)
        frames = batch["frames"].to(self.device, non_blocking=True)
        masks = batch["masks"].to(self.device, non_blocking=True)
        valid = batch["object_valid"].to(self.device, non_blocking=True)
        top = hard_pixel_fraction(self.cfg, step)
        autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=self.cfg.amp)
        with autocast:
            if self.cfg.model == "spvos":
                stats = self._spvos_step(frames, masks, valid, top, step)
            elif self.teacher is None:
                stats = self._stm_step(frames, masks, valid, top)
            else:
                stats = self._distillation_step(frames, masks, valid, top)
        if self.ema is not None:
            self.ema.update(self.model)
        return stats

    def _optimise(self, name: str, loss: torch.Tensor, params) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()

    def _stm_step(self, frames, masks, valid, top) -> dict[str, float]:
        roll = rollout_clip(self.model, frames, masks, valid)
        loss = clip_task_loss(roll.logits, masks, valid, top, self.cfg.dice_weight)
        self._optimise("model", loss, self.model.parameters())
        return {"loss": loss.item()}

    def _spvos_step(self, frames, masks, valid, top, step: int) -> dict[str, float]:
        """Mixed sparse training: a dense batch or a sparse one at a budget drawn from the trained
        range; the budget and the Gumbel noise depend on (seed, step) only, so a resumed run
        draws what the uninterrupted one did."""
        cfg, model = self.cfg, self.model
        rng = np.random.default_rng([cfg.seed, step])
        budget = mixed_batch_budget(step, rng, model.config.budget_low, model.config.budget_high, cfg.sparse_every)
        noise = torch.Generator(device=frames.device).manual_seed(int(rng.integers(2**62)))
        loss, stats = spvos_training_step(model, frames, masks, valid, budget=budget, tau=cfg.gumbel_tau,
                                          generator=noise, sparsity_weight=cfg.sparsity_weight,
                                          top_fraction=top, dice_weight=cfg.dice_weight)
        self._optimise("model", loss, self.model.parameters())
        return stats

    def _adapt(self, feats: KeyFeatures) -> dict[str, torch.Tensor]:
        if self.adapters is None:
            return self.model.adapt_features(feats)
        return {"feat16": self.adapters["feat16"](feats.feat16), "skip8": self.adapters["skip8"](feats.skip8)}

    def _distillation_step(self, frames, masks, valid, top) -> dict[str, float]:
        cfg, teacher = self.cfg, self.teacher
        train_teacher = "teacher" in self.optimizers
        # The feature loss reads only the teacher's key features; its logits and task loss are
        # needed when it trains, for logit KD and for the adaptive damper. A frozen teacher
        # otherwise skips the memory reads and decoder (most of its rollout's cost).
        full_rollout = train_teacher or cfg.logit_kd_weight > 0 or self.damper is not None
        stats: dict[str, float] = {}
        with torch.set_grad_enabled(train_teacher):
            if full_rollout:
                teacher_roll = rollout_clip(teacher, frames, masks, valid)
                teacher_loss = clip_task_loss(teacher_roll.logits, masks, valid, top, cfg.dice_weight)
                stats["teacher"] = teacher_loss.item()
                teacher_feats = teacher_roll.feats
            else:
                teacher_feats = encode_clip_keys(teacher, frames)
        if train_teacher:
            self._optimise("teacher", teacher_loss, teacher.parameters())
        roll = rollout_clip(self.model, frames, masks, valid)
        task = clip_task_loss(roll.logits, masks, valid, top, cfg.dice_weight)
        stats = {"loss": task.item(), **stats}
        # Only a distilling lite has a teacher (VOSTrainer: no teacher without KD).
        adapted = [self._adapt(f) for f in roll.feats]
        kd = cfg.feature_kd_weight * torch.stack(
            [feature_distillation_loss(a, t) for a, t in zip(adapted, teacher_feats)]).mean()
        stats["feature_kd"] = kd.item() / max(cfg.feature_kd_weight, 1e-12)
        if cfg.logit_kd_weight > 0:
            logit_kd = torch.stack([logit_distillation_loss(s, t, cfg.kd_temperature)
                                    for s, t in zip(roll.logits, teacher_roll.logits)]).mean()
            kd = kd + cfg.logit_kd_weight * logit_kd
            stats["logit_kd"] = logit_kd.item()
        if self.model.discriminator is not None:
            adv = torch.stack([adversarial_loss(self.model.discriminator, a["feat16"]) for a in adapted]).mean()
            kd = kd + cfg.adversarial_weight * adv
            stats["adversarial"] = adv.item()
        factor = 1.0
        if self.damper is not None:
            factor = stats["kd_factor"] = self.damper.update(task.item(), stats["teacher"])
        total = task + factor * kd
        params = [p for group in self.optimizers["model"].param_groups for p in group["params"]]
        self._optimise("model", total, params)
        if self.model.discriminator is not None:
            # The adversarial backward above left gradients on the discriminator: _optimise clears them.
            d_loss = torch.stack([discriminator_loss(self.model.discriminator, t.feat16, a["feat16"])
                                  for a, t in zip(adapted, teacher_feats)]).mean()
            self._optimise("discriminator", d_loss, self.model.discriminator.parameters())
            stats["discriminator"] = d_loss.item()
        return stats

    def deployable(self) -> MemoryNetwork:
        """A CPU copy of :attr:`final_network` without training-only parts (lite's Smooth Blocks
        and discriminator), in eval mode, ready for :func:`save_model`."""
        model = self.final_network
        if model_name(model) == "lite" and (model.smooth is not None or model.discriminator is not None):
            config = dataclasses.replace(model.config, use_smooth=False, use_discriminator=False)
            deployed = build_model("lite", config=config)
            deployed.load_state_dict({k: v for k, v in model.state_dict().items()
                                      if k.split(".")[0] not in model.training_only})
            return deployed.eval()
        return copy.deepcopy(model).cpu().eval()


def save_weights(model: MemoryNetwork, path: Path, half: bool) -> Path:
    """save_model of ``model`` (float16 copies of floating tensors when ``half``)."""
    shipped = copy.deepcopy(model).cpu()
    if half:
        shipped = shipped.half()
    return save_model(shipped, path)
