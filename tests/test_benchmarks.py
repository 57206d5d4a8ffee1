"""The measurement scripts the README and model card quote still run end to end (tiny inputs)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline_fixtures import smooth_image

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_equal_bytes_measures_every_model_and_lr_codec(tmp_path, tiny_ckpt_path, calm_ckpt_path):
    data = tmp_path / "val"
    data.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(data / f"im{i}.png")
    out = tmp_path / "out"
    rc = _script("equal_bytes").main([
        "--model", f"a={tiny_ckpt_path}", "--model", f"b={calm_ckpt_path}", "--reference", "a",
        "--data", str(data), "--jpeg", "60", "90", "--webp", "80", "--out", str(out), "--name", "eb"])
    assert rc == 0
    result = json.loads((out / "eb.json").read_text())
    assert result["meta"]["scale"] == 2 and result["meta"]["images"] == 2
    rows = {(r["model"], r["codec"], r["quality"]) for r in result["summary"]}
    assert rows == {(m, c, q) for m in "ab" for c, q in (("png", 0), ("jpeg", 60), ("jpeg", 90), ("webp", 80))}
    for r in result["summary"]:
        assert r["bpp"] > 0 and math.isfinite(r["psnr_y"]) and math.isfinite(r["lr_psnr_y"])
    jpeg = {r["quality"]: r["bpp"] for r in result["summary"] if r["model"] == "b" and r["codec"] == "jpeg"}
    assert jpeg[90] > jpeg[60]  # a real codec: higher quality, more bytes
    assert np.asarray(Image.open(out / "eb.png")).size > 0 and "| b | JPEG q90 |" in (out / "eb.md").read_text()
