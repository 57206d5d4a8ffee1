"""Optimiser, learning-rate schedules and a pickle-free form of the optimiser state."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """``multistep``: halve at the given fractions (paper); ``cosine``: decay to lr_min after a linear warm-up."""

    lr: float = 2e-4
    kind: str = "multistep"
    warmup: int = 0
    lr_min: float = 0.0
    milestones: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    gamma: float = 0.5

    def lr_at(self, it: int, total: int) -> float:
        if self.warmup and it < self.warmup:
            return self.lr * (it + 1) / self.warmup
        if self.kind == "multistep":
            return self.lr * self.gamma ** sum(it >= m * total for m in self.milestones)
        if self.kind == "cosine":
            t = min(1.0, (it - self.warmup) / max(1, total - self.warmup))
            return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * t))
        if self.kind == "constant":
            return self.lr
        raise ValueError(f"unknown schedule {self.kind!r}")


def make_optimizer(params, lr: float, weight_decay: float = 1e-5) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr`` times the group's ``lr_scale`` (1 where it has none)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state as flat named tensors (for safetensors)."""
    out = {}
    state = opt.state_dict()["state"]
    for idx, st in state.items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            out[f"{idx}.{key}"] = t.detach().cpu().contiguous()
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`optimizer_tensors`; hyper-parameters stay those of ``opt``."""
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    sd["state"] = state
    opt.load_state_dict(sd)
