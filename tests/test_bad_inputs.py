"""Bad and unusual inputs: each ends as an ok row with a correct LR or an error row with a clear reason."""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
from PIL import Image

from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.restore import run_restore
from irn_batch.storage import open_fs

pytest_plugins = ["pipeline_fixtures"]


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _patch_ihdr(png: bytes, w: int, h: int) -> bytes:
    """The same PNG claiming another size in its header (CRC fixed): a decompression bomb's header."""
    ihdr = png[12:16] + struct.pack(">II", w, h) + png[24:29]
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def bad_inputs() -> dict[str, tuple[bytes, str | tuple[int, int]]]:
    """name -> (bytes, expected): an error-reason fragment, or the upright (width, height) of an ok image."""
    from pipeline_fixtures import png_bytes, smooth_image

    good = png_bytes(smooth_image(24, 40, 0))
    rgb = Image.fromarray(smooth_image(24, 40, 1))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    frames = [Image.fromarray(smooth_image(16, 16, i)) for i in range(2)]
    gray = smooth_image(20, 30, 6, 1)[..., 0]
    return {
        "good.png": (good, (40, 24)),
        "zero.png": (b"", "empty"),
        "truncated.png": (good[: len(good) // 2], "truncated"),
        "corrupt.png": (good[:60] + bytes(b ^ 0x5A for b in good[60:-12]) + good[-12:], "corrupt"),
        "notimage.png": (b"just some text, not an image\n" * 10, "not a recognised image"),
        "bomb.png": (_patch_ihdr(png_bytes(smooth_image(8, 8, 3)), 100000, 100000), "pixels"),
        "big.png": (png_bytes(smooth_image(80, 80, 9)), "more than the limit"),  # over max_pixels=5000 below
        "one.png": (png_bytes(smooth_image(1, 1, 4)), (1, 1)),
        "thin.png": (png_bytes(smooth_image(40, 1, 5)), (1, 40)),
        "gray.png": (_save(rgb.convert("L"), "PNG"), (40, 24)),
        "gray16.png": (_save(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"), (30, 20)),
        "cmyk.jpg": (_save(rgb.convert("CMYK"), "JPEG"), (40, 24)),
        "palette.png": (_save(rgb.convert("P"), "PNG"), (40, 24)),
        "rgba.png": (png_bytes(smooth_image(24, 40, 7, 4)), (40, 24)),
        "exif.jpg": (_save(rgb, "JPEG", exif=exif), (24, 40)),
        "anim.gif": (_save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
                     "animated"),
        "float.tif": (_save(Image.fromarray(gray.astype(np.float32) / 255.0, mode="F"), "TIFF"), (30, 20)),
    }


def test_bad_inputs_end_as_ok_or_clear_error_rows(ray_session, tmp_path, tiny_ckpt_path):
    cases = bad_inputs()
    for name, (data, _) in cases.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    # a bidi override is only replaced in the LR key (a/_evil.png); this object is missing
    extra = {"../escape.png": "escape", "missing.png": "not found", "a/\u202eevil.png": "not found"}
    keys = sorted(cases) + sorted(extra)
    common = [f"model={tiny_ckpt_path}", "actors.pool_size=1", "actors.batch_size=4"]
    cfg = load_config(IngestConfig, None, [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}",
                                           "max_pixels=5000", f"keys={json.dumps(keys)}", *common])
    summary = run_ingest(cfg)
    expected = {k: v[1] for k, v in cases.items()} | extra
    n_ok = sum(isinstance(v, tuple) for v in expected.values())
    assert (summary["total"], summary["ok"], summary["error"]) == (len(keys), n_ok, len(keys) - n_ok)

    fs, m = open_fs(str(tmp_path / "lr" / "_manifest"))
    rows = {r["key"]: r for r in read_manifest(fs, m).to_pylist()}
    assert set(rows) == set(keys), "every input appears in the manifest"
    for key, want in expected.items():
        r = rows[key]
        if isinstance(want, tuple):
            assert r["status"] == "ok", f"{key}: {r['error']}"
            assert (r["width"], r["height"]) == want
            lr = Image.open(tmp_path / "lr" / key.replace(".jpg", ".png").replace(".tif", ".png"))
            assert lr.size == (-(-want[0] // 2), -(-want[1] // 2)), key
            assert lr.mode == ("RGBA" if key == "rgba.png" else "RGB"), key
        else:
            assert r["status"] == "error" and r["lr_uri"] is None, key
            assert want in r["error"].lower() and "\n" not in r["error"], f"{key}: {r['error']}"

    # every ok LR restores to its original (upright) size
    rcfg = load_config(RestoreConfig, None, [f"input={tmp_path / 'lr'}", f"output={tmp_path / 'hr'}", "format=png",
                                             *common])
    rs = run_restore(rcfg)
    assert (rs["ok"], rs["error"]) == (n_ok, 0)
    for key, want in expected.items():
        if isinstance(want, tuple):
            out = tmp_path / "hr" / key.replace(".jpg", ".png").replace(".tif", ".png")
            img = Image.open(out)
            # gray sources come back gray, 16-bit and float ones as 16-bit gray PNGs (issue 13)
            mode = {"rgba.png": "RGBA", "gray.png": "L", "gray16.png": "I;16", "float.tif": "I;16"}.get(key, "RGB")
            assert img.size == want and img.mode == mode, key

    # a rerun redoes nothing yet gives every input a row; retry_errors=true redoes the errors
    again = run_ingest(cfg)
    assert again["ok"] == 0 and again["skipped"] + again["error"] == len(keys)
    rerun = {r["key"]: r for r in read_manifest(fs, m).to_pylist() if r["job_id"] == again["job_id"]}
    assert set(rerun) == set(keys)
    assert all(rerun[k]["status"] == "skipped" for k, want in expected.items() if isinstance(want, tuple))
    assert "not retried" in rerun["corrupt.png"]["error"] and "corrupt" in rerun["corrupt.png"]["error"]
    retry = run_ingest(load_config(IngestConfig, None, [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}",
                                                        "retry_errors=true", f"keys={json.dumps(keys)}", *common]))
    # with the default pixel limit big.png now goes through; the other errors are errors again
    assert (retry["ok"], retry["skipped"], retry["error"]) == (1, n_ok, len(keys) - n_ok - 1)
