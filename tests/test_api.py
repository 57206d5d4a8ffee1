"""The Python API (``irn_batch.api``): the same files as the CLI, the source's layout back, photo metadata,
clear errors, the Ray Data callables in a real ``map_batches``, and the README's examples as written."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irn_batch import api
from irn_batch.cli import main
from irn_batch.io.container import ContainerError
from irn_batch.io.decode import ImageError, decode_image
from irn_batch.model.checkpoint import load_checkpoint

pytest_plugins = ["pipeline_fixtures"]
ROOT = Path(__file__).resolve().parents[1]


def picture(h: int = 37, w: int = 52, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 5 + c) * np.cos(y / 7 - c) for c in range(3)], -1) * 0.35 + 0.5
    return np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1).__mul__(255).round().astype(np.uint8)


def png(a: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_array_pil_image_and_file_bytes_give_the_same_lr_pixels(tiny_ckpt):
    a = picture()
    got = [api.downscale_to_pixels(x, tiny_ckpt, seed=7) for x in (a, Image.fromarray(a), png(a))]
    for pixels, meta in got:
        assert pixels.shape == (19, 26, 3) and pixels.dtype == np.uint8
        assert (meta.width, meta.height, meta.z_seed, meta.model_id) == (52, 37, 7, tiny_ckpt.model_id)
        np.testing.assert_array_equal(pixels, got[0][0])
    lr = api.downscale(png(a), tiny_ckpt, seed=7)
    np.testing.assert_array_equal(decode_image(lr.data).rgb, decode_image(png(got[0][0])).rgb)


@pytest.mark.parametrize("suffix", [".png", ".webp", ".jpg"])
def test_the_cli_writes_exactly_what_the_api_returns(tmp_path, capsys, tiny_ckpt_path, suffix):
    src = tmp_path / "in.png"
    src.write_bytes(png(picture(seed=1)))
    lr_path, hr_path = tmp_path / f"lr{suffix}", tmp_path / "hr.png"
    assert main(["downscale", str(src), "-o", str(lr_path), "--model", str(tiny_ckpt_path)]) == 0
    assert main(["upscale", str(lr_path), "-o", str(hr_path), "--model", str(tiny_ckpt_path)]) == 0
    capsys.readouterr()
    ckpt = load_checkpoint(tiny_ckpt_path)
    container = {".png": "png", ".webp": "webp", ".jpg": "jpeg"}[suffix]
    lr = api.downscale(src.read_bytes(), ckpt, container=container)
    assert lr.data == lr_path.read_bytes()
    assert api.restore_file(lr.data, ckpt, container="png").data == hr_path.read_bytes()


def test_grey_and_sixteen_bit_sources_come_back_in_their_layout(tiny_ckpt):
    grey = picture(seed=2)[..., 1]
    out = api.restore(api.downscale(grey, tiny_ckpt).data, tiny_ckpt)
    assert out.shape == grey.shape and out.dtype == np.uint8
    deep = (picture(seed=3)[..., 0].astype(np.uint16) * 257 + 3)
    lr = api.downscale(deep, tiny_ckpt)
    assert api.read_lr_metadata(lr.data).source_mode.startswith("I;16")
    out = api.restore(lr.data, tiny_ckpt)
    assert out.shape == deep.shape and out.dtype == np.uint16
    rgb = api.restore(api.downscale(picture(seed=4), tiny_ckpt).data, tiny_ckpt, as_float=True)
    assert rgb.shape == (37, 52, 3) and rgb.dtype == np.float32 and 0.0 <= rgb.min() <= rgb.max() <= 1.0


def test_photo_metadata_goes_with_the_lr_and_back_into_the_restore(tiny_ckpt):
    im = Image.fromarray(picture(seed=5))
    exif = Image.Exif()
    exif[0x013B] = "A. Photographer"  # Artist
    exif[0x8298] = "CC0"  # Copyright
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    lr = api.downscale(buf.getvalue(), tiny_ckpt, container="webp")
    assert "exif" in lr.kept and lr.sidecar is None
    out = api.restore_file(lr.data, tiny_ckpt, container="jpeg")
    assert "exif" in out.kept
    back = Image.open(io.BytesIO(out.data)).getexif()
    assert (back[0x013B], back[0x8298]) == ("A. Photographer", "CC0")
    stripped = api.downscale(buf.getvalue(), tiny_ckpt, metadata="strip")
    assert stripped.kept == () and "exif" not in api.restore_file(stripped.data, tiny_ckpt).kept


def test_bad_input_raises_a_clear_error(tiny_ckpt, other_ckpt_path):
    with pytest.raises(ImageError, match="not an irn_batch LR"):
        api.read_lr_metadata(png(picture()))
    with pytest.raises(ImageError, match="expected a PIL image, an array or file bytes"):
        api.downscale("photo.jpg", tiny_ckpt)
    with pytest.raises(ImageError, match="not an image array"):
        api.downscale(np.zeros((4, 4, 5), np.uint8), tiny_ckpt)
    with pytest.raises(ContainerError, match="an LR file is one of"):
        api.downscale(picture(), tiny_ckpt, container="tiff")
    lr = api.downscale(picture(), tiny_ckpt).data
    other = load_checkpoint(other_ckpt_path)
    with pytest.raises(ImageError, match=f"made by model {tiny_ckpt.model_id}.*{other.model_id}"):
        api.restore(lr, other)


def test_ray_data_callables_in_a_real_map_batches(ray_session, tiny_ckpt_path):
    import ray

    ckpt = load_checkpoint(tiny_ckpt_path)
    files = [png(picture(h, w, seed=i)) for i, (h, w) in enumerate([(20, 30), (33, 17), (24, 24)])]
    ds = ray.data.from_items([{"bytes": b, "name": f"img{i}"} for i, b in enumerate(files)])
    lrs = ds.map_batches(api.Downscaler, fn_constructor_kwargs={"model": str(tiny_ckpt_path)}, batch_size=2,
                         compute=ray.data.ActorPoolStrategy(size=1))
    restored = lrs.map_batches(api.Restorer, fn_constructor_kwargs={"model": str(tiny_ckpt_path), "column": "lr"},
                               batch_size=2, compute=ray.data.ActorPoolStrategy(size=1))
    rows = {r["name"]: r for r in restored.iter_rows()}
    assert sorted(rows) == ["img0", "img1", "img2"]
    for i, data in enumerate(files):
        row = rows[f"img{i}"]
        expected = api.downscale(data, ckpt)
        assert row["lr"] == expected.data and row["model_id"] == ckpt.model_id
        assert (row["width"], row["height"]) == (expected.meta.width, expected.meta.height)
        np.testing.assert_array_equal(row["image"], api.restore(expected.data, ckpt))


def _readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### From Python"):]
    section = section[: section.index("\n### ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_examples_run_as_written(ray_session, monkeypatch, capsys):
    blocks = _readme_examples()
    assert len(blocks) == 2
    monkeypatch.chdir(ROOT)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[1].isdigit() and out[2] == "(193, 255, 3)"
    printed = [line for line in out if line.startswith("irn_batch/samples/")]
    assert len(printed) == len([p for p in os.listdir(ROOT / "irn_batch" / "samples") if p.endswith(".png")])
