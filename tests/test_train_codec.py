"""The codec in the training loop (training/codec.py): real codecs with a straight-through gradient equal
Pillow's own encode/decode, the kornia path equals kornia's function, gradients cross the layer, the rate
proxy follows real JPEG sizes, and a short training run with the codec on lowers the loss."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from omegaconf import OmegaConf
from PIL import Image

from conftest import random_irn
from irn_batch.model.transforms import quantize_8bit
from training.codec import CodecSpec, apply_codec, diff_jpeg, jpeg_rate_proxy, jpeg_tables, parse_codecs, real_codec
from training.config import ConfigError, load_job_config
from training.data import TrainImage, bicubic_downscale
from training.losses import LossWeights, irn_loss, reconstruction_loss
from training.loop import TrainConfig, new_optimizer, train_step, validate
from training.report import training_report


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1] on the 8-bit grid: upsampled noise, photo-like enough for a codec."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.03 * torch.randn(x.shape, generator=g)
    return torch.round(x.clamp(0, 1) * 255) / 255


def _pillow_roundtrip(x: torch.Tensor, fmt: str, quality: int, **kwargs) -> np.ndarray:
    """What Pillow decodes after encoding the (3, h, w) 8-bit image ``x`` as ``fmt``: (h, w, 3) uint8."""
    arr = torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=quality, **kwargs)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize(
    "codec, fmt, kwargs",
    [("jpeg", "JPEG", {"subsampling": 2}), ("webp", "WEBP", {}), ("avif", "AVIF", {})],
)
def test_real_codec_forward_is_pillows_decoded_output(codec, fmt, kwargs):
    x = _smooth_images(3, 32, seed=0)
    quality = torch.tensor([55, 75, 95])
    out = real_codec(x, [codec] * 3, quality)
    assert out.shape == x.shape and out.dtype == torch.float32
    for i, q in enumerate(quality.tolist()):
        expected = _pillow_roundtrip(x[i], fmt, q, **kwargs)
        got = torch.round(out[i] * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(got, expected), (codec, q)
        assert torch.equal(out[i], torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255)
    assert not torch.equal(out, x)  # a lossy codec at these qualities changes the image


def test_real_codec_gradient_is_the_identity():
    x = _smooth_images(2, 16, seed=1).requires_grad_(True)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    (real_codec(x, ["jpeg", "webp"], torch.tensor([60, 90])) * w).sum().backward()
    assert torch.equal(x.grad, w)


def test_diffjpeg_path_is_kornias_function_and_mixed_batches_route_each_sample():
    x = _smooth_images(4, 32, seed=3).requires_grad_(True)
    quality = torch.tensor([50, 70, 85, 95])
    out = apply_codec(x, ["diffjpeg"] * 4, quality)
    assert torch.equal(out, jpeg_codec_differentiable(x, quality.float()))
    out.sum().backward()
    assert x.grad.abs().sum() > 0 and not torch.equal(x.grad, torch.ones_like(x))  # kornia's own gradient

    mixed = apply_codec(x, ["jpeg", "diffjpeg", "webp", "diffjpeg"], quality)
    assert torch.equal(mixed[0], real_codec(x[:1], ["jpeg"], quality[:1])[0])
    assert torch.equal(mixed[2], real_codec(x[2:3], ["webp"], quality[2:3])[0])
    assert torch.equal(mixed[[1, 3]], diff_jpeg(x[[1, 3]], quality[[1, 3]]))  # one kornia call, as batched


def test_draw_is_seeded_uniform_and_inclusive():
    spec = CodecSpec(("jpeg", "webp"), quality=(70, 72))
    names_a, q_a = spec.draw(600, torch.Generator().manual_seed(5))
    names_b, q_b = spec.draw(600, torch.Generator().manual_seed(5))
    assert names_a == names_b and torch.equal(q_a, q_b)
    assert set(q_a.tolist()) == {70, 71, 72}
    assert set(names_a) == {"jpeg", "webp"}
    assert CodecSpec(("jpeg",), quality=(80, 80)).draw(5, None)[1].tolist() == [80] * 5


def test_codec_settings_are_checked():
    assert parse_codecs("none") == ()
    assert parse_codecs("jpeg+diffjpeg") == ("jpeg", "diffjpeg")
    with pytest.raises(ValueError, match="unknown codec 'png'"):
        parse_codecs("jpeg+png")
    with pytest.raises(ValueError, match="quality range 90..80"):
        CodecSpec(("jpeg",), quality=(90, 80))
    assert TrainConfig().codec_spec() is None  # today's recipes: no codec
    with pytest.raises(ConfigError, match="train.codec: unknown codec 'jpg'"):
        load_job_config(None, ["data.train=x", "train.codec=jpg"])
    with pytest.raises(ConfigError):
        load_job_config(None, ["data.train=x", "train.codec_quality_min=abc"])


@pytest.mark.parametrize("recipe, codecs", [("cpu_x2_lossy", ("jpeg", "webp", "avif")), ("cpu_x4_lossy", ("jpeg", "webp"))])
def test_lossy_recipes_load_with_their_codec(recipe, codecs):
    raw = OmegaConf.load(f"configs/train/{recipe}.yaml")
    raw.pop("run")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), raw))
    spec = cfg.codec_spec()
    assert spec.codecs == codecs and spec.quality == (50, 95)
    assert spec.clean_weight > 0 and spec.rate_weight > 0
    assert f"irn_x{cfg.scale}.safetensors" in cfg.init_from


def test_local_run_with_a_codec_resumes_and_keeps_the_best_lossy_restore(tmp_path):
    """training.local: a codec run writes model/best/state, resumes where it stopped, and its best.json is
    the best restore from the codec-stored LR (what such a run trains for), not the lossless one."""
    from irn_batch.model.checkpoint import load_checkpoint
    from training.local import run_local

    data = tmp_path / "data"
    data.mkdir()
    for i, img in enumerate(_smooth_images(3, 64, seed=21)):
        Image.fromarray((img * 255).round().byte().permute(1, 2, 0).numpy()).save(data / f"{i}.png")
    cfg = TrainConfig(scale=2, blocks=1, growth=8, batch=2, patch=32, iterations=4, lr=1e-3, schedule="constant",
                      z_scale=0.0, val_crop=32, codec="jpeg", codec_quality_min=60, codec_quality_max=90)
    out = tmp_path / "run"
    run_local(cfg, str(data), str(data), out, val_every=2, ckpt_every=2)
    vals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert [v["iteration"] for v in vals] == [2, 4]
    best = json.loads((out / "best.json").read_text())
    assert best["lossy_psnr_y"] == max(v["lossy_psnr_y"] for v in vals)
    assert load_checkpoint(out / "best.safetensors").metadata["val_lossy_psnr_y"] == f"{best['lossy_psnr_y']:.3f}"
    cfg.iterations = 6
    run_local(cfg, str(data), str(data), out, val_every=2, ckpt_every=2)
    vals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert [v["iteration"] for v in vals] == [2, 4, 6]  # resumed at 4, not restarted
    assert load_checkpoint(out / "model.safetensors").metadata["trained_iterations"] == "6"


# --- rate proxy ---


def test_jpeg_tables_are_libjpegs():
    y50, c50 = jpeg_tables(50)
    assert y50[:8] == (16, 11, 10, 16, 24, 40, 51, 61)  # ITU T.81 Annex K, table K.1, first row
    assert c50[:8] == (17, 18, 24, 47, 99, 99, 99, 99)  # table K.2
    assert all(v == 1 for v in jpeg_tables(100)[0])


def test_rate_proxy_is_zero_for_mid_grey_and_follows_real_jpeg_sizes():
    grey = torch.full((1, 3, 32, 32), 128 / 255)
    assert jpeg_rate_proxy(grey, torch.tensor([75])).item() == pytest.approx(0.0, abs=1e-3)

    # Smooth -> textured images at several qualities: the proxy must rank them as Pillow's JPEG sizes do.
    g = torch.Generator().manual_seed(7)
    images = [_smooth_images(1, 64, seed=s)[0] for s in range(3)]
    images.append(torch.round(torch.rand(3, 64, 64, generator=g) * 255) / 255)  # noise: the most bits
    est, real = [], []
    for x in images:
        for q in (50, 75, 95):
            est.append(jpeg_rate_proxy(x[None], torch.tensor([q])).item())
            buf = io.BytesIO()
            arr = torch.round(x * 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(arr).save(buf, format="JPEG", quality=q, subsampling=2)
            real.append(len(buf.getvalue()))
    rank_est, rank_real = np.argsort(np.argsort(est)), np.argsort(np.argsort(real))
    assert np.corrcoef(rank_est, rank_real)[0, 1] > 0.9
    # and higher quality costs more bits for every image
    for i in range(len(images)):
        assert est[3 * i] < est[3 * i + 1] < est[3 * i + 2]


def test_rate_proxy_gradient_reaches_the_lr():
    x = _smooth_images(2, 32, seed=8).requires_grad_(True)
    jpeg_rate_proxy(x, torch.tensor([60, 90])).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- the objective and the loop ---


def _trainable(scale: int = 2, seed: int = 0):
    return random_irn(scale, blocks=2, growth=8, seed=seed).train().requires_grad_(True)


@pytest.mark.parametrize("codec", ["jpeg", "diffjpeg"])
def test_gradient_reaches_the_first_coupling_through_the_codec(codec):
    """The restore-from-decoded-LR term alone: its gradient on the first coupling's weights includes a part
    that crosses the codec (the forward pass -> LR -> codec -> inverse); detaching the codec's input
    removes exactly that part."""
    hr = _smooth_images(2, 32, seed=9)
    quality = torch.tensor([60, 85])

    def first_coupling_grad(detach: bool) -> torch.Tensor:
        model = _trainable()
        out = model(hr)
        lr8 = quantize_8bit(out[:, :3])
        decoded = apply_codec(lr8.detach() if detach else lr8, [codec] * 2, quality)
        restored = model.inverse(torch.cat((decoded, torch.zeros_like(out[:, 3:])), 1))
        reconstruction_loss(hr, restored).backward()
        return model.layers[1].F.conv1.weight.grad.clone()

    through, blocked = first_coupling_grad(False), first_coupling_grad(True)
    assert through.abs().sum() > 0
    assert (through - blocked).abs().sum() > 0.01 * through.abs().sum()


def test_codec_loss_terms():
    model = _trainable()
    hr = _smooth_images(2, 32, seed=10)
    ref = bicubic_downscale(hr, 2)
    spec = CodecSpec(("jpeg",), quality=(80, 80), clean_weight=0.5, rate_weight=0.01)
    terms = irn_loss(model, hr, ref, LossWeights.paper(2), 0.0, torch.Generator().manual_seed(0), spec)
    # recomputed by hand from the same pieces
    out = model(hr)
    lr8 = quantize_8bit(out[:, :3])
    zeros = torch.zeros_like(out[:, 3:])
    dec = real_codec(lr8, ["jpeg"] * 2, torch.tensor([80, 80]))
    rec = reconstruction_loss(hr, model.inverse(torch.cat((dec, zeros), 1)))
    clean = 0.5 * reconstruction_loss(hr, model.inverse(torch.cat((lr8, zeros), 1)))
    bits = jpeg_rate_proxy(lr8, torch.tensor([80, 80])).mean()
    assert terms["rec"].item() == pytest.approx(rec.item(), rel=1e-4)
    assert terms["rec_clean"].item() == pytest.approx(clean.item(), rel=1e-4)
    assert terms["bits"].item() == pytest.approx(bits.item(), rel=1e-5)
    assert terms["rate"].item() == pytest.approx(0.01 * bits.item(), rel=1e-5)
    total = terms["fit"] + terms["ce"] + terms["rec"] + terms["rec_clean"] + terms["rate"]
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    assert terms["quality"].item() == 80


@pytest.mark.parametrize("codec", ["jpeg", "diffjpeg"])
def test_short_training_run_with_the_codec_lowers_the_loss(codec):
    torch.manual_seed(0)
    cfg = TrainConfig(
        scale=2, blocks=2, growth=8, batch=4, patch=32, iterations=20, lr=2e-3, schedule="constant",
        z_scale=0.0, codec=codec, codec_quality_min=70, codec_quality_max=95, codec_clean_weight=0.5,
        codec_rate_weight=0.001,
    )
    model = _trainable(seed=1)
    opt = new_optimizer(model, cfg)
    hr = _smooth_images(4, 32, seed=11)
    ref = bicubic_downscale(hr, 2)
    gen = torch.Generator().manual_seed(12)
    losses = [train_step(model, opt, hr, ref, cfg, it, gen)["loss"] for it in range(cfg.iterations)]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.85 * first, losses


def test_validate_reports_the_restore_from_a_real_codec_and_its_bytes():
    model = random_irn(2, blocks=2, growth=8, seed=2)
    hr8 = torch.round(_smooth_images(1, 48, seed=13)[0] * 255).to(torch.uint8)
    images = [TrainImage(hr8, bicubic_downscale(hr8[None].float() / 255, 2)[0])]
    plain = validate(model, images)
    lossy = validate(model, images, codec="jpeg", quality=60)
    assert set(plain) == {"psnr_y", "bicubic_psnr_y", "lr_psnr_y"}
    assert lossy["psnr_y"] == plain["psnr_y"]
    lr, _ = model.downscale(hr8[None].float() / 255)
    buf = io.BytesIO()
    arr = torch.round(lr[0] * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(buf, format="JPEG", quality=60, subsampling=2)
    assert lossy["lossy_bpp"] == pytest.approx(len(buf.getvalue()) * 8 / (48 * 48))
    assert lossy["lossy_psnr_y"] < lossy["psnr_y"]


def test_training_report_draws_the_lossy_restore_and_the_rate():
    history = [{"kind": "train", "iteration": i, "loss": 10.0 / i} for i in range(1, 4)]
    history += [
        {"kind": "val", "iteration": i, "psnr_y": 30.0, "bicubic_psnr_y": 28.0, "lr_psnr_y": 40.0,
         "lossy_psnr_y": 27.0 + i, "lossy_bpp": 0.2 - 0.01 * i}
        for i in (1, 3)
    ]
    files = training_report(history)
    assert "rate_curve.png" in files
    assert "rate_curve.png" not in training_report(history[:3])  # no codec, no rate curve
    with Image.open(io.BytesIO(files["rate_curve.png"])) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
        assert im.format == "PNG" and (rgb[..., 0] != rgb[..., 1]).any()
    assert "lossy_bpp" in files["metrics.csv"].decode().splitlines()[0]
    summary = json.loads(files["metrics.json"])["summary"]  # best = the lossy restore, as training.local keeps
    assert summary["best_iteration"] == 3 and summary["best_lossy_psnr_y"] == 30.0


@pytest.mark.parametrize("scale", [2, 4])
def test_packaged_lossy_weights_load_with_their_config_and_recipe(scale):
    from importlib import resources

    from irn_batch.model.checkpoint import load_checkpoint

    weights = resources.files("irn_batch") / "weights"
    ckpt = load_checkpoint(weights / f"irn_x{scale}_lossy.safetensors")
    assert ckpt.model.config.scale == scale and ckpt.default_temperature == 0.0
    assert ckpt.model_id.startswith(f"irn-x{scale}-")
    recipe = json.loads(ckpt.metadata["train_config"])
    assert recipe["scale"] == scale and recipe["codec"] != "none" and recipe["codec_rate_weight"] > 0
    assert ckpt.model_id != load_checkpoint(weights / f"irn_x{scale}.safetensors").model_id
