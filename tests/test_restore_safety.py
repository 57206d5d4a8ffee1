"""Issue 13 A: a restore never destroys, archives relocate, verify checks every object, bare prefixes find
their models. Every storage case runs on the local disk and on the loopback S3 server, with a real Ray."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from irn_batch.model.checkpoint import load_checkpoint
from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.entry import job_main
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.restore import NOT_OURS, RestoreError, run_restore
from irn_batch.pipeline.verify import verify
from irn_batch.rescale import restore_image
from irn_batch.storage import REPLACE_ANY, ObjectExists, StorageConfig, open_fs, sha256_hex, write_guarded

pytest_plugins = ["pipeline_fixtures"]
ROOT = Path(__file__).resolve().parents[1]


class Site:
    """One store: the local disk under a temp folder, or a bucket on the moto server."""

    def __init__(self, kind: str, base: str, endpoint: str | None):
        self.kind, self.base, self.endpoint = kind, base, endpoint
        self.storage = StorageConfig(endpoint_url=endpoint)
        self.fs, _ = open_fs(base if kind == "local" else "s3://safety", self.storage)

    def uri(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def path(self, rel: str) -> str:
        return open_fs(self.uri(rel), self.storage)[1]

    def read(self, rel: str) -> bytes:
        self.fs.invalidate_cache()
        return self.fs.cat_file(self.path(rel))

    def write(self, rel: str, data: bytes) -> None:
        if self.kind == "local":
            os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
        self.fs.pipe_file(self.path(rel), data)

    def exists(self, rel: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.exists(self.path(rel))

    def copy(self, src: str, dst: str) -> None:
        self.fs.invalidate_cache()
        for p in self.fs.find(self.path(src)):
            self.write(dst + p[len(self.path(src)):], self.fs.cat_file(p))

    def remove(self, rel: str) -> None:
        self.fs.invalidate_cache()
        self.fs.rm(self.path(rel), recursive=True)
        self.fs.invalidate_cache()

    def common(self, ckpt) -> list[str]:
        return [f"model={ckpt}", "actors.pool_size=1", "actors.batch_size=2",
                *([f"storage.endpoint_url={self.endpoint}"] if self.endpoint else [])]

    def rows(self, rel: str) -> list[dict]:
        self.fs.invalidate_cache()
        return read_manifest(self.fs, self.path(rel)).to_pylist()


@pytest.fixture(scope="module", params=["local", "s3"])
def site(request, ray_session, tmp_path_factory, tiny_ckpt_path):
    """A store holding originals (in/), their ingest archive (lr/, with _manifest) and that ingest's cfg."""
    from pipeline_fixtures import make_bucket, write_images

    if request.param == "local":
        s = Site("local", str(tmp_path_factory.mktemp("safety")), None)
        write_images(s.base + "/in", n=3)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        make_bucket(endpoint, "safety")
        s = Site("s3", "s3://safety", endpoint)
        write_images("safety/in", fs=s.fs, n=3)
    run_ingest(load_config(IngestConfig, None, [f"input={s.uri('in')}", f"output={s.uri('lr')}",
                                                *s.common(tiny_ckpt_path)]))
    s.keys = ["img00.png", "img02.png", "sub/img01.png"]
    return s


def _restore(site, ckpt, inp, out, *extra):
    return run_restore(load_config(RestoreConfig, None, [f"input={inp}", f"output={out}", *site.common(ckpt), *extra]))


def _snapshot(site, rel, keys):
    return {k: site.read(f"{rel}/{k}") for k in keys}


def test_a_restore_refuses_outputs_over_its_inputs(site, tiny_ckpt_path, capsys):
    originals, lrs = _snapshot(site, "in", site.keys), _snapshot(site, "lr", site.keys)
    cases = {site.uri("in"): "is the source location", site.uri("lr"): "is the input",
             site.uri("lr/restored"): "is inside the input", site.uri("in/sub"): "is inside the source location",
             site.base: "contains the input", site.uri("lr/_manifest"): "is inside the input"}
    for out, why in cases.items():
        with pytest.raises(RestoreError, match=why):
            _restore(site, tiny_ckpt_path, site.uri("lr"), out)
    # the manifest folder is checked too, and the bare-prefix input (the LR folder itself)
    with pytest.raises(RestoreError, match="manifest=.* is inside the input"):
        _restore(site, tiny_ckpt_path, site.uri("lr"), site.uri("elsewhere"), f"manifest={site.uri('lr/_manifest')}")
    with pytest.raises(RestoreError, match="is inside the input"):
        _restore(site, tiny_ckpt_path, site.uri("lr/sub"), site.uri("lr/sub/x"))
    # the job entry: one line, exit 2
    capsys.readouterr()
    assert job_main("restore", ROOT / "configs" / "restore.yaml",
                    [f"input={site.uri('lr')}", f"output={site.uri('in')}", *site.common(tiny_ckpt_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("restore: error: output=") and "never writes there" in err[0]
    assert _snapshot(site, "in", site.keys) == originals and _snapshot(site, "lr", site.keys) == lrs
    assert not site.exists("lr/restored") and not site.exists("in/_manifest")


def test_an_output_holding_another_ingest_manifest_is_refused(site, tiny_ckpt_path):
    site.copy("lr/_manifest", "foreign/_manifest")  # some other ingest's output
    site.fs.invalidate_cache()
    before = sorted(site.fs.find(site.path("foreign")))
    with pytest.raises(RestoreError, match="holds an ingest manifest"):
        _restore(site, tiny_ckpt_path, site.uri("lr"), site.uri("foreign"))
    site.fs.invalidate_cache()
    assert sorted(site.fs.find(site.path("foreign"))) == before  # not even a probe object is left


def test_a_users_file_is_an_error_row_overwrite_replaces_it_and_reruns_replace_their_own(site, tiny_ckpt_path):
    mine = b"the user's own file"
    site.write("hr/img00.png", mine)
    s = _restore(site, tiny_ckpt_path, site.uri("lr"), site.uri("hr"))
    assert (s["ok"], s["error"]) == (2, 1)
    row = next(r for r in site.rows("hr/_manifest") if r["key"] == "img00.png")
    assert row["status"] == "error" and site.uri("hr/img00.png") in row["error"] and NOT_OURS in row["error"]
    assert site.read("hr/img00.png") == mine  # untouched
    # a plain rerun: the restores are intact (skipped), the user's file still refused
    s = _restore(site, tiny_ckpt_path, site.uri("lr"), site.uri("hr"))
    assert (s["ok"], s["error"], s["skipped"]) == (0, 1, 2) and site.read("hr/img00.png") == mine
    s = _restore(site, tiny_ckpt_path, site.uri("lr"), site.uri("hr"), "overwrite=true")
    assert (s["ok"], s["error"], s["skipped"]) == (1, 0, 2) and site.read("hr/img00.png") != mine
    before = _snapshot(site, "hr", site.keys)
    # other settings over its own earlier restores: replaced, no overwrite needed
    s = _restore(site, tiny_ckpt_path, site.uri("lr"), site.uri("hr"), "temperature=0.5")
    assert (s["ok"], s["error"]) == (3, 0)
    after = _snapshot(site, "hr", site.keys)
    assert all(after[k] != before[k] for k in site.keys)
    res = verify(site.uri("hr"), site.storage, out=io.StringIO())
    assert (res["checked"], res["problems"], res["superseded"]) == (3, 0, 3)
    # --all also checks the superseded rows: their bytes are gone, and it says so
    res = verify(site.uri("hr"), site.storage, out=io.StringIO(), all_rows=True)
    assert res["checked"] == 6 and res["problems"] == 3


def test_verify_reports_a_row_whose_object_changed(site, tiny_ckpt_path):
    s = _restore(site, tiny_ckpt_path, site.uri("lr"), site.uri("hr_tamper"))
    assert s["ok"] == 3
    site.write("hr_tamper/sub/img01.png", b"other bytes")
    out = io.StringIO()
    res = verify(site.uri("hr_tamper"), site.storage, out=out)
    assert res["problems"] == 1 and res["problem_list"][0][0] == site.uri("hr_tamper/sub/img01.png")


def _check_rows_agree(site, rel):
    """Every ok row's object holds its recorded bytes unless a later ok row claims the object."""
    rows = [r for r in site.rows(f"{rel}/_manifest") if r["status"] == "ok"]
    for r in rows:
        later = [x for x in rows if x["out_uri"] == r["out_uri"] and x["finished_at"] > r["finished_at"]]
        got = sha256_hex(site.read(r["out_uri"].removeprefix(site.base + "/")))
        assert got == r["out_sha256"] or later, r
    return rows


def test_concurrent_restores_with_other_settings_never_leave_a_row_disagreeing(site, tiny_ckpt_path):
    """Two drivers at once (subprocesses on this test's Ray cluster), other temperatures, one output."""
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "jobs" / "restore.py"), f"input={site.uri('lr')}",
                               f"output={site.uri('race')}", f"temperature={t}", "progress_s=0.5",
                               *site.common(tiny_ckpt_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for t in (0.3, 0.9)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    rows = _check_rows_agree(site, "race")
    assert {r["key"] for r in rows} == set(site.keys)
    errors = [r for r in site.rows("race/_manifest") if r["status"] == "error"]
    assert all(site.uri("race/") in r["error"] and " not" in r["error"] for r in errors)  # a lost race: a row
    print(f"race [{site.kind}]: {len(rows)} ok rows, {len(errors)} lost races:",
          sorted((r["job_id"][-8:], r["key"], r["status"]) for r in site.rows("race/_manifest")))
    assert verify(site.uri("race"), site.storage, out=io.StringIO())["problems"] == 0


def test_no_clobber_writes_race_on_one_path(site):
    """Eight writers create one object at once: exactly one succeeds; replace only over the named bytes."""
    fs, path = open_fs(site.uri("guard/one.bin"), site.storage)
    results, barrier = [], threading.Barrier(8)

    def write(i):
        barrier.wait()
        try:
            results.append(write_guarded(fs, path, f"writer {i}".encode()))
        except ObjectExists:
            results.append("refused")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created"] + ["refused"] * 7
    winner = site.read("guard/one.bin")
    with pytest.raises(ObjectExists):
        write_guarded(fs, path, b"x", replace=sha256_hex(b"not what is there"))
    assert site.read("guard/one.bin") == winner
    assert write_guarded(fs, path, b"next", replace=sha256_hex(winner)) == "replaced"
    assert write_guarded(fs, path, b"any", replace=REPLACE_ANY) == "replaced" and site.read("guard/one.bin") == b"any"
    assert not [p for p in fs.find(site.path("guard")) if p.endswith(".tmp")]


def test_racing_replacements_of_one_object_leave_one_winner(site):
    """Eight writers replace the same earlier object at once: one replaces it, the others are refused,
    and the object holds the winner's bytes (nothing displaced, no temp objects left)."""
    fs, path = open_fs(site.uri("guard/two.bin"), site.storage)
    for rnd in range(3):
        site.write("guard/two.bin", b"earlier restore")
        results, barrier = {}, threading.Barrier(8)

        def write(i):
            barrier.wait()
            try:
                results[i] = write_guarded(fs, path, f"writer {i}".encode(), replace=sha256_hex(b"earlier restore"))
            except ObjectExists:
                results[i] = "refused"

        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, r in results.items() if r == "replaced"]
        assert len(winners) == 1 and sorted(results.values()).count("refused") == 7, results
        assert site.read("guard/two.bin") == f"writer {winners[0]}".encode()
    site.fs.invalidate_cache()
    assert {p.rsplit("/", 1)[-1] for p in fs.find(site.path("guard"))} <= {"one.bin", "two.bin"}


def _archive(site, name):
    """A private copy of the fixture's archive (its manifest names lr/ absolutely... and relatively)."""
    site.copy("lr", name)
    return name


def _old_style(site, rel):
    """Rewrite a manifest as older versions wrote it: no lr_key column, absolute lr_uri of ``rel``."""
    for p in site.fs.find(site.path(f"{rel}/_manifest")):
        with site.fs.open(p, "rb") as f:
            table = pq.read_table(f)
        assert table["lr_uri"].to_pylist()[0].startswith(site.uri("lr/"))
        uris = [u.replace(site.uri("lr/"), site.uri(f"{rel}/")) if u else u for u in table["lr_uri"].to_pylist()]
        import pyarrow as pa

        table = table.drop_columns(["lr_key"])
        table = table.set_column(table.column_names.index("lr_uri"), "lr_uri", pa.array(uris, pa.string()))
        buf = io.BytesIO()
        pq.write_table(table, buf)
        site.fs.pipe_file(p, buf.getvalue())


@pytest.mark.parametrize("old_manifest", [False, True], ids=["lr_key", "absolute-only"])
def test_a_copied_archive_restores_and_verifies_where_it_is(site, tiny_ckpt_path, old_manifest):
    tag = "old" if old_manifest else "new"
    a = _archive(site, f"arch_{tag}")
    if old_manifest:
        _old_style(site, a)
        assert "lr_key" not in pq.read_schema(site.fs.open(site.fs.find(site.path(f"{a}/_manifest"))[0])).names
        # in place, an old manifest restores as before
        assert _restore(site, tiny_ckpt_path, site.uri(a), site.uri(f"hr_inplace_{tag}"))["ok"] == 3
    site.copy(a, f"{a}_copy")
    # the old archive is altered after the copy: reading it would fail every LR's checksum
    for k in site.keys:
        site.write(f"{a}/{k}", b"not an LR any more")
    s = _restore(site, tiny_ckpt_path, site.uri(f"{a}_copy"), site.uri(f"hr_{tag}"))
    assert (s["ok"], s["error"]) == (3, 0)
    rows = site.rows(f"hr_{tag}/_manifest")
    assert {r["lr_uri"] for r in rows} == {site.uri(f"{a}_copy/{k}") for k in site.keys}
    # an ingest rerun into the copy finds the copy's LRs intact (it checks them there, not at the old place)
    s = run_ingest(load_config(IngestConfig, None, [f"input={site.uri('in')}", f"output={site.uri(a + '_copy')}",
                                                    *site.common(tiny_ckpt_path)]))
    assert (s["skipped"], s["ok"], s["error"]) == (3, 0, 0)
    out = io.StringIO()
    res = verify(site.uri(f"{a}_copy"), site.storage, out=out)
    assert (res["checked"], res["problems"]) == (3, 0) and out.getvalue().count(f"{a}_copy/") == 3
    assert site.uri(f"{a}/") not in out.getvalue()
    # the old one gone entirely: the copy still restores; a change in the copy is found in the copy
    site.remove(a)
    assert _restore(site, tiny_ckpt_path, site.uri(f"{a}_copy"), site.uri(f"hr2_{tag}"))["ok"] == 3
    site.write(f"{a}_copy/img02.png", b"changed")
    res = verify(site.uri(f"{a}_copy"), site.storage, out=io.StringIO())
    size = next(r["lr_bytes"] for r in site.rows(f"{a}_copy/_manifest") if r["key"] == "img02.png")
    assert res["problem_list"] == [(site.uri(f"{a}_copy/img02.png"), f"size 7 != recorded {size}")]
    # a restore output relocates too: its verify checks the copy's objects
    site.copy(f"hr_{tag}", f"hr_{tag}_moved")
    site.remove(f"hr_{tag}")
    out = io.StringIO()
    res = verify(site.uri(f"hr_{tag}_moved"), site.storage, out=out)
    assert (res["checked"], res["problems"]) == (3, 0) and out.getvalue().count(f"hr_{tag}_moved/") == 3


def test_a_bare_prefix_restores_each_lr_with_its_own_model(site):
    """LRs of two shipped models (plain and compression-aware x2) in one folder without a manifest."""
    from irn_batch.model.checkpoint import default_weights_path

    common = ["actors.pool_size=1", "actors.batch_size=1",
              *([f"storage.endpoint_url={site.endpoint}"] if site.endpoint else [])]
    for fmt in ("png", "webp"):
        run_ingest(load_config(IngestConfig, None, [f"input={site.uri('in')}", f"output={site.uri('two_' + fmt)}",
                                                    f"lr.format={fmt}", 'keys=["img00.png"]', *common]))
    site.write("bare/a.png", site.read("two_png/img00.png"))
    site.write("bare/b.webp", site.read("two_webp/img00.webp"))
    site.write("bare/c.png", site.read("lr/img02.png"))  # made by the tests' tiny weights: not shipped
    s = run_restore(load_config(RestoreConfig, None, [f"input={site.uri('bare')}", f"output={site.uri('bare_hr')}",
                                                      *common]))
    plain, lossy = (load_checkpoint(default_weights_path(2, lossy=x)) for x in (False, True))
    assert (s["ok"], s["error"]) == (2, 1) and set(s["model_id"].split(", ")) == {plain.model_id, lossy.model_id}
    rows = {r["key"]: r for r in site.rows("bare_hr/_manifest")}
    assert rows["c.png"]["status"] == "error" and "not among the shipped weights" in rows["c.png"]["error"]
    assert rows["a.png"]["model_id"] == plain.model_id and rows["b.webp"]["model_id"] == lossy.model_id
    for key, ckpt, out in (("a.png", plain, "bare_hr/a.png"), ("b.webp", lossy, "bare_hr/b.png")):
        got = np.asarray(Image.open(io.BytesIO(site.read(out))))
        assert np.array_equal(got, restore_image(ckpt, site.read(f"bare/{key}")))


def test_overlap_and_relocation_rules(tmp_path):
    from irn_batch.pipeline import locate

    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert locate.overlap(str(tmp_path / "link" / "x"), str(tmp_path / "real")) == "is inside"  # symlinks resolved
    assert locate.overlap("s3://b/a", "s3a://b/a/") == "is" and locate.overlap("s3://b/ab", "s3://b/a") is None
    assert locate.overlap("s3://b", "s3://b/a") == "contains" and locate.overlap("/b/a", "s3://b/a") is None
    # a recorded relative key wins; an older row's URI keeps as many last components as its key has
    uris, errs = locate.relocate(["s3://old/x/sub/a.png", "s3://old/x/b.webp", "s3://old/x/c.png"],
                                 ["sub/a.png", "b.jpg", "c.png"], [None, None, "../c.png"], "s3://new/y")
    assert uris[:2] == ["s3://new/y/sub/a.png", "s3://new/y/b.webp"] and errs[:2] == [None, None]
    assert uris[2] is None and errs[2].startswith("key: recorded location '../c.png'")
    assert locate.relocate(["/a/b.png"], ["b.png"], [None], None) == (["/a/b.png"], [None])
