"""The LR-recovery module: identity at birth, part of the model and its checkpoint, trained and tiled."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_irn
from irn_batch.model.checkpoint import checkpoint_bytes, checkpoint_from_bytes
from irn_batch.model import IRN, IRNConfig
from irn_batch.model.recovery import LRRecovery
from irn_batch.rescale.tiling import upscale_tiled
from irn_batch.model.transforms import sample_z
from training.data import bicubic_downscale
from training.loop import TrainConfig, new_optimizer, train_step


def with_recovery(seed: int = 0, width: int = 8, layers: int = 3, std: float = 0.05) -> IRN:
    """random_irn's couplings plus a recovery module whose last conv is perturbed (not the identity)."""
    plain = random_irn(2, seed=seed)
    model = IRN(IRNConfig(scale=2, blocks=2, growth=8, recovery_width=width, recovery_layers=layers))
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("recovery.") for k in missing)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        last = model.recovery.convs[-1]
        last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * std)
    return model.eval().requires_grad_(False)


def test_a_new_module_is_the_identity_and_has_the_documented_size():
    rec = LRRecovery(3, width=48, layers=5)
    x = torch.rand(2, 3, 17, 9)
    assert torch.equal(rec(x), x)
    assert sum(p.numel() for p in rec.parameters()) == 9 * (3 * 48 * 2 + 48 * 48 * 3) + 48 * 4 + 3
    with pytest.raises(ValueError, match="layers >= 2"):
        LRRecovery(3, width=8, layers=1)
    with pytest.raises(ValueError, match="recovery_width"):
        IRNConfig(recovery_width=-1)


def test_upscale_goes_through_the_module_and_a_fresh_one_changes_nothing():
    plain = random_irn(2, seed=3)
    fresh = IRN(IRNConfig(scale=2, blocks=2, growth=8, recovery_width=8, recovery_layers=3)).eval()
    fresh.load_state_dict(plain.state_dict(), strict=False)
    lr = torch.rand(1, 3, 12, 10)
    z = sample_z(plain.z_shape(lr), 1.0, seed=1)
    with torch.no_grad():
        assert torch.equal(fresh.upscale(lr, z), plain.upscale(lr, z))
        trained = with_recovery(seed=3)
        expected = plain.upscale(trained.recovery(lr), z)
        assert torch.allclose(trained.upscale(lr, z), expected, atol=1e-6)
        assert not torch.allclose(trained.upscale(lr, z), plain.upscale(lr, z), atol=1e-4)


def test_checkpoint_carries_the_module_and_plain_configs_read_as_before():
    model = with_recovery(seed=4)
    ckpt = checkpoint_from_bytes(checkpoint_bytes(model), "mem")
    assert ckpt.model.config == model.config and ckpt.model.recovery is not None
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[k], v)
    config = json.loads(ckpt.metadata["config"])
    assert config["recovery_width"] == 8 and config["recovery_layers"] == 3
    plain = json.loads(checkpoint_from_bytes(checkpoint_bytes(random_irn(2)), "mem").metadata["config"])
    assert set(plain) == {"scale", "blocks", "growth", "clamp", "channels"}  # what older readers know


def test_tiled_restore_with_the_module_matches_the_whole_image():
    model = with_recovery(seed=5)
    lr = torch.rand(1, 3, 40, 52)
    z = sample_z(model.z_shape(lr), 1.0, seed=2)
    with torch.no_grad():
        whole = model.upscale(lr, z)
        tiled = upscale_tiled(model, lr, z, tile=48, overlap=16)
    assert (tiled - whole).abs().max().item() < 1e-4


def test_training_reaches_the_module_at_its_own_lr_and_lowers_the_loss():
    torch.manual_seed(0)
    cfg = TrainConfig(scale=2, blocks=2, growth=8, batch=4, patch=32, iterations=20, lr=1e-3, schedule="constant",
                      z_scale=0.0, codec="jpeg", codec_quality_min=50, codec_quality_max=70, recovery_width=8,
                      recovery_layers=3, recovery_lr_scale=3.0)
    model = IRN(cfg.model_config())
    model.load_state_dict(random_irn(2, seed=6).state_dict(), strict=False)
    model.requires_grad_(True)
    opt = new_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(7)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    hr = torch.stack([0.5 + 0.4 * torch.sin(0.2 * (i + 1) * x + 0.3 * y).expand(3, 32, 32) for i in range(4)])
    ref = bicubic_downscale(hr, 2)
    before = model.recovery.convs[-1].weight.detach().clone()
    losses = [train_step(model, opt, hr, ref, cfg, it, gen)["loss"] for it in range(cfg.iterations)]
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-3), pytest.approx(3e-3)]
    assert not torch.equal(model.recovery.convs[-1].weight, before)  # gradients reach the module
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses


def test_resume_restores_both_parameter_groups():
    from training.loop import load_state_bytes, state_bytes

    cfg = TrainConfig(scale=2, blocks=1, growth=4, batch=2, patch=16, iterations=3, lr=1e-3, schedule="constant",
                      z_scale=0.0, codec="jpeg", recovery_width=4, recovery_layers=2, recovery_lr_scale=5.0)
    model = IRN(cfg.model_config())
    opt = new_optimizer(model, cfg)
    hr = torch.rand(2, 3, 16, 16)
    for it in range(2):
        train_step(model, opt, hr, bicubic_downscale(hr, 2), cfg, it, torch.Generator().manual_seed(it))
    data = state_bytes(model, opt, 2, cfg)
    fresh = IRN(cfg.model_config())
    fresh_opt = new_optimizer(fresh, cfg)
    assert load_state_bytes(data, fresh, fresh_opt) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    for p, q in zip(model.recovery.parameters(), fresh.recovery.parameters()):
        assert torch.equal(opt.state[p]["exp_avg"], fresh_opt.state[q]["exp_avg"])
    assert [g.get("lr_scale", 1.0) for g in fresh_opt.param_groups] == [1.0, 5.0]
