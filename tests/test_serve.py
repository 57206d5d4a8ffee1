"""The on-demand restore service: a real Ray Serve app on the local test Ray, over an ingest output made by
the real ingest job, answering real HTTP on loopback; and ``irn-batch serve`` as a user starts it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from irn_batch.io.decode import decode_image
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.restore import run_restore
from irn_batch.settings import load_config
from pipeline_fixtures import free_port, png_bytes, smooth_image

pytest_plugins = ["pipeline_fixtures"]
KEYS = ["a.png", "b/c.png", "été/photo 1.png", "tamper.png"]


def get(url: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def url_of(base: str, key: str, route: str = "images", query: str = "") -> str:
    return f"{base}/v1/{route}/{urllib.parse.quote(key)}" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, ray_session, tiny_ckpt_path):
    root = tmp_path_factory.mktemp("serve")
    for i, key in enumerate(KEYS):
        path = root / "raw" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(smooth_image(24 + 4 * i, 30, seed=40 + i)))
    common = [f"model={tiny_ckpt_path}", "actors.pool_size=1"]
    summary = run_ingest(load_config(IngestConfig, None, [f"input={root / 'raw'}", f"output={root / 'lr'}",
                                                          *common]))
    assert summary["ok"] == len(KEYS)
    return root, common


@pytest.fixture(scope="module")
def service(archive, tiny_ckpt_path, other_ckpt_path):
    from ray import serve

    from irn_batch.serve.app import ServeConfig, run_app

    root, _ = archive
    port = free_port()
    cfg = ServeConfig(input=str(root / "lr"), model=str(tiny_ckpt_path), num_cpus=0.5)
    base = run_app(cfg, port=port)
    other = run_app(ServeConfig(input=str(root / "lr"), model=str(other_ckpt_path), num_cpus=0.5), port=port,
                    name="other", route_prefix="/other")
    yield base, other
    serve.shutdown()


def test_a_served_image_is_the_restore_jobs_image_byte_for_byte(archive, service):
    root, common = archive
    base, _ = service
    for fmt, query in (("source", ""), ("webp", "format=webp&quality=80")):
        out = root / f"hr_{fmt}"
        over = [f"format={fmt}", "quality=80"] if fmt == "webp" else []
        run_restore(load_config(RestoreConfig, None, [f"input={root / 'lr'}", f"output={out}", *over, *common]))
        for key in KEYS[:3]:
            status, headers, body = get(url_of(base, key, query=query))
            assert status == 200, body
            want = (out / key).with_suffix(".webp") if fmt == "webp" else out / key
            assert body == want.read_bytes(), key
            assert headers["content-type"] == ("image/webp" if fmt == "webp" else "image/png")


def test_etag_gives_304_head_gives_headers_and_the_response_is_immutable(service):
    base, _ = service
    status, headers, body = get(url_of(base, "a.png"))
    etag = headers["etag"]
    assert status == 200 and etag.startswith('"') and headers["cache-control"].endswith("immutable")
    assert get(url_of(base, "a.png"), {"If-None-Match": etag})[0] == 304
    assert get(url_of(base, "a.png", query="format=webp"), {"If-None-Match": etag})[0] == 200  # other settings
    status, headers, head = get(url_of(base, "a.png"), method="HEAD")
    assert status == 200 and head == b"" and int(headers["content-length"]) == len(body)


def test_thumbnail_is_the_stored_lr_and_info_says_what_the_image_is(archive, service):
    root, _ = archive
    base, _ = service
    status, headers, body = get(url_of(base, "b/c.png", "thumbnails"))
    assert status == 200 and body == (root / "lr" / "b" / "c.png").read_bytes()
    assert headers["content-type"] == "image/png"
    status, _, body = get(url_of(base, "b/c.png") + "/info")
    info = json.loads(body)
    assert status == 200 and info["key"] == "b/c.png" and (info["width"], info["height"]) == (30, 28)
    assert info["lr"]["width"] == 30 and info["lr"]["scale"] == 2
    assert str(root) not in body.decode()  # no storage locations


def test_keys_are_listed_in_pages(service):
    base, _ = service
    seen, after = [], None
    while True:
        query = "limit=2" + (f"&after={urllib.parse.quote(after)}" if after else "")
        page = json.loads(get(f"{base}/v1/images?{query}")[2])
        seen += page["keys"]
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(KEYS)
    assert json.loads(get(f"{base}/v1/images?prefix=b/")[2])["keys"] == ["b/c.png"]


def test_a_unicode_key_is_served_and_decodes_to_its_original_size(service):
    base, _ = service
    status, _, body = get(url_of(base, "été/photo 1.png"))
    img = decode_image(body)
    assert status == 200 and (img.width, img.height) == (30, 32)


@pytest.mark.parametrize("path, status, words", [
    ("/v1/images/nope.png", 404, "nope.png: no such image"),
    ("/v1/nowhere", 404, "no such route"),
    ("/v1/images/a.png?format=bmp", 400, "format must be one of"),
    ("/v1/images/a.png?quality=0", 400, "quality must be within 1..100"),
    ("/v1/images/a.png?quality=x", 400, "quality must be an integer"),
    ("/v1/images?limit=100000", 400, "limit must be within"),
])
def test_errors_are_json_with_their_status(service, path, status, words):
    base, _ = service
    got, headers, body = get(base + path)
    assert got == status and headers["content-type"] == "application/json"
    assert words in json.loads(body)["error"]


def test_accept_header_picks_a_container_the_client_takes(service):
    base, _ = service
    status, headers, body = get(url_of(base, "a.png"), {"Accept": "image/webp,image/jpeg"})
    assert status == 200 and headers["content-type"] == "image/webp" and body[8:12] == b"WEBP"
    assert headers["vary"] == "Accept"
    assert get(url_of(base, "a.png"), {"Accept": "text/html"})[0] == 406
    assert get(url_of(base, "a.png"), method="POST")[0] == 405


def test_an_lr_made_by_another_model_is_409(service, tiny_ckpt_path):
    _, other = service
    status, _, body = get(url_of(other, "a.png"))
    assert status == 409 and "the LR was made by model" in json.loads(body)["error"]


def test_an_lr_whose_pixels_changed_is_never_restored(archive, service):
    root, _ = archive
    base, _ = service
    lr = root / "lr" / "tamper.png"
    from irn_batch.io.lr_file import read_lr, write_lr

    meta, img = read_lr(lr.read_bytes())
    pixels = (img.rgb * 255).round().astype("uint8")
    pixels[0, 0] ^= 0x40
    lr.write_bytes(write_lr(pixels, meta))
    status, _, body = get(url_of(base, "tamper.png"))
    assert status == 500 and "tamper.png" in json.loads(body)["error"]
    assert "pixels changed since ingest" in json.loads(body)["error"]


def test_resized_views_fit_within_and_come_from_the_lr_when_small_enough(service):
    base, _ = service
    before = _health(base)["restores"]
    status, headers, body = get(url_of(base, "a.png", query="width=10"))  # 30x24, LR 15x12
    assert status == 200 and headers["content-type"] == "image/png"
    assert decode_image(body).width == 10 and decode_image(body).height == 8
    assert _health(base)["restores"] == before  # from the LR: the network did not run
    status, headers, body = get(url_of(base, "a.png", query="height=20&format=webp"))
    assert status == 200 and (decode_image(body).width, decode_image(body).height) == (25, 20)
    assert _health(base)["restores"] == before + 1  # larger than the LR: from the restore
    etag = headers["etag"]
    assert get(url_of(base, "a.png", query="height=20&format=webp"), {"If-None-Match": etag})[0] == 304
    assert etag != get(url_of(base, "a.png", query="height=21&format=webp"))[1]["etag"]
    full = get(url_of(base, "a.png"))[2]
    assert get(url_of(base, "a.png", query="width=1000"))[2] == full  # never enlarged: the full image
    for query, words in (("width=0", "width must be within 1..16384"), ("height=99999", "height must be within")):
        status, _, body = get(url_of(base, "a.png", query=query))
        assert status == 400 and words in json.loads(body)["error"]


def test_the_restored_pixel_limit_is_a_400_naming_it(archive, service, tiny_ckpt_path):
    from ray import serve

    from irn_batch.serve.app import ServeConfig, run_app

    root, _ = archive
    port = int(service[0].rsplit(":", 1)[1])
    small = run_app(ServeConfig(input=str(root / "lr"), model=str(tiny_ckpt_path), num_cpus=0.5,
                                max_restore_pixels=500), port=port, name="small", route_prefix="/small")
    try:
        status, _, body = get(url_of(small, "a.png"))
        assert status == 400 and "over the service's limit of 500 restored pixels" in json.loads(body)["error"]
        assert get(url_of(small, "a.png", "thumbnails"))[0] == 200  # the LR itself needs no restore
    finally:
        serve.delete("small")


def _health(base: str) -> dict:
    return json.loads(get(f"{base}/healthz")[2])


def test_a_cached_response_is_byte_identical_and_skips_the_restore(service):
    base, _ = service
    url = url_of(base, "b/c.png", query="format=png")
    first = get(url)[2]
    before = _health(base)
    assert get(url)[2] == first
    after = _health(base)
    assert after["restores"] == before["restores"] and after["cache_hits"] == before["cache_hits"] + 1


def test_the_shared_cache_prefix_survives_a_restart_and_a_damaged_entry_is_a_miss(archive, service, tiny_ckpt_path):
    from ray import serve

    from irn_batch.serve.app import ServeConfig, run_app

    root, _ = archive
    port = int(service[0].rsplit(":", 1)[1])
    cfg = ServeConfig(input=str(root / "lr"), model=str(tiny_ckpt_path), num_cpus=0.5, cache_bytes=0,
                      cache_prefix=str(root / "cache"))
    shared = run_app(cfg, port=port, name="shared", route_prefix="/shared")
    fresh = get(url_of(shared, "a.png"))[2]
    assert len(list((root / "cache").iterdir())) == 1
    serve.delete("shared")
    shared = run_app(cfg, port=port, name="shared", route_prefix="/shared")  # a new replica, empty memory
    assert get(url_of(shared, "a.png"))[2] == fresh and _health(shared)["restores"] == 0
    entry = next((root / "cache").iterdir())
    entry.write_bytes(b"damaged")
    assert get(url_of(shared, "a.png"))[2] == fresh and _health(shared)["restores"] == 1
    serve.delete("shared")


def test_a_cache_prefix_inside_the_archive_is_refused(archive):
    from irn_batch.serve.app import ServeConfig, _refuse_cache_in_archive

    root, _ = archive
    with pytest.raises(ValueError, match="is inside the archive it serves"):
        _refuse_cache_in_archive(ServeConfig(input=str(root / "lr"), cache_prefix=str(root / "lr" / "cache")))


def test_tokens_and_signed_urls(archive, service, tiny_ckpt_path):
    from ray import serve

    from irn_batch.serve.app import ServeConfig, deployment
    from irn_batch.serve.auth import TOKENS_ENV, sign

    root, _ = archive
    port = int(service[0].rsplit(":", 1)[1])
    cfg = ServeConfig(input=str(root / "lr"), model=str(tiny_ckpt_path), num_cpus=0.5)
    app = deployment(cfg).options(ray_actor_options={"num_cpus": 0.5, "runtime_env": {
        "env_vars": {TOKENS_ENV: "old-token, new-token"}}}).bind(cfg)
    serve.run(app, name="auth", route_prefix="/auth")
    base = f"http://127.0.0.1:{port}/auth"
    try:
        assert get(f"{base}/healthz")[0] == 200  # health stays open for probes
        status, headers, body = get(url_of(base, "a.png"))
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert get(url_of(base, "a.png"), {"Authorization": "Bearer nope"})[0] == 401
        for token in ("old-token", "new-token"):  # both valid while clients rotate
            assert get(url_of(base, "a.png"), {"Authorization": f"Bearer {token}"})[0] == 200
        signed = sign("/v1/images/a.png", {"format": "webp"}, "old-token")
        status, headers, _ = get(base + signed)
        assert status == 200 and headers["content-type"] == "image/webp"
        assert get(base + signed.replace("format=webp", "format=png"))[0] == 403  # other parameters
        assert get(base + sign("/v1/images/a.png", None, "old-token", ttl_s=-5))[0] == 403  # expired
        assert get(base + sign("/v1/images/a.png", None, "forged"))[0] == 403
        assert "token" not in get(base + sign("/v1/images/a.png", None, "forged"))[2].decode().replace(
            "bearer token", "")
    finally:
        serve.delete("auth")


def test_irn_batch_serve_prints_its_url_and_answers(archive, tiny_ckpt_path, test_env):
    """The one-command way, as a user runs it: its own embedded Ray, the URL on one line, Ctrl-C stops it."""
    root, _ = archive
    port = free_port()
    env = {**os.environ, **test_env}
    proc = subprocess.Popen([sys.executable, "-m", "irn_batch", "serve", str(root / "lr"), "--port", str(port),
                             "--set", f"model={tiny_ckpt_path}", "--set", "num_cpus=0.5"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=Path(__file__).parents[1])
    try:
        line = proc.stdout.readline().strip()
        assert line == f"http://127.0.0.1:{port}", line
        status, _, body = get(f"{line}/healthz")
        assert status == 200 and json.loads(body)["keys"] == len(KEYS)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_shipped_serve_configs_are_valid_settings():
    """configs/serve.yaml and the RayService's serveConfigV2 name the app builder with settings it takes."""
    import yaml

    from irn_batch.serve.app import ServeConfig, _dotlist, build_app
    from irn_batch.settings import load_config

    root = Path(__file__).parents[1] / "configs"
    serve_cfg = yaml.safe_load((root / "serve.yaml").read_text())
    service = yaml.safe_load((root / "kuberay" / "rayservice.yaml").read_text())
    for app in serve_cfg["applications"] + yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]:
        assert app["import_path"] == "irn_batch.serve.app:build_app"
        cfg = load_config(ServeConfig, None, _dotlist(app["args"]))
        assert cfg.input == app["args"]["input"] and cfg.max_queued_requests == 32
        build_app(app["args"])  # binds the deployment without starting it
    with pytest.raises(ValueError, match="secret_access_key"):
        build_app({"input": "s3://x/lr", "storage": {"secret_access_key": "abc"}})


def test_the_index_picks_up_a_later_ingest_into_the_same_output(tmp_path, ray_session, service, tiny_ckpt_path):
    import time

    from ray import serve

    from irn_batch.serve.app import ServeConfig, run_app

    raw, out = tmp_path / "raw", tmp_path / "lr"
    raw.mkdir()
    (raw / "first.png").write_bytes(png_bytes(smooth_image(20, 24, seed=60)))
    # half a CPU: the apps of this module hold the rest of the test Ray's two
    common = [f"input={raw}", f"output={out}", f"model={tiny_ckpt_path}", "actors.pool_size=1",
              "actors.num_cpus=0.5"]
    run_ingest(load_config(IngestConfig, None, common))
    port = int(service[0].rsplit(":", 1)[1])
    # no CPU reserved: the ingest below needs a whole one of the test Ray's two for its planning task
    base = run_app(ServeConfig(input=str(out), model=str(tiny_ckpt_path), num_cpus=0, refresh_s=0.5), port=port,
                   name="refresh", route_prefix="/refresh")
    try:
        assert json.loads(get(f"{base}/v1/images")[2])["keys"] == ["first.png"]
        (raw / "second.png").write_bytes(png_bytes(smooth_image(22, 26, seed=61)))
        run_ingest(load_config(IngestConfig, None, common))  # a new manifest part
        deadline = time.monotonic() + 60
        while json.loads(get(f"{base}/v1/images")[2])["keys"] != ["first.png", "second.png"]:
            assert time.monotonic() < deadline, "the index never saw the second ingest"
            assert get(url_of(base, "first.png"))[0] == 200  # served throughout
            time.sleep(0.5)
        assert decode_image(get(url_of(base, "second.png"))[2]).width == 26
    finally:
        serve.delete("refresh")
