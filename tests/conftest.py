"""Shared pytest setup: the ``--runslow`` switch and small random-weight checkpoints."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch

from irn_batch.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from irn_batch.model import IRN, IRNConfig


# The tests use tiny tensors: one intra-op thread is as fast, and on a shared 2-core box it avoids
# oversubscription (two threads measured 30x slower here while other jobs ran).
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long tests, skipped unless --runslow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def random_irn(scale: int = 2, blocks: int = 2, growth: int = 8, seed: int = 0, std: float = 0.02) -> IRN:
    """A small IRN whose zero-initialised last convs are perturbed, so no coupling is the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = IRN(IRNConfig(scale=scale, blocks=blocks, growth=growth))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".conv5." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def tiny_ckpt_path(ckpt_dir: Path) -> Path:
    """A small random x2 checkpoint file (blocks=2, growth=8), default temperature 1."""
    path = ckpt_dir / "tiny_x2.safetensors"
    save_checkpoint(random_irn(2, seed=0), path, default_temperature=1.0, extra={"source": "tests"})
    return path


@pytest.fixture(scope="session")
def other_ckpt_path(ckpt_dir: Path) -> Path:
    """Another x2 checkpoint with different weights (for the mismatched-model refusal)."""
    path = ckpt_dir / "other_x2.safetensors"
    save_checkpoint(random_irn(2, seed=1), path)
    return path


@pytest.fixture(scope="session")
def tiny_x4_path(ckpt_dir: Path) -> Path:
    path = ckpt_dir / "tiny_x4.safetensors"
    save_checkpoint(random_irn(4, blocks=1, seed=2), path)
    return path


@pytest.fixture
def tiny_ckpt(tiny_ckpt_path: Path) -> Checkpoint:
    return load_checkpoint(tiny_ckpt_path)


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The sample images bundled with the package."""
    return Path(str(resources.files("irn_batch") / "samples"))


@pytest.fixture(scope="session")
def calm_ckpt_path(ckpt_dir: Path) -> Path:
    """The tiny x2 weights with default temperature 0: a restore then follows the LR, not z noise, so a
    better LR container restores measurably better (what the quality-floor tests need)."""
    path = ckpt_dir / "calm_x2.safetensors"
    save_checkpoint(random_irn(2, seed=0), path, default_temperature=0.0, extra={"source": "tests"})
    return path
