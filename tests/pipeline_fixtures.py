"""Session fixtures for the pipeline tests: one local Ray (2 CPUs) and one moto S3 server on loopback.

Load with ``pytest_plugins = ["pipeline_fixtures"]`` so every module shares the same instances.
"""
from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Set before Ray starts so the workers and any subprocess driver see the same values. Token auth is
# disabled consistently for this test cluster; moto accepts any credentials.
TEST_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "RAY_DEDUP_LOGS": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def test_env():
    old = {k: os.environ.get(k) for k in TEST_ENV}
    os.environ.update(TEST_ENV)
    yield dict(TEST_ENV)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def s3_endpoint(test_env) -> str:
    """A moto S3 server on 127.0.0.1 with a free port (buckets are made by the tests)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def ray_session(test_env):
    """One embedded local Ray for the whole session (address='local': never joins another cluster)."""
    import ray

    from irn_batch.cluster import init_ray
    from irn_batch.cluster import RayConfig

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024**2,
                 log_to_driver=False)
    init_ray(RayConfig())  # no-op start; applies our DataContext settings
    yield ray
    ray.shutdown()


def make_bucket(endpoint: str, name: str):
    """Create a bucket on the moto server; returns an s3fs filesystem for it."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)
    return fs


def smooth_image(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    """A natural-ish test picture (smooth gradients + a little noise), uint8 (h, w, channels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = []
    for c in range(channels):
        fx, fy, ph = rng.uniform(0.02, 0.15, 2).tolist() + [rng.uniform(0, 6.28)]
        planes.append(0.5 + 0.35 * np.sin(fx * x + ph) * np.cos(fy * y) + rng.normal(0, 0.02, (h, w)))
    return (np.clip(np.stack(planes, -1), 0, 1) * 255).round().astype(np.uint8)


def png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


def write_images(root: Path | str, fs=None, n: int = 4, sizes=((40, 56), (33, 47), (64, 64), (18, 30))) -> dict:
    """Write n PNGs (some in a sub-folder, odd sizes included) to a local dir or an fsspec prefix."""
    out = {}
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        key = f"{'sub/' if i % 2 else ''}img{i:02d}.png"
        data = png_bytes(smooth_image(h, w, seed=i))
        if fs is None:
            p = Path(root) / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        else:
            fs.pipe_file(f"{root}/{key}", data)
        out[key] = (w, h)
    return out
