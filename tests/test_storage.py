"""storage: safe keys, atomic writes, listing, credentials kept out of reprs; S3 through moto."""
from __future__ import annotations

import os

import pytest

from irn_batch.storage import (StorageConfig, StorageError, atomic_write, derived_key, join_key, list_keys,
                               open_fs, read_limited, safe_key, to_uri)

pytest_plugins = ["pipeline_fixtures"]


@pytest.mark.parametrize("key", [
    "../x.png", "a/../../x.png", "/etc/passwd", "a//b.png", "./a.png", "a/./b", "C:/x.png", "s3://b/k",
    "a/\u2025/b.png",  # two-dot leader: NFKC folds it to '..'
    "a/\uff0e\uff0e/b.png",  # fullwidth dots
    "a\u202e/gnp.exe",  # right-to-left override
    "a\x00b.png", "a\nb.png", "", "..\\..\\win.png",
])
def test_safe_key_rejects_escapes_and_odd_unicode(key):
    with pytest.raises(StorageError):
        safe_key(key)


def test_safe_key_normalises_and_join_stays_under_prefix(tmp_path):
    decomposed = "cafe\u0301/x.png"
    assert safe_key(decomposed) == "caf\u00e9/x.png"
    assert safe_key("a\\b.png") == "a/b.png"
    assert join_key("/data/out/", "a/b.png") == "/data/out/a/b.png"
    with pytest.raises(StorageError):
        join_key("/data/out", "../out2/x.png")


def test_atomic_write_local_leaves_only_the_final_file(tmp_path):
    fs, root = open_fs(str(tmp_path))
    path = join_key(root, "deep/er/x.bin")
    atomic_write(fs, path, b"one")
    atomic_write(fs, path, b"two")
    assert open(path, "rb").read() == b"two"
    assert sorted(os.listdir(tmp_path / "deep" / "er")) == ["x.bin"]


def test_file_url_and_plain_path_name_the_same_object(tmp_path):
    fs1, p1 = open_fs(str(tmp_path / "a"))
    fs2, p2 = open_fs(f"file://{tmp_path}/a")
    assert p1 == p2 and to_uri(fs1, p1) == str(tmp_path / "a")


def test_list_keys_globs_and_skips_manifest_and_temps(tmp_path):
    for k in ["a.png", "b.jpg", "sub/c.png", "sub/notes.txt", "_manifest/x.parquet", ".a.png.123.tmp"]:
        (tmp_path / k).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / k).write_bytes(b"x")
    fs, root = open_fs(str(tmp_path))
    assert list_keys(fs, root, ["*.png", "*.jpg"]) == ["a.png", "b.jpg", "sub/c.png"]
    assert list_keys(fs, root, ["*.png"], ["sub/*"]) == ["a.png"]


def test_read_limited_refuses_big_objects(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 100)
    fs, root = open_fs(str(tmp_path))
    assert read_limited(fs, f"{root}/big", 100) == b"x" * 100
    with pytest.raises(StorageError, match="limit"):
        read_limited(fs, f"{root}/big", 99)


def test_derived_key():
    assert derived_key("a/b.jpg", ".png") == "a/b.png"
    assert derived_key("a/b.PNG", ".png") == "a/b.PNG"
    assert derived_key("a/b.raw", ".png") == "a/b.raw.png"


def test_storage_config_holds_no_credentials_and_passes_retry_settings():
    assert not {"key", "secret", "token"} & set(StorageConfig.__dataclass_fields__)
    cfg = StorageConfig(endpoint_url="http://127.0.0.1:9", profile="archive", max_attempts=7, retry_mode="adaptive",
                        connect_timeout_s=2.5, read_timeout_s=9.0)
    opts = cfg.options("s3://bucket/x")
    assert opts["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9" and opts["profile"] == "archive"
    assert opts["config_kwargs"] == {"connect_timeout": 2.5, "read_timeout": 9.0,
                                     "retries": {"max_attempts": 7, "mode": "adaptive"}}
    assert "key" not in opts and "secret" not in opts
    assert cfg.options("/local/path") == {}


def test_s3_atomic_write_and_listing(s3_endpoint):
    from pipeline_fixtures import make_bucket

    make_bucket(s3_endpoint, "storage-test")
    cfg = StorageConfig(endpoint_url=s3_endpoint)
    fs, root = open_fs("s3://storage-test/pre", cfg)
    atomic_write(fs, join_key(root, "k/x.png"), b"data")
    fs.invalidate_cache()
    assert list_keys(fs, root) == ["k/x.png"]
    assert to_uri(fs, join_key(root, "k/x.png")) == "s3://storage-test/pre/k/x.png"
    assert fs.cat_file(join_key(root, "k/x.png")) == b"data"


def test_list_images_lists_one_folder_level_or_one_file(tmp_path):
    from irn_batch.storage import NoSuchFolder, list_images

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("b.PNG", "a.jpg", "notes.txt", "sub/c.png"):
        (tmp_path / "d" / name).write_bytes(b"x")
    d = str(tmp_path / "d")
    assert list_images(d) == [f"{d}/a.jpg", f"{d}/b.PNG"]
    assert list_images(f"{d}/notes.txt") == [f"{d}/notes.txt"]
    with pytest.raises(NoSuchFolder, match="no such folder or prefix"):
        list_images(f"{d}/notes.txt", single=False)
    for single in (True, False):
        with pytest.raises(StorageError):
            list_images(str(tmp_path / "nope"), single=single)
        with pytest.raises(FileNotFoundError):
            list_images(str(tmp_path / "nope"), single=single)
