"""LR containers (irn_batch.io.container): metadata round trips, pixels, alpha rule, output encodings."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from irn_batch.io.container import LR_CONTAINERS, ContainerError, Encoding, avif_available, container_of, encode, encoding_for_path
from irn_batch.io.lr_file import LRMeta, read_lr, read_lr_meta, write_lr
from irn_batch.io.decode import ImageError, decode_image
from irn_batch.rescale import downscale_image, restore_image

RNG = np.random.default_rng(7)
LOSSY = [Encoding("webp", 80), Encoding("jpeg", 85, "4:2:0"), Encoding("jpeg", 85, "4:4:4"),
         pytest.param(Encoding("avif", 70), marks=pytest.mark.skipif(not avif_available(), reason="no AVIF"))]
EVERY_LR = [Encoding("png"), Encoding("webp", 100), *LOSSY]


def smooth(h: int, w: int, c: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [128 + 100 * np.sin(x / (5 + k) + y / (7 + 2 * k)) for k in range(c)]
    return np.clip(np.stack(planes, -1), 0, 255).round().astype(np.uint8)


def meta_for(pixels: np.ndarray, **kw) -> LRMeta:
    h, w = pixels.shape[:2]
    values = dict(model_id="irn-x2-0123456789abcdef", scale=2, width=2 * w, height=2 * h, z_seed=2**62 + 3,
                  has_alpha=pixels.shape[2] == 4, source_mode="RGBA" if pixels.shape[2] == 4 else "RGB")
    values.update(kw)
    return LRMeta(**values)


@pytest.mark.parametrize("enc", EVERY_LR, ids=lambda e: e.label)
def test_metadata_round_trip_in_every_container(enc):
    px = smooth(24, 32)
    meta = meta_for(px, source_mode='I;16 "quoted" & <odd>')  # escaping survives XMP
    data = write_lr(px, meta, enc)
    assert container_of(data) == enc.container
    assert read_lr_meta(data) == meta
    got, img = read_lr(data)
    assert got == meta and (img.width, img.height) == (32, 24) and img.alpha is None
    err = np.abs(img.rgb * 255 - px.astype(np.float32)).max()
    assert err < 0.5 if enc.lossless else err < 80  # lossless is exact; lossy is close


@pytest.mark.parametrize("enc", [Encoding("png"), Encoding("webp", 90), Encoding("webp", 100),
                                 pytest.param(Encoding("avif", 90), marks=pytest.mark.skipif(
                                     not avif_available(), reason="no AVIF"))], ids=lambda e: e.label)
def test_alpha_travels_in_containers_that_hold_it(enc):
    px = np.dstack([smooth(16, 16), np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))])
    meta, img = read_lr(write_lr(px, meta_for(px), enc))
    assert meta.has_alpha and meta.alpha_rule == "bicubic" and img.alpha is not None
    assert np.abs(img.alpha * 255 - px[..., 3]).max() < (0.5 if enc.lossless else 24)


def test_jpeg_refuses_alpha_and_the_naming_rule_picks_webp():
    px = np.dstack([smooth(8, 8), np.full((8, 8), 9, np.uint8)])
    with pytest.raises(ContainerError, match="JPEG cannot store the alpha"):
        write_lr(px, meta_for(px), Encoding("jpeg", 90))
    enc = Encoding("jpeg", 77).for_alpha(True)
    assert enc == Encoding("webp", 77) and Encoding("jpeg", 77).for_alpha(False).container == "jpeg"
    assert read_lr_meta(write_lr(px, meta_for(px), enc)).has_alpha


def test_encoding_rules_and_refusals():
    assert Encoding("jpg").container == "jpeg" and Encoding("PNG").label == "png"
    assert Encoding("webp", 100).lossless and not Encoding("webp", 99).lossless
    assert Encoding("png", 5).quality == 100  # quality has no meaning for a lossless container
    assert Encoding("jpeg", 80, "4:4:4").label == "jpeg 4:4:4 q80"
    for bad in (dict(container="bmp"), dict(container="jpeg", quality=0), dict(container="jpeg", quality=101),
                dict(container="jpeg", subsampling="4:1:1")):
        with pytest.raises(ContainerError):
            Encoding(**bad)
    assert encoding_for_path("a/b.JPEG", 70).label == "jpeg 4:2:0 q70"
    assert encoding_for_path("x.tif").container == "tiff"
    for name in ("x.bmp", "x.gif", "noext"):
        with pytest.raises(ContainerError, match="suffix"):
            encoding_for_path(name)
    with pytest.raises(ContainerError, match="not an LR container"):
        write_lr(smooth(4, 4), meta_for(smooth(4, 4)), Encoding("tiff"))
    with pytest.raises(ValueError, match="uint8"):
        encode(smooth(4, 4).astype(np.float32), Encoding("png"))


@pytest.mark.parametrize("container", ["png", "webp", "jpeg", "avif", "tiff"])
def test_output_bytes_match_the_container(container):
    if container == "avif" and not avif_available():
        pytest.skip("no AVIF")
    data = encode(smooth(20, 12), Encoding(container))
    assert container_of(data) == container
    assert Image.open(io.BytesIO(data)).format == {"jpeg": "JPEG", "tiff": "TIFF"}.get(container, container.upper())
    assert decode_image(data).width == 12


def test_files_without_our_metadata_are_refused():
    px = smooth(8, 8)
    for enc in (Encoding("png"), Encoding("webp", 80), Encoding("jpeg", 80)):
        with pytest.raises(ImageError, match="not an irn_batch LR image"):
            read_lr_meta(encode(px, enc))
    with pytest.raises(ImageError, match="not an irn_batch LR image"):
        read_lr_meta(b"GIF89a" + bytes(20))
    good = write_lr(px, meta_for(px), Encoding("webp", 80))
    with pytest.raises(ImageError):
        read_lr(good[: len(good) // 2])
    # an XMP packet of another namespace that happens to use our attribute names is not ours
    foreign = encode(px, Encoding("webp", 80), xmp=b'<x irnb:format="irn_batch-lr/2" irnb:model_id="m"/>')
    with pytest.raises(ImageError, match="not an irn_batch LR image"):
        read_lr_meta(foreign)


def test_version_1_png_lrs_still_read():
    px = smooth(6, 6)
    text = {k: v for k, v in meta_for(px).to_text().items() if not k.endswith("alpha_rule")}
    text["irn_batch:format"] = "irn_batch-lr/1"
    assert read_lr_meta(encode(px, text=text)) == meta_for(px)


@pytest.mark.parametrize("enc", EVERY_LR, ids=lambda e: e.label)
def test_model_refusal_and_restore_in_every_container(enc, tiny_ckpt, other_ckpt_path):
    from irn_batch.model.checkpoint import load_checkpoint

    hr = decode_image(encode(smooth(30, 22)))
    lr, meta = downscale_image(tiny_ckpt, hr, z_seed=4, encoding=enc)
    assert container_of(lr) == enc.container and read_lr_meta(lr) == meta
    out = restore_image(tiny_ckpt, lr)
    assert out.shape == (30, 22, 3)
    with pytest.raises(ImageError, match="made by model"):
        restore_image(load_checkpoint(other_ckpt_path), lr)


def test_lr_suffixes_cover_the_lr_containers():
    from irn_batch.io.container import LR_SUFFIXES

    assert {encoding_for_path("x" + s).container for s in LR_SUFFIXES} == set(LR_CONTAINERS)
