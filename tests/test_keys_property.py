"""Property tests of key handling (hypothesis, derandomised): random Unicode keys are listed as stored, read
back byte for byte at their listed path, and get an LR key that stays under the output prefix (or one clear
key error), on the local filesystem and on the moto S3 server. Planning and the read stage only: no model."""
from __future__ import annotations

import itertools
import os
import posixpath
import tempfile

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest_plan import plan
from irn_batch.pipeline.read import read_stage
from irn_batch.storage import StorageConfig, StorageError, open_uri, output_key

pytest_plugins = ["pipeline_fixtures"]

MODEL = "irn-x2-0000000000000000"
# pieces that have broken keys before: URL syntax, separators, dots, both Unicode forms, bidi, look-alikes
TRICKY = [":", "::", "#", "?", "%", "%2F", " ", "\\", ".", "..", "e\u0301", "\u00e9", "\u202e", "\u2025", "\uff0f",
          "\u200b", "~", "*", "[", "\t", "\n", "\u30ab\u3099", "\U0001f600"]
chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/")
piece = st.one_of(st.sampled_from(TRICKY), st.text(chars, min_size=1, max_size=4))
component = st.lists(piece, min_size=1, max_size=4).map("".join).filter(
    lambda c: c not in (".", "..") and len(c.encode()) <= 200)
local_key = st.lists(component, min_size=1, max_size=3).map("/".join)
PROPS = settings(derandomize=True, deadline=None, max_examples=40,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _check_plan(p, out_path: str, written: dict[str, bytes], storage: StorageConfig) -> None:
    """Every written key is an item; it reads back exactly; its LR stays under the output prefix."""
    items = {r["key"]: r for r in p.items.to_pylist()}
    assert set(items) | set(p.listing.left_out) == set(written)
    for key, r in items.items():
        fs, path = open_uri(r["source_uri"], storage)
        assert fs.cat_file(path) == written[key], key
        if r["pre_error"] is None:
            lr = open_uri(r["lr_uri"], storage)[1]
            assert lr.startswith(out_path + "/") and posixpath.normpath(lr) == lr, (key, lr)
        else:
            assert r["pre_error"].startswith("key: ") and "\n" not in r["pre_error"]
    read = read_stage(p.items, storage, 1 << 16, "source_uri").to_pylist()
    for r in read:
        assert r["pre_error"] is not None or r["data"] == written[r["key"]], r["key"]


@PROPS
@given(st.lists(local_key, min_size=1, max_size=4, unique=True))
def test_random_local_keys_read_back_and_stay_under_the_output(keys):
    # a name cannot be a file and a folder at once
    assume(not any(b.startswith(a + "/") for a, b in itertools.permutations(keys, 2)))
    with tempfile.TemporaryDirectory() as tmp:
        written = {}
        for k in keys:
            path = os.path.join(tmp, "in", k)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(k.encode())
            written[k] = k.encode()
        cfg = load_config(IngestConfig, None, [f"input={tmp}/in", f"output={tmp}/out", 'include=["*"]'])
        _check_plan(plan(cfg, MODEL), f"{tmp}/out", written, StorageConfig())


s3_piece = st.one_of(st.sampled_from([t for t in TRICKY if t not in "\t\n"]), st.text(chars, min_size=1, max_size=4))
s3_key = st.lists(st.one_of(s3_piece, st.sampled_from(["/", "//", "/../", "/./"])), min_size=1, max_size=8).map(
    "".join).filter(lambda k: not k.endswith("/") and "?versionId=" not in k and len(k.encode()) <= 300)
_prefixes = itertools.count()
_buckets: dict = {}


@settings(PROPS, max_examples=25)
@given(keys=st.lists(s3_key, min_size=1, max_size=4, unique=True))
def test_random_s3_keys_read_back_and_stay_under_the_output(s3_endpoint, keys):
    from pipeline_fixtures import make_bucket

    fs = _buckets.get(s3_endpoint) or _buckets.setdefault(s3_endpoint, make_bucket(s3_endpoint, "keys-prop"))
    n = next(_prefixes)
    written = {k: k.encode() for k in keys}
    for k in keys:
        try:
            fs.pipe_file(f"keys-prop/in{n}/{k}", written[k])
        except OSError:  # moto's HTTP server refuses some control characters that S3 itself stores
            assume(False)
    storage = StorageConfig(endpoint_url=s3_endpoint)
    cfg = load_config(IngestConfig, None, [f"input=s3://keys-prop/in{n}", f"output=s3://keys-prop/out{n}",
                                           'include=["*"]', f"storage.endpoint_url={s3_endpoint}"])
    _check_plan(plan(cfg, MODEL), f"keys-prop/out{n}", written, storage)


@PROPS
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | local_key)
def test_output_keys_are_safe_or_refused(key):
    try:
        out = output_key(key)
    except StorageError:
        return
    parts = out.split("/")
    assert out and not out.startswith("/") and "::" not in out
    assert all(p not in ("", ".", "..") for p in parts)
    assert posixpath.normpath("/base/" + out).startswith("/base/")
    assert output_key(out) == out  # sanitising is idempotent
