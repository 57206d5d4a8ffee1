"""IRN model: sizes, exact Haar inverse, invertibility, quantizer, z sampling, padding, fast == reference."""
from __future__ import annotations

import pytest
import torch

from irn_batch.model import IRN, IRNConfig
from irn_batch.model.coupling import AffineCoupling, DenseBlock
from irn_batch.model.haar import HaarDownsampling
from irn_batch.model.transforms import crop_to, pad_to_multiple, quantize_8bit, sample_z


def perturbed(scale: int, seed: int = 0, std: float = 0.02) -> IRN:
    """A model whose couplings are not the identity: the zero-initialised conv5 layers get random weights."""
    torch.manual_seed(seed)
    model = IRN(IRNConfig(scale=scale)).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, DenseBlock):
                mod.conv5.weight.normal_(0.0, std)
                mod.conv5.bias.normal_(0.0, std)
    return model


@pytest.mark.parametrize("scale, count", [(2, 1_667_952), (4, 4_355_136), (8, 11_119_248)])
def test_parameter_counts(scale, count):
    model = IRN(IRNConfig(scale=scale))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count


def test_haar_layout_and_exact_inverse():
    haar = HaarDownsampling(3)
    # Values on a coarse dyadic grid: every sum and /4 is exact in float32, so the inverse must be too.
    x = torch.randint(0, 256, (2, 3, 8, 10)).float() / 16.0
    y = haar(x)
    assert y.shape == (2, 12, 4, 5)
    low = x.reshape(2, 3, 4, 2, 5, 2).mean(dim=(3, 5))
    assert torch.equal(y[:, :3], low)  # channels 0..C-1: low-pass of every input channel
    horiz = (x[..., ::2, ::2] - x[..., ::2, 1::2] + x[..., 1::2, ::2] - x[..., 1::2, 1::2]) / 4
    assert torch.equal(y[:, 3:6], horiz)
    assert torch.equal(haar.inverse(y), x)
    r = torch.rand(1, 3, 6, 6)
    assert torch.allclose(haar.inverse(haar(r)), r, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4])
def test_float_path_invertible_with_true_z(scale):
    model = perturbed(scale)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        lr, z = model.downscale(x, quantize=False)
        assert lr.shape == (2, 3, 32 // scale, 48 // scale)
        assert z.shape == (2, 3 * (scale**2 - 1), 32 // scale, 48 // scale)
        assert (lr - torch.nn.functional.avg_pool2d(x, scale)).abs().max() > 1e-3  # couplings are active
        back = model.upscale(lr, z)
    assert (back - x).abs().max().item() < 1e-5


def test_quantizer_grid_and_straight_through_gradient():
    x = torch.tensor([-0.2, 0.0, 0.3, 0.50196, 1.4], requires_grad=True)
    q = quantize_8bit(x)
    assert torch.equal(q * 255, torch.round(q * 255))
    assert q.min() >= 0 and q.max() <= 1
    (q * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(5.0))
    lr, _ = perturbed(2).downscale(torch.rand(1, 3, 8, 8))
    assert torch.equal(lr * 255, torch.round(lr * 255))


def test_z_sampling_seeded_and_zero_at_temperature_0():
    model = perturbed(2)
    lr = quantize_8bit(torch.rand(1, 3, 6, 6))
    with torch.no_grad():
        a = model.upscale(lr, generator=torch.Generator().manual_seed(7))
        b = model.upscale(lr, generator=torch.Generator().manual_seed(7))
        c = model.upscale(lr, generator=torch.Generator().manual_seed(8))
        cold = model.upscale(lr, temperature=0.0)
        zero = model.upscale(lr, torch.zeros(model.z_shape(lr)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(cold, zero)
    assert torch.equal(sample_z((1, 9, 4, 4), 0.0), torch.zeros(1, 9, 4, 4))
    assert torch.equal(sample_z((1, 9, 4, 4), 0.5, seed=3), sample_z((1, 9, 4, 4), 0.5, seed=3))
    assert abs(sample_z((1, 9, 64, 64), 0.5, seed=3).std().item() - 0.5) < 0.02


@pytest.mark.parametrize("h, w, m", [(7, 5, 2), (13, 9, 4), (3, 2, 8), (16, 16, 4)])
def test_pad_crop_round_trip(h, w, m):
    x = torch.rand(1, 3, h, w)
    p = pad_to_multiple(x, m)
    assert p.shape[-2] % m == 0 and p.shape[-1] % m == 0
    assert p.shape[-2] - h < m and p.shape[-1] - w < m
    assert torch.equal(p[..., :h, :w], x)
    assert torch.equal(crop_to(p, h, w), x)


def test_buffered_dense_block_equals_reference():
    torch.manual_seed(1)
    block = DenseBlock(9, 3)
    torch.nn.init.normal_(block.conv5.weight, std=0.05)
    x = torch.randn(2, 9, 11, 13)
    with torch.no_grad():
        ref = block.forward_reference(x)
        fast = block.forward_buffered(x)
        routed = block(x)  # no autograd -> the buffered path
    assert torch.allclose(fast, ref, atol=1e-6)
    assert torch.equal(routed, fast)
    assert fast.is_contiguous()
    # With autograd on, the reference path runs and gradients flow.
    block(x.requires_grad_()).sum().backward()
    assert x.grad is not None and block.conv1.weight.grad is not None


@pytest.mark.parametrize("scale", [2, 4])
def test_fast_model_equals_reference_model(scale):
    model = perturbed(scale, seed=3)
    x = torch.rand(1, 3, 24, 40)
    ref = model(x)  # grad mode on: reference dense blocks
    with torch.inference_mode():
        fast = model(x)
        inv_fast = model.inverse(fast)
    inv_ref = model.inverse(ref.detach())
    assert torch.allclose(fast, ref.detach(), atol=1e-6)
    assert torch.allclose(inv_fast, inv_ref.detach(), atol=1e-6)


def test_bf16_autocast_keeps_haar_and_coupling_in_fp32():
    model = perturbed(2, seed=4)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            haar = model.layers[0](x)
            out = model(x)
            coupled = model.layers[1](haar)
    assert haar.dtype == torch.float32 and torch.equal(haar, model.layers[0](x))
    assert out.dtype == torch.float32 and coupled.dtype == torch.float32
    err = (out[:, :3] - ref[:, :3]).abs().max().item()
    assert 0 < err < 0.5 / 255  # bf16 convs change the LR by well under half an 8-bit step


def test_coupling_inverse_exact_in_float64():
    torch.manual_seed(5)
    block = AffineCoupling(12).double()
    for sub in (block.F, block.G, block.H):
        torch.nn.init.normal_(sub.conv5.weight, std=0.1)
    x = torch.randn(1, 12, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(block.inverse(block(x)), x, atol=1e-12)
