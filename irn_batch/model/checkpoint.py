"""Checkpoints: safetensors files that carry their own config and a model id. Nothing is unpickled.

Metadata keys (all strings, as safetensors requires):
  format               "irn_batch/1"
  config               JSON of IRNConfig (scale, blocks, growth, clamp, channels)
  model_id             "irn-x{scale}-" + first 16 hex digits of the sha256 of the weights
  default_temperature  the z temperature the weights restore best with (0 = z is zero)
plus any free-form string entries the writer adds (training run, source, ...).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import fsspec
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from irn_batch.model.checkpoint_header import FORMAT, CheckpointError, read_metadata  # noqa: F401 (re-exported)
from irn_batch.model import IRN, IRNConfig
from irn_batch.storage import StorageConfig, open_fs, read_object, write_object


@dataclass
class Checkpoint:
    model: IRN
    model_id: str
    default_temperature: float
    metadata: dict[str, str] = field(default_factory=dict)


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def make_model_id(config: IRNConfig, state: dict[str, torch.Tensor]) -> str:
    return f"irn-x{config.scale}-{weights_hash(state)[:16]}"


def _weights(model: IRN) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def checkpoint_bytes(model: IRN, default_temperature: float = 1.0, extra: dict[str, str] | None = None) -> bytes:
    """Serialise ``model`` to safetensors bytes with its config and model id in the metadata."""
    state = _weights(model)
    meta = {str(k): str(v) for k, v in (extra or {}).items()}
    meta.update(
        format=FORMAT,
        config=json.dumps(model.config.to_dict(), sort_keys=True),
        model_id=make_model_id(model.config, state),
        default_temperature=repr(float(default_temperature)),
    )
    return save_safetensors_bytes(state, metadata=meta)


def save_checkpoint(
    model: IRN, path: str | Path, default_temperature: float = 1.0, extra: dict[str, str] | None = None
) -> str:
    """Write a checkpoint to a local path or fsspec URL (atomically, folders created); returns the model id."""
    data = checkpoint_bytes(model, default_temperature, extra)
    write_object(str(path), data)
    return read_metadata(data)["model_id"]


def checkpoint_from_bytes(data: bytes, name: str = "checkpoint") -> Checkpoint:
    """Rebuild a ready-to-run model (eval mode, CPU) from checkpoint bytes, verifying its model id."""
    try:
        meta = read_metadata(data)
    except CheckpointError as e:
        raise CheckpointError(f"{name}: {e}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{name}: not an irn_batch checkpoint (format={meta.get('format')!r})")
    try:
        config = IRNConfig(**json.loads(meta["config"]))
        state = load_safetensors_bytes(data)
    except (KeyError, TypeError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{name}: unreadable checkpoint ({e})") from e
    model = IRN(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        # torch lists every mismatching tensor; the first line says what kind of mismatch it is.
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{name}: weights do not fit the config {config}: {first}") from e
    model_id = make_model_id(config, state)
    if meta.get("model_id") != model_id:
        raise CheckpointError(
            f"{name}: weights do not match their recorded model id "
            f"({meta.get('model_id')} recorded, {model_id} computed): the file is corrupt or was edited"
        )
    model.eval().requires_grad_(False)
    return Checkpoint(model, model_id, float(meta.get("default_temperature", "1.0")), meta)


def read_bytes(path_or_url: str | Path) -> bytes:
    """Whole-file read from a local path or any fsspec URL."""
    return read_object(str(path_or_url))


def load_checkpoint(path_or_url: str | Path) -> Checkpoint:
    try:
        data = read_bytes(path_or_url)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path_or_url}: cannot read checkpoint ({e})") from e
    return checkpoint_from_bytes(data, str(path_or_url))


def weights_dir() -> Path:
    """The package folder that holds the shipped weights."""
    return Path(str(resources.files("irn_batch") / "weights"))


def default_weights_path(scale: int, lossy: bool = False) -> Path:
    """Where the package keeps its default weights for ``scale`` (the file may be absent).

    ``lossy=True`` asks for the weights trained for lossy LR containers (``irn_x{scale}_lossy``) and falls
    back to the plain ones when none are shipped for that scale.
    """
    if lossy:
        path = weights_dir() / f"irn_x{scale}_lossy.safetensors"
        if path.is_file():
            return path
    return weights_dir() / f"irn_x{scale}.safetensors"


def load_default(scale: int, lossy: bool = False) -> Checkpoint:
    path = default_weights_path(scale, lossy)
    if not path.is_file():
        raise CheckpointError(f"no default weights are shipped for x{scale}; pass --model")
    return load_checkpoint(path)


def resolve_model(model: str | None, scale: int, lossy: bool = False) -> Checkpoint:
    """A checkpoint path/URL if given, else the package default for ``scale`` (for lossy LRs if ``lossy``)."""
    return load_default(scale, lossy) if model is None else load_checkpoint(model)


def packaged_path_for(model_id: str) -> Path:
    """The shipped weights file whose model id is ``model_id``; CheckpointError naming the id when none is.

    Only the safetensors headers are read, so this costs a few small reads however large the weights are.
    """
    for path in sorted(weights_dir().glob("*.safetensors")):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = f.read(n) if 0 < n < 1 << 24 else b""
        try:
            if read_metadata(n.to_bytes(8, "little") + header).get("model_id") == model_id:
                return path
        except CheckpointError:
            continue
    raise CheckpointError(f"the LR was made by model {model_id}, which is not among the shipped weights; "
                          "pass its checkpoint (--model in the CLI, model= in a job)")


# --- import of weights saved by the official IRN code (pkuxmq/Invertible-Image-Rescaling) ---

_OFFICIAL_KEY = re.compile(r"operations\.(\d+)\.(haar_weights|[FGH]\.conv[1-5]\.(?:weight|bias))")


def convert_official_state(state: dict[str, torch.Tensor], scale: int, blocks: int = 8) -> IRN:
    """Map an official IRN state dict onto our IRN, strictly: every key must be used and none missing."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    config = IRNConfig(scale=scale, blocks=blocks)
    model = IRN(config)
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        bare = key.removeprefix("module.")
        m = _OFFICIAL_KEY.fullmatch(bare)
        if m is None:
            raise CheckpointError(f"unexpected key in official checkpoint: {key}")
        index, rest = int(m.group(1)), m.group(2)
        if index >= len(model.layers):
            raise CheckpointError(f"{key}: layer {index} does not exist in an x{scale} IRN with {blocks} blocks")
        if rest == "haar_weights":
            expected = model.layers[index].weight
            if not torch.equal(value.to(expected.dtype), expected):
                raise CheckpointError(f"{key}: Haar filters differ from the standard ones")
            continue
        ours[f"layers.{index}.{rest}"] = value.float()
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"official checkpoint does not fit x{scale} with {blocks} blocks: {e}") from e
    return model.eval().requires_grad_(False)


def convert_official(src: str | Path, dst: str | Path, scale: int, blocks: int = 8) -> str:
    """Read an official ``.pth`` with ``torch.load(weights_only=True)`` and write our checkpoint."""
    try:
        with fsspec.open(str(src), "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a foreign or corrupt file
        raise CheckpointError(f"{src}: cannot load as a weights-only torch checkpoint ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{src}: expected a state dict, got {type(state).__name__}")
    model = convert_official_state(state, scale, blocks)
    return save_checkpoint(model, dst, default_temperature=1.0, extra={"source": f"official IRN x{scale}"})


def load_model_bytes(model: str | None, scale: int, storage: StorageConfig, *, lossy: bool = False,
                     model_id: str | None = None) -> tuple[bytes, Checkpoint]:
    """(checkpoint bytes, the checkpoint): read and verified once by the driver, the bytes shipped to every actor.

    ``model`` None: the shipped weights whose id is ``model_id`` when one is given (CheckpointError naming it
    when none is), else the shipped weights for ``scale`` (for lossy LR containers with ``lossy``).
    """
    if model is None:
        path = packaged_path_for(model_id) if model_id else default_weights_path(scale, lossy)
        if not path.is_file():
            raise CheckpointError(
                f"default weights {path} are missing (they are still being trained); pass model=PATH_OR_URL"
            )
        data, name = path.read_bytes(), str(path)
    else:
        fs, p = open_fs(model, storage)
        try:
            data = fs.cat_file(p)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{model}: cannot read checkpoint ({e})") from e
        name = model
    return data, checkpoint_from_bytes(data, name)
