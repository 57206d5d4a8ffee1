"""The IRN objective term by term against hand-computed values, the schedules, and one optimisation step."""
from __future__ import annotations

import math

import pytest
import torch

from irn_batch.model import IRN, IRNConfig
from irn_batch.model.transforms import quantize_8bit
from training.losses import LossWeights, fit_loss, irn_loss, latent_loss, reconstruction_loss
from training.loop import TrainConfig, build_model, load_state_bytes, new_optimizer, state_bytes, train_step
from training.optim import Schedule


def test_fit_loss_is_batch_mean_of_per_sample_squared_error_sums():
    y = torch.zeros(2, 3, 2, 2)
    ref = torch.stack([torch.full((3, 2, 2), 0.5), torch.full((3, 2, 2), 0.1)])
    # sample 0: 12 * 0.25 = 3; sample 1: 12 * 0.01 = 0.12 -> mean 1.56
    assert fit_loss(y, ref).item() == pytest.approx(1.56, rel=1e-6)


def test_latent_loss_is_sum_of_squares_over_batch():
    z = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]], [[[0.5, 0.0], [0.0, 0.0]]]])  # (2, 1, 2, 2)
    assert latent_loss(z).item() == pytest.approx((1 + 4 + 9 + 0.25) / 2)


def test_reconstruction_loss_is_charbonnier_sum_per_sample():
    hr = torch.zeros(2, 3, 2, 2)
    restored = hr.clone()
    restored[0] += 0.3  # sample 0: 12 * sqrt(0.09 + 1e-6); sample 1: 12 * sqrt(1e-6)
    expected = (12 * math.sqrt(0.09 + 1e-6) + 12 * 1e-3) / 2
    assert reconstruction_loss(hr, restored).item() == pytest.approx(expected, rel=1e-5)


def test_paper_weights():
    assert LossWeights.paper(2) == LossWeights(fit=4.0, ce=1.0, rec=1.0)
    assert TrainConfig(scale=4).loss_weights().fit == 16.0
    assert TrainConfig(scale=8).loss_weights().fit == 64.0


def _tiny_model(seed: int = 0) -> IRN:
    torch.manual_seed(seed)
    model = IRN(IRNConfig(scale=2, blocks=1, growth=8))
    with torch.no_grad():  # leave the identity initialisation so every term is non-trivial
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def test_irn_loss_matches_terms_computed_by_hand():
    model = _tiny_model()
    hr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    w = LossWeights(fit=4.0, ce=0.5, rec=2.0)
    terms = irn_loss(model, hr, ref, w, z_scale=1.0, generator=torch.Generator().manual_seed(3))
    out = model(hr)
    y, z = out[:, :3], out[:, 3:]
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))  # a fresh draw, not the forward z
    restored = model.inverse(torch.cat((quantize_8bit(y), eps), 1))
    fit = 4.0 * ((y - ref) ** 2).sum((1, 2, 3)).mean()
    ce = 0.5 * (z**2).sum() / 2
    rec = 2.0 * torch.sqrt((hr - restored) ** 2 + 1e-6).sum((1, 2, 3)).mean()
    for name, value in (("fit", fit), ("ce", ce), ("rec", rec), ("loss", fit + ce + rec)):
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5), name


def test_z_scale_zero_restores_with_z_zero():
    model = _tiny_model()
    hr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = torch.rand(1, 3, 4, 4)
    terms = irn_loss(model, hr, ref, LossWeights.paper(2), z_scale=0.0)
    y = model(hr)[:, :3]
    restored = model.inverse(torch.cat((quantize_8bit(y), torch.zeros(1, 9, 4, 4)), 1))
    assert terms["rec"].item() == pytest.approx(reconstruction_loss(hr, restored).item(), rel=1e-6)


def test_schedules():
    multi = Schedule(lr=2e-4, kind="multistep")
    assert [multi.lr_at(i, 100) for i in (0, 19, 20, 40, 60, 80, 99)] == pytest.approx(
        [2e-4, 2e-4, 1e-4, 5e-5, 2.5e-5, 1.25e-5, 1.25e-5]
    )
    cos = Schedule(lr=2e-4, kind="cosine", warmup=10, lr_min=2e-5)
    assert cos.lr_at(0, 110) == pytest.approx(2e-5)  # warm-up from lr/10 at step 0
    assert cos.lr_at(9, 110) == pytest.approx(2e-4)
    assert cos.lr_at(110, 110) == pytest.approx(2e-5)
    with pytest.raises(ValueError):
        Schedule(kind="nope").lr_at(0, 10)


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    cfg = TrainConfig(blocks=1, growth=8, batch=2, patch=16, iterations=10, schedule="constant", lr=2e-4, z_scale=0.0)
    model = build_model(cfg)
    opt = new_optimizer(model, cfg)
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.interpolate(hr, size=(8, 8), mode="bicubic", antialias=True).clamp(0, 1)
    before = train_step(model, opt, hr, ref, cfg, 0)["loss"]
    with torch.no_grad():
        after = irn_loss(model, hr, ref, cfg.loss_weights(), 0.0)["loss"].item()
    assert after < before


def test_state_round_trip_keeps_model_optimizer_and_iteration():
    cfg = TrainConfig(blocks=1, growth=8, batch=1, patch=16, iterations=5)
    model = build_model(cfg)
    opt = new_optimizer(model, cfg)
    hr = torch.rand(1, 3, 16, 16)
    train_step(model, opt, hr, torch.rand(1, 3, 8, 8), cfg, 0)
    data = state_bytes(model, opt, 7, cfg)
    model2 = build_model(TrainConfig(blocks=1, growth=8, seed=5))
    opt2 = new_optimizer(model2, cfg)
    assert load_state_bytes(data, model2, opt2) == 7
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert torch.equal(s1[0]["exp_avg_sq"], s2[0]["exp_avg_sq"])
