"""Secrets never travel on a command line and never reach a log, a manifest, an LR object or `ray job list`.

Credentials are distinctive strings given only through the environment: of the driver (embedded Ray), or of
a real Ray head while the job is submitted from an environment without them. Everything a job leaves
behind is then searched for them. A credential given as a setting is refused before anything is logged.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import SecretSettingError, load_config
from irn_batch.storage import secret_setting

pytest_plugins = ["pipeline_fixtures"]
ROOT = Path(__file__).resolve().parents[1]
# made per run, so that no file of the repository (which `ray job submit --working-dir` uploads) holds them
KEY_ID = "AKIA" + uuid.uuid4().hex[:16].upper()
SECRET = "irnSecret+" + uuid.uuid4().hex + "/" + uuid.uuid4().hex[:8]
TOKEN = "irnSessionToken" + uuid.uuid4().hex
CREDS = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
NEEDLES = [KEY_ID.encode(), SECRET.encode(), TOKEN.encode()]


def _without_creds(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("AWS_") or k in ("AWS_DEFAULT_REGION",)}


def _leaks_in_tree(root: str | Path) -> list[str]:
    """Files under ``root`` whose bytes contain any credential (Ray's session logs, spill files, ...)."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except OSError:  # sockets, files removed meanwhile
                continue
            if any(n in data for n in NEEDLES):
                found.append(p)
    return found


def _leaks_in_bucket(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return [p for p in fs.find(prefix) if any(n in fs.cat_file(p) for n in NEEDLES)]


def _assert_clean(text: str) -> None:
    for n in NEEDLES:
        assert n.decode() not in text


@pytest.mark.parametrize("setting", [
    "storage.key=AKIA0000", "storage.secret=abc", "storage.token=abc", "storage.aws_secret_access_key=abc",
    "storage.password=abc", "data.storage.session_token=abc", "storage.endpoint_url=http://me:pw@127.0.0.1:9",
    "storage={secret: abc}",
])
def test_secret_looking_settings_are_refused_by_name_without_the_value(setting):
    name, value = setting.split("=", 1)
    if "{" not in value:
        assert secret_setting(["input=a", setting]) == name
    with pytest.raises(SecretSettingError) as e:
        load_config(IngestConfig, None, ["input=a", "output=b", setting])
    msg = str(e.value)
    assert msg.startswith(name) and "AWS_SECRET_ACCESS_KEY" in msg and "\n" not in msg
    assert (value if "{" not in value else "abc") not in msg


def test_ordinary_settings_are_not_mistaken_for_secrets():
    assert secret_setting(["keys=[a.png]", "include=['*.png']", "storage.endpoint_url=http://127.0.0.1:9",
                           "storage.profile=archive", "actors.batch_size=2", ("storage.secret", None)]) is None


def test_a_secret_in_the_yaml_config_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text(f"storage:\n  secret: {SECRET}\n")
    with pytest.raises(SecretSettingError, match="^storage.secret: ") as e:
        load_config(IngestConfig, tmp_path / "c.yaml", ["input=a", "output=b"])
    assert SECRET not in str(e.value)


def test_training_refuses_a_secret_override_too():
    from training.config import ConfigError, load_job_config

    with pytest.raises(ConfigError, match="data.storage.secret") as e:
        load_job_config(None, [f"data.storage.secret={SECRET}"])
    assert SECRET not in str(e.value)


def test_a_secret_override_is_refused_before_anything_is_logged_or_ray_starts(tmp_path):
    ray_tmp = tmp_path / "raytmp"
    ray_tmp.mkdir()
    env = dict(_without_creds(dict(os.environ)), RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "ingest.py"), f"input={tmp_path}/in",
                        f"output={tmp_path}/out", f"storage.secret={SECRET}"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "storage.secret" in r.stderr and "AWS_SECRET_ACCESS_KEY" in r.stderr
    _assert_clean(r.stderr)
    assert list(ray_tmp.iterdir()) == []  # no Ray session was started
    assert not (tmp_path / "out").exists()


def _ingest_args(bucket: str, endpoint: str, ckpt: Path) -> list[str]:
    return [f"input=s3://{bucket}/raw", f"output=s3://{bucket}/lr", f"model={ckpt}",
            f"storage.endpoint_url={endpoint}", "actors.pool_size=1"]


def test_embedded_ray_ingest_leaves_the_credentials_nowhere(s3_endpoint, tiny_ckpt_path):
    from pipeline_fixtures import make_bucket, write_images

    fs = make_bucket(s3_endpoint, "secrets-embedded")  # moto takes any credentials
    sizes = write_images("secrets-embedded/raw", fs=fs, n=3)
    ray_tmp = tempfile.mkdtemp(prefix="rse", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        env = dict(os.environ, **CREDS, RAY_TMPDIR=ray_tmp, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled")
        r = subprocess.run([sys.executable, str(ROOT / "jobs" / "ingest.py"),
                            *_ingest_args("secrets-embedded", s3_endpoint, tiny_ckpt_path)],
                           env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert re.search(rf"\n\s+ok\s+{len(sizes)}\n", r.stdout)
        _assert_clean(r.stdout + r.stderr)
        assert any(Path(ray_tmp).rglob("*.log")) or any(Path(ray_tmp).rglob("*.out"))  # the logs were searched
        assert _leaks_in_tree(ray_tmp) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert _leaks_in_bucket(fs, "secrets-embedded/lr") == []  # LR objects and manifest parts


def test_cluster_job_takes_credentials_from_the_nodes_not_the_submitter(test_env, s3_endpoint, tiny_ckpt_path):
    from pipeline_fixtures import make_bucket, write_images
    from ray_head import BIN, have_ray_cli, start_ray_head, submit

    if not have_ray_cli():
        pytest.skip("the ray CLI is not installed next to this Python")
    fs = make_bucket(s3_endpoint, "secrets-cluster")
    sizes = write_images("secrets-cluster/raw", fs=fs, n=3)
    plain = _without_creds(dict(os.environ))
    with start_ray_head(dict(plain, **CREDS)) as head:
        r = submit(head, "jobs/ingest.py", *_ingest_args("secrets-cluster", s3_endpoint, tiny_ckpt_path), env=plain)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "succeeded" in out, out[-4000:]
        assert re.search(rf"\n\s+ok\s+{len(sizes)}\n", out)
        listed = subprocess.run([str(BIN / "ray"), "job", "list", "--address", head["address"]],
                                env=dict(plain, PATH=head["env"]["PATH"]), capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0 and "jobs/ingest.py" in listed.stdout
        _assert_clean(out + listed.stdout + listed.stderr)
        assert any(Path(head["temp"]).rglob("job-driver-*.log"))  # the driver's log is among those searched
        assert _leaks_in_tree(head["temp"]) == []
    assert _leaks_in_bucket(fs, "secrets-cluster/lr") == []
