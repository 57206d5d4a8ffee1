"""The optimisation loop of one worker: config, step, validation and resumable state on any fsspec URL.

The Ray Train wrapper (training/ray_train.py) and the single-process runner both drive these functions.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import fsspec
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from irn_batch.model.checkpoint import checkpoint_bytes, checkpoint_from_bytes
from irn_batch.metrics import bicubic_resize, psnr_y
from irn_batch.model import IRN, IRNConfig
from irn_batch.model.transforms import quantize_8bit
from training.codec import CodecSpec, decode, encode, parse_codecs, to_uint8
from training.data import TrainImage, bicubic_downscale
from training.losses import LossWeights, irn_loss
from training.optim import Schedule, load_optimizer_tensors, make_optimizer, optimizer_tensors, set_lr


@dataclass
class TrainConfig:
    scale: int = 2
    blocks: int = 8
    growth: int = 32
    batch: int = 16
    patch: int = 144
    iterations: int = 500_000
    lr: float = 2e-4
    schedule: str = "multistep"  # multistep (paper) | cosine | constant
    warmup: int = 0
    lr_min: float = 0.0
    weight_decay: float = 1e-5
    grad_clip: float = 10.0
    lambda_fit: float | None = None  # None = scale**2
    lambda_ce: float = 1.0
    lambda_rec: float = 1.0
    # z in the reverse pass during training: 1 = eps ~ N(0, I) (paper); 0 = z = 0 throughout.
    z_scale: float = 1.0
    # Temperature recorded in exported checkpoints as the one to restore with.
    restore_temperature: float = 1.0
    bf16: bool = False  # autocast on CUDA (and CPUs with bf16 support)
    seed: int = 0
    init_from: str | None = None  # warm start: an irn_batch checkpoint (e.g. x2 weights for x4's first level)
    val_crop: int = 256
    # Codec between the 8-bit LR and the reverse pass (training/codec.py): none (lossless LR, the paper),
    # jpeg | webp | avif (Pillow, straight-through gradient), diffjpeg (kornia), or a '+'-list drawn per sample.
    codec: str = "none"
    codec_quality_min: int = 70  # per-sample quality drawn uniformly from [min, max]
    codec_quality_max: int = 95
    codec_clean_weight: float = 0.5  # weight of the restore from the lossless LR (keeps the PNG path good)
    codec_rate_weight: float = 0.0  # loss per estimated JPEG bit of the LR (training.codec.jpeg_rate_proxy)
    val_quality: int = 80  # validation with a codec: also restore from the LR at this quality of its first codec
    # LR-recovery module before the reverse pass (irn_batch/model/recovery.py): 0 = none. It starts as the
    # identity; with init_from it is the one new part, so it learns at recovery_lr_scale times the lr.
    recovery_width: int = 0
    recovery_layers: int = 4
    recovery_lr_scale: float = 1.0
    extra: dict = field(default_factory=dict)

    def model_config(self) -> IRNConfig:
        return IRNConfig(scale=self.scale, blocks=self.blocks, growth=self.growth,
                         recovery_width=self.recovery_width, recovery_layers=self.recovery_layers)

    def loss_weights(self) -> LossWeights:
        fit = float(self.scale**2) if self.lambda_fit is None else self.lambda_fit
        return LossWeights(fit=fit, ce=self.lambda_ce, rec=self.lambda_rec)

    def lr_schedule(self) -> Schedule:
        return Schedule(lr=self.lr, kind=self.schedule, warmup=self.warmup, lr_min=self.lr_min)

    def codec_spec(self) -> CodecSpec | None:
        """None for ``codec: none`` (today's objective); raises ValueError on a bad codec setting."""
        names = parse_codecs(self.codec)
        if not names:
            return None
        return CodecSpec(
            names, (self.codec_quality_min, self.codec_quality_max), self.codec_clean_weight, self.codec_rate_weight
        )

    def val_codec(self) -> str | None:
        """The codec validation also stores the LR with (the first of ``codec``), or None."""
        names = parse_codecs(self.codec)
        return names[0] if names else None


def build_model(cfg: TrainConfig) -> IRN:
    """A fresh model, optionally warm-started from a checkpoint whose layers fit ours (by name and shape)."""
    torch.manual_seed(cfg.seed)
    model = IRN(cfg.model_config())
    if cfg.init_from:
        with fsspec.open(cfg.init_from, "rb") as f:
            src = checkpoint_from_bytes(f.read(), cfg.init_from).model.state_dict()
        own = model.state_dict()
        fitting = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        if not fitting:
            raise ValueError(f"{cfg.init_from}: no layer fits a {cfg.model_config()}")
        own.update(fitting)
        model.load_state_dict(own)
    return model


def native_bf16(device: torch.device) -> bool:
    """True where bf16 autocast runs natively: CUDA devices with bf16, CPUs whose oneDNN reports bf16
    support (AVX512-BF16 or AMX). Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_step(model, opt, hr, lr_ref, cfg: TrainConfig, it: int, generator=None,
               lr_factor: float = 1.0) -> dict[str, float]:
    """One optimisation step at iteration ``it`` (sets the scheduled learning rate, times ``lr_factor``, first)."""
    set_lr(opt, lr_factor * cfg.lr_schedule().lr_at(it, cfg.iterations))
    model.train()
    opt.zero_grad(set_to_none=True)
    device = hr.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        terms = irn_loss(model, hr, lr_ref, cfg.loss_weights(), cfg.z_scale, generator, cfg.codec_spec())
    loss = terms["loss"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss at iteration {it}: {loss.item()}")
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["grad_norm"] = float(grad_norm)
    out["lr"] = opt.param_groups[0]["lr"]
    return out


def _hwc8(x: torch.Tensor) -> torch.Tensor:
    """(1,3,H,W) in [0, 1] -> (H,W,3) on the 8-bit grid (what a saved image would hold)."""
    return torch.round(x[0].detach().float().cpu().clamp(0, 1) * 255).div(255).permute(1, 2, 0)


def _psnr_y(a: torch.Tensor, b: torch.Tensor, crop: int) -> float:
    """Y-PSNR (paper protocol, irn_batch.metrics.psnr_y) of two (1,3,H,W) images rounded to 8 bits."""
    return psnr_y(_hwc8(a), _hwc8(b), crop)


@torch.inference_mode()
def validate(
    model: IRN,
    images: list[TrainImage],
    temperature: float = 0.0,
    seed: int = 0,
    codec: str | None = None,
    quality: int = 80,
) -> dict[str, float]:
    """Mean Y-PSNR (paper protocol) of the restore, of Bicubic & Bicubic, and of the LR vs the bicubic LR.

    With ``codec`` (jpeg, webp or avif; diffjpeg is validated as jpeg) the 8-bit LR is also stored with that
    real codec at ``quality``: ``lossy_psnr_y`` is the restore from the decoded LR and ``lossy_bpp`` the
    codec's bytes * 8 per HR pixel (whole files, headers included).
    """
    model.eval()
    s = model.scale
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    real = None if codec is None else ("jpeg" if codec == "diffjpeg" else codec)
    rows, lossy = [], []
    for im in images:
        hr = (im.hr.float() / 255.0).unsqueeze(0)
        lr, _ = model.downscale(hr.to(device))
        restored = model.upscale(lr, temperature=temperature, generator=gen).cpu()
        bic_lr = bicubic_downscale(hr, s)
        bic = bicubic_resize(quantize_8bit(bic_lr), tuple(hr.shape[-2:]))  # Bicubic & Bicubic, as evaluate does
        rows.append((_psnr_y(restored, hr, s), _psnr_y(bic, hr, s), _psnr_y(lr.cpu(), im.lr.unsqueeze(0), 0)))
        if real is not None:
            data = encode(to_uint8(lr[0]), real, quality)
            dec = torch.from_numpy(decode(data)).permute(2, 0, 1)[None].float().div(255).to(device)
            restored = model.upscale(dec, temperature=temperature, generator=gen).cpu()
            lossy.append((_psnr_y(restored, hr, s), len(data) * 8 / (hr.shape[-1] * hr.shape[-2])))
    n = len(rows)
    out = {
        "psnr_y": sum(r[0] for r in rows) / n,
        "bicubic_psnr_y": sum(r[1] for r in rows) / n,
        "lr_psnr_y": sum(r[2] for r in rows) / n,
    }
    if lossy:
        out.update(lossy_psnr_y=sum(r[0] for r in lossy) / n, lossy_bpp=sum(r[1] for r in lossy) / n)
    return out


# --- resumable state: one safetensors file with model + optimiser tensors, nothing pickled ---


def state_bytes(model: IRN, opt: torch.optim.Optimizer, it: int, cfg: TrainConfig) -> bytes:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"opt.{k}": v for k, v in optimizer_tensors(opt).items()})
    meta = {"iteration": str(it), "train_config": json.dumps(asdict(cfg), sort_keys=True)}
    return st_save(tensors, metadata=meta)


def load_state_bytes(data: bytes, model: IRN, opt: torch.optim.Optimizer) -> int:
    """Restore model and optimiser from :func:`state_bytes`; returns the iteration to continue from."""
    tensors = st_load(data)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    load_optimizer_tensors(opt, {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")})
    header_len = int.from_bytes(data[:8], "little")
    return int(json.loads(data[8 : 8 + header_len])["__metadata__"]["iteration"])


def export_bytes(model: IRN, cfg: TrainConfig, it: int, extra: dict[str, str] | None = None) -> bytes:
    """The model as an irn_batch checkpoint (what the CLI and pipeline load)."""
    meta = {"trained_iterations": str(it), "train_config": json.dumps(asdict(cfg), sort_keys=True)}
    meta.update(extra or {})
    return checkpoint_bytes(model, cfg.restore_temperature, meta)


def new_optimizer(model: IRN, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the network; the recovery module (if any) in a second group at ``recovery_lr_scale`` x lr."""
    if model.recovery is None:
        return make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    own = {id(p) for p in model.recovery.parameters()}
    body = [p for p in model.parameters() if id(p) not in own]
    groups = [{"params": body}, {"params": list(model.recovery.parameters()), "lr_scale": cfg.recovery_lr_scale}]
    return make_optimizer(groups, cfg.lr, cfg.weight_decay)
