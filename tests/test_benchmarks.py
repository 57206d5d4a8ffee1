"""The measurement scripts the README and model card quote still run end to end (tiny inputs)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch
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


def test_bench_model_times_plain_and_lossy_weights_and_counts_the_recovery_share():
    bench = _script("bench_model")
    rows = bench.bench_lossy([2, 4], size=32, repeats=1)
    assert [r["scale"] for r in rows] == [2, 4]  # both scales ship compression-aware weights
    for r in rows:
        assert r["plain_up_s"] > 0 and r["lossy_up_s"] > 0 and 0 <= r["recovery_mac_share"] < 0.5
        assert (r["recovery_params"] > 0) == (r["recovery_mac_share"] > 0)
    from irn_batch.model import IRN, IRNConfig

    model = IRN(IRNConfig(scale=2, blocks=1, growth=4, recovery_width=4, recovery_layers=2)).eval()
    total, rec = bench.conv_macs(model, torch.zeros(1, 3, 8, 8), torch.zeros(1, 9, 8, 8))
    assert rec == 2 * 8 * 8 * 3 * 4 * 9  # two 3x3 convs, 3->4 and 4->3 channels, at 8x8 LR pixels
    assert total > rec
    assert "| x2 |" in bench.lossy_table(rows)


def test_temperature_table_scores_every_temperature_per_model(tmp_path, calm_ckpt_path):
    data = tmp_path / "val"
    data.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(data / f"im{i}.png")
    out = tmp_path / "out"
    assert _script("temperature").main(["--model", str(calm_ckpt_path), "--data", str(data), "--draws", "2",
                                        "--out", str(out)]) == 0
    result = json.loads((out / "temperature.json").read_text())
    (m,) = result["models"]
    assert list(m["mean"]) == ["0", "0.25", "0.5", "1"] and len(m["per_image"]) == 2
    assert all(math.isfinite(v) for v in m["mean"].values())
    # z noise can only move the restore away from the z = 0 one, which these weights were scored with
    assert m["mean"]["1"] < m["mean"]["0"]
    assert f"`{m['model_id']}`" in (out / "temperature.md").read_text()


def test_bench_cli_times_each_quick_command(tmp_path):
    out = tmp_path / "cli.json"
    assert _script("bench_cli").main(["--runs", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["command"] for r in result["rows"]] == ["--help", "info LR", "info checkpoint", "bad argument"]
    assert all(r["median_s"] > 0 and r["runs"] == 1 for r in result["rows"])
