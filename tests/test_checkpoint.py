"""Checkpoints: safetensors round trip, refusal of damaged files, no pickle, and the official import
checked against an independent re-implementation of the official IRN forward/reverse."""
from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from conftest import random_irn
from irn_batch.model.checkpoint import (
    CheckpointError,
    checkpoint_bytes,
    checkpoint_from_bytes,
    convert_official,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from irn_batch.cli import main


def test_round_trip_keeps_weights_id_and_outputs(tmp_path):
    model = random_irn(2, seed=3)
    model_id = save_checkpoint(model, tmp_path / "m.safetensors", default_temperature=0.8, extra={"run": "t1"})
    ck = load_checkpoint(tmp_path / "m.safetensors")
    assert ck.model_id == model_id and model_id.startswith("irn-x2-")
    assert ck.default_temperature == 0.8 and ck.metadata["run"] == "t1"
    for (k, a), (k2, b) in zip(model.state_dict().items(), ck.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(model(x), ck.model(x))
    # The id is a function of the weights only: stable across saves, different for other weights.
    assert save_checkpoint(model, tmp_path / "again.safetensors") == model_id
    assert save_checkpoint(random_irn(2, seed=4), tmp_path / "other.safetensors") != model_id


def test_damaged_files_are_refused(tmp_path):
    data = checkpoint_bytes(random_irn(2, seed=5))
    n = int.from_bytes(data[:8], "little")
    flipped = bytearray(data)
    flipped[-7] ^= 0x40  # one bit of one weight
    with pytest.raises(CheckpointError, match="model id"):
        checkpoint_from_bytes(bytes(flipped))
    for cut in (len(data) - 100, 8 + n // 2, 5, 0):
        with pytest.raises(CheckpointError):
            checkpoint_from_bytes(data[:cut])
    meta = read_metadata(data)
    edited_header = json.loads(data[8 : 8 + n])
    edited_header["__metadata__"]["config"] = json.dumps({**json.loads(meta["config"]), "growth": 9})
    raw = json.dumps(edited_header).encode()
    with pytest.raises(CheckpointError):
        checkpoint_from_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    # A valid safetensors file of someone else's layout.
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not an irn_batch checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "missing.safetensors")


class _Payload:
    """Unpickling this runs code: it must never happen."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickles_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"operations.0.haar_weights": _Payload(str(marker))}, f, protocol=2)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="weights-only"):
        convert_official(evil, tmp_path / "out.safetensors", scale=2)
    torch.save({"x": _Payload(str(marker))}, tmp_path / "evil2.pth")
    with pytest.raises(CheckpointError):
        convert_official(tmp_path / "evil2.pth", tmp_path / "out.safetensors", scale=2)
    assert not marker.exists()


# --- an independent reference of the official IRN, written from the formulas in the issue ---


def ref_haar(x: torch.Tensor) -> torch.Tensor:
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.cat([(a + b + c + d), (a - b + c - d), (a + b - c - d), (a - b - c + d)], 1) / 4


def ref_haar_inv(y: torch.Tensor) -> torch.Tensor:
    c = y.shape[1] // 4
    s0, s1, s2, s3 = (y[:, i * c : (i + 1) * c] for i in range(4))
    out = torch.zeros(y.shape[0], c, y.shape[2] * 2, y.shape[3] * 2, dtype=y.dtype)
    out[..., 0::2, 0::2] = s0 + s1 + s2 + s3
    out[..., 0::2, 1::2] = s0 - s1 + s2 - s3
    out[..., 1::2, 0::2] = s0 + s1 - s2 - s3
    out[..., 1::2, 1::2] = s0 - s1 - s2 + s3
    return out


def ref_dense(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    feats = [x]
    for k in range(1, 6):
        out = F.conv2d(torch.cat(feats, 1), sd[f"{prefix}.conv{k}.weight"], sd[f"{prefix}.conv{k}.bias"], padding=1)
        feats.append(F.leaky_relu(out, 0.2) if k < 5 else out)
    return feats[-1]


def ref_block(sd: dict, p: str, x: torch.Tensor, reverse: bool) -> torch.Tensor:
    x1, x2 = x[:, :3], x[:, 3:]
    scale = lambda t: 2 * torch.sigmoid(ref_dense(sd, f"{p}.H", t)) - 1  # noqa: E731  (clamp = 1)
    if not reverse:
        y1 = x1 + ref_dense(sd, f"{p}.F", x2)
        return torch.cat([y1, x2 * torch.exp(scale(y1)) + ref_dense(sd, f"{p}.G", y1)], 1)
    y2 = (x2 - ref_dense(sd, f"{p}.G", x1)) / torch.exp(scale(x1))
    return torch.cat([x1 - ref_dense(sd, f"{p}.F", y2), y2], 1)


def ref_ops(scale: int, blocks: int) -> list[tuple[int, str]]:
    ops, i = [], 0
    for _ in range(scale.bit_length() - 1):
        ops.append((i, "haar"))
        ops.extend((i + 1 + b, "block") for b in range(blocks))
        i += 1 + blocks
    return ops


def ref_forward(sd: dict, x: torch.Tensor, scale: int, blocks: int, reverse: bool = False) -> torch.Tensor:
    ops = ref_ops(scale, blocks)
    for i, kind in reversed(ops) if reverse else ops:
        if kind == "haar":
            x = ref_haar_inv(x) if reverse else ref_haar(x)
        else:
            x = ref_block(sd, f"operations.{i}", x, reverse)
    return x


def official_state(scale: int, blocks: int, prefix: str = "", seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict laid out like the official code's (growth 32, Haar filters stored)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    channels = 3
    filters = torch.tensor([[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]], dtype=torch.float32)
    for i, kind in ref_ops(scale, blocks):
        if kind == "haar":
            sd[f"{prefix}operations.{i}.haar_weights"] = filters[:, None].repeat(channels, 1, 1, 1)
            channels *= 4
            continue
        for sub, c_in, c_out in (("F", channels - 3, 3), ("G", 3, channels - 3), ("H", 3, channels - 3)):
            for k in range(1, 6):
                cin = c_in + 32 * (k - 1)
                cout = 32 if k < 5 else c_out
                sd[f"{prefix}operations.{i}.{sub}.conv{k}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.03
                sd[f"{prefix}operations.{i}.{sub}.conv{k}.bias"] = torch.randn(cout, generator=g) * 0.01
    return sd


@pytest.mark.parametrize("scale,blocks,prefix", [(2, 2, ""), (2, 2, "module."), (4, 1, "module.")])
def test_official_conversion_matches_reference(tmp_path, capsys, scale, blocks, prefix):
    sd = official_state(scale, blocks, prefix)
    torch.save(sd, tmp_path / "official.pth")
    out = tmp_path / "ours.safetensors"
    args = ["convert-official", str(tmp_path / "official.pth"), "--scale", str(scale), "-o", str(out)]
    assert main(args + ["--blocks", str(blocks)]) == 0
    model_id = capsys.readouterr().out.strip()
    ck = load_checkpoint(out)
    assert ck.model_id == model_id and ck.model.scale == scale
    bare = {k.removeprefix("module."): v for k, v in sd.items()}
    x = torch.rand(2, 3, 4 * scale, 3 * scale, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = ck.model(x)
        y_ref = ref_forward(bare, x, scale, blocks)
        assert torch.allclose(y, y_ref, atol=1e-5, rtol=0), (y - y_ref).abs().max()
        haar_only = ref_haar(x) if scale == 2 else ref_haar(ref_haar(x))
        assert (y - haar_only).abs().max() > 0.05  # the couplings are far from the identity
        back_ref = ref_forward(bare, y_ref, scale, blocks, reverse=True)
        assert torch.allclose(ck.model.inverse(y_ref), back_ref, atol=1e-5, rtol=0)
        assert torch.allclose(back_ref, x, atol=1e-4)  # the reference itself is a bijection


def test_reference_haar_matches_issue_filters():
    x = torch.rand(1, 2, 6, 8)
    y = ref_haar(x)
    assert torch.allclose(y[:, :2], F.avg_pool2d(x, 2), atol=1e-7)
    assert torch.allclose(ref_haar_inv(y), x, atol=1e-6)


def test_official_conversion_refusals(tmp_path, capsys):
    sd = official_state(2, 1)
    torch.save({**sd, "operations.1.F.extra": torch.zeros(1)}, tmp_path / "extra.pth")
    torch.save(sd, tmp_path / "x2.pth")
    bad_haar = dict(sd)
    bad_haar["operations.0.haar_weights"] = sd["operations.0.haar_weights"] * 2
    torch.save(bad_haar, tmp_path / "haar.pth")
    (tmp_path / "junk.pth").write_bytes(os.urandom(300))
    cases = [
        (["extra.pth", "--scale", "2", "--blocks", "1"], "unexpected key"),
        (["x2.pth", "--scale", "4", "--blocks", "1"], "does not fit|does not exist"),
        (["x2.pth", "--scale", "2", "--blocks", "8"], "does not fit"),
        (["haar.pth", "--scale", "2", "--blocks", "1"], "Haar"),
        (["junk.pth", "--scale", "2"], "weights-only"),
        (["missing.pth", "--scale", "2"], "no such file"),
    ]
    for argv, reason in cases:
        argv = ["convert-official", str(tmp_path / argv[0]), *argv[1:], "-o", str(tmp_path / "o.safetensors")]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("irn-batch: error: "), err
        assert re.search(reason, err), (reason, err)
    assert not (tmp_path / "o.safetensors").exists()
