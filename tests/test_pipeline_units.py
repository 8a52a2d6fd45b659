"""Pipeline parts without Ray: sources, planning, shard files, restore safety, the CLI (--actors 0)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from conftest import photo_crop
from fsspec.implementations.local import LocalFileSystem
from PIL import Image
from pipeline_fixtures import EXPECTED_STATUS, TEST_MAX_PIXELS, make_dataset, make_small_pngs

from pipeline import shards
from pipeline.actors import webp_is_lossless
from pipeline.driver import compress, plan_shards
from pipeline.restore import cat, restore, verify
from pipeline.sources import SourceFile, UnsafeKeyError, check_key, list_sources, redact_url

UNSAFE_KEYS = ["", "/etc/passwd", "../x.png", "a/../../x.png", "a/./b.png", "a//b.png", "C:/x.png",
               "c:x.png", "a\\..\\x.png", "x\0.png", "..", "."]  # fmt: skip


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_check_key_rejects(key):
    with pytest.raises(UnsafeKeyError):
        check_key(key)


def test_check_key_accepts_plain_relative_paths():
    for key in ("a.png", "a/b c/d.PNG", "..a/b.png", "a..b.png", "ünï/cödé.png"):
        assert check_key(key) == key


def test_list_sources_forms_give_the_same_keys(tmp_path):
    make_dataset(tmp_path)
    expected = sorted(EXPECTED_STATUS)
    for src in (str(tmp_path), str(tmp_path) + "/", f"file://{tmp_path}"):
        listed = list_sources(src)
        assert [f.key for f in listed.files] == expected  # hidden files and README.txt left out
        assert all(f.size and f.mtime for f in listed.files)
    globbed = list_sources(f"{tmp_path}/a/*.png")
    assert [f.key for f in globbed.files] == ["gray.png", "palette.png", "rgb.png", "rgba.png"]
    deep = list_sources(f"{tmp_path}/**/*.png")
    assert "e/deep/nested/name with space.png" in [f.key for f in deep.files]
    single = list_sources(str(tmp_path / "c" / "photo.jpg"))
    assert [f.key for f in single.files] == ["photo.jpg"]
    only = list_sources(str(tmp_path), include=["*.jpg", "b/*"], exclude=["*.ppm"])
    assert [f.key for f in only.files] == ["b/image.bmp", "b/image.tif", "b/lossless.webp", "c/photo.jpg"]
    with pytest.raises(FileNotFoundError):
        list_sources(str(tmp_path / "missing"))


def test_redact_url_drops_credentials():
    assert redact_url("s3://AKIA:secret@bucket/p?X-Amz-Signature=abc#f") == "s3://bucket/p"
    assert redact_url("/plain/path") == "/plain/path"


def test_plan_is_deterministic_and_fingerprints_follow_content():
    files = [SourceFile(f"k{i:02d}.png", f"/x/k{i:02d}.png", 100 + i, None, 1.0) for i in range(10)]
    settings = {"codec": "bitswap"}
    a = plan_shards(list(reversed(files)), 4, settings)
    b = plan_shards(files, 4, settings)
    assert [p.name for p in a] == [p.name for p in b]
    assert [len(p.files) for p in a] == [4, 4, 2]
    assert [p.first_key for p in a] == ["k00.png", "k04.png", "k08.png"]
    changed = files[:5] + [SourceFile("k05.png", "/x/k05.png", 999, None, 1.0)] + files[6:]
    c = plan_shards(changed, 4, settings)
    assert [p.name == q.name for p, q in zip(a, c)] == [True, False, True]
    assert plan_shards(files, 4, {"codec": "bbans"})[0].name != a[0].name


def test_webp_lossless_detection():
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    lossless, lossy = io.BytesIO(), io.BytesIO()
    img.save(lossless, "WEBP", lossless=True)
    img.save(lossy, "WEBP", quality=50)
    assert webp_is_lossless(lossless.getvalue())
    assert not webp_is_lossless(lossy.getvalue())
    assert not webp_is_lossless(b"RIFF\0\0\0\0WEBPjunk")


def _rows(n: int, size: int) -> list[dict]:
    rows = []
    for i in range(n):
        payload = os.urandom(size)
        rows.append({c: None for c in shards.COLUMNS} | {
            "key": f"img-{i:03d}.bin", "payload": payload, "codec": "stored", "status": "stored",
            "original_bytes": size, "compressed_bytes": size,
            "file_sha256": hashlib.sha256(payload).hexdigest(),
        })  # fmt: skip
    return rows


class _CountingFS(LocalFileSystem):
    """Local filesystem that counts the bytes read through it."""

    bytes_read = 0

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        original = f.read

        def read(n=-1):
            data = original(n)
            _CountingFS.bytes_read += len(data)
            return data

        f.read = read
        return f


def test_one_image_is_read_without_reading_the_shard(tmp_path):
    rows = _rows(12, 200_000)
    data = shards.encode_shard(rows, {"index": 0})
    pf = pq.ParquetFile(io.BytesIO(data))
    assert pf.metadata.num_row_groups >= 3  # grouped by payload bytes, not one group per shard
    fs = fsspec.filesystem("file")
    name = shards.shard_name(0, "0" * 64)
    shards.write_atomic(fs, str(tmp_path), name, data)
    manifest = {"format": shards.ARCHIVE_FORMAT, "shards": [
        {"file": name, "first_key": rows[0]["key"], "last_key": rows[-1]["key"], "rows": 12}]}  # fmt: skip
    counting = _CountingFS(skip_instance_cache=True)
    _CountingFS.bytes_read = 0
    row = shards.read_row(counting, str(tmp_path), "img-007.bin", manifest)
    assert row["payload"] == rows[7]["payload"]
    assert _CountingFS.bytes_read < len(data) / 3, (_CountingFS.bytes_read, len(data))
    with pytest.raises(KeyError):
        shards.read_row(fs, str(tmp_path), "img-007.bim", manifest)
    with pytest.raises(KeyError):
        shards.read_row(fs, str(tmp_path), "zzz", manifest)
    assert not list((tmp_path / shards.TMP_DIR).iterdir())  # the temporary was moved, not copied


def test_failed_write_leaves_no_shard(tmp_path, monkeypatch):
    fs = fsspec.filesystem("file")
    data = shards.encode_shard(_rows(2, 1000), {"index": 0})

    def broken_mv(*args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(fs, "mv", broken_mv)
    with pytest.raises(OSError):
        shards.write_atomic(fs, str(tmp_path), "shard-00000-0000000000000000.parquet", data)
    assert shards.list_shards(fs, str(tmp_path)) == {}
    assert not list((tmp_path / shards.TMP_DIR).iterdir())


def test_compress_in_process_mixed_inputs(tmp_path):
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    files = make_dataset(src)
    with pytest.raises(ValueError, match="threads_per_actor must be at least 1"):
        compress(str(src), str(dst), actors=0, threads_per_actor=0, progress=False)
    assert not dst.exists() or not any(dst.rglob("*.parquet"))
    summary = compress(str(src), str(dst), actors=0, shard_size=4, max_pixels=TEST_MAX_PIXELS, progress=False,
        keep_smaller_originals=False)
    assert summary.exit_code == 1  # three inputs could not be archived
    assert summary.manifest_written and summary.shards_total == 4 and summary.shards_written == 4
    assert sorted(k for k, _ in summary.stats.failures) == ["d/not-an-image.png", "d/too-big.png",
                                                            "d/truncated.png"]  # fmt: skip
    text = summary.format()
    assert "d/too-big.png" in text and "above the limit of 40000" in text

    table = pq.read_table(str(dst))  # the folder opens as one Parquet dataset (manifest is skipped)
    assert table.schema.remove_metadata() == shards.SCHEMA
    got = {r["key"]: r for r in table.to_pylist()}
    assert {k: r["status"] for k, r in got.items()} == EXPECTED_STATUS
    for key, r in got.items():
        assert r["error"] or r["status"] != "error"
        if r["status"] != "error":
            assert r["file_sha256"] == hashlib.sha256(files[key]).hexdigest()
            assert r["original_bytes"] == len(files[key]) and r["compressed_bytes"] == len(r["payload"])
    assert got["c/photo.jpg"]["codec"] == "stored" and got["c/photo.jpg"]["payload"] == files["c/photo.jpg"]
    assert got["a/rgb.png"]["width"] == 40 and got["a/rgb.png"]["height"] == 32 and got["a/rgb.png"]["bpd"] > 0
    manifest = json.loads((dst / shards.MANIFEST_NAME).read_text())
    assert manifest["counts"]["images"] == len(EXPECTED_STATUS) and len(manifest["shards"]) == 4

    result = restore(str(dst), str(out), progress=False)
    assert result.exit_code == 0 and result.restored == 11 and len(result.not_archived) == 3
    for key, status in EXPECTED_STATUS.items():
        path = out / key
        if status == "error":
            assert not path.exists()
        elif status == "stored":
            assert path.read_bytes() == files[key]
        else:
            a, b = Image.open(io.BytesIO(files[key])), Image.open(path)
            assert (a.mode, a.size, a.format) == (b.mode, b.size, b.format)
            assert a.tobytes() == b.tobytes() and a.getpalette() == b.getpalette()
    assert verify(str(dst), progress=False).exit_code == 0
    assert cat(str(dst), "c/photo.jpg") == files["c/photo.jpg"]
    assert Image.open(io.BytesIO(cat(str(dst), "a/gray.png"))).tobytes() == Image.open(src / "a/gray.png").tobytes()


def test_rerun_skips_done_shards_and_replaces_stale_ones(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_small_pngs(src, 5, (16, 16))
    first = compress(str(src), str(dst), actors=0, shard_size=2, progress=False)
    assert first.exit_code == 0 and first.shards_written == 3
    again = compress(str(src), str(dst), actors=0, shard_size=2, progress=False)
    assert again.shards_skipped == 3 and again.shards_written == 0 and again.stats.images == 5
    (src / "img-004.png").unlink()  # the last shard changes; the others stay
    third = compress(str(src), str(dst), actors=0, shard_size=2, progress=False)
    assert third.shards_skipped == 2 and third.shards_written == 0 and third.shards_total == 2
    keys = pq.read_table(str(dst), columns=["key"]).column("key").to_pylist()
    assert sorted(keys) == [f"img-{i:03d}.png" for i in range(4)]


def test_verify_and_restore_catch_damage(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_dataset(src)
    compress(str(src), str(dst), actors=0, shard_size=100, max_pixels=TEST_MAX_PIXELS, progress=False,
        keep_smaller_originals=False)
    (shard,) = dst.glob("shard-*.parquet")
    table = pq.read_table(shard)
    rows = table.to_pylist()
    for r in rows:
        if r["key"] in ("c/photo.jpg", "a/rgb.png"):
            p = bytearray(r["payload"])
            p[len(p) // 2] ^= 0x40
            r["payload"] = bytes(p)
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), shard)
    result = verify(str(dst), progress=False)
    assert result.exit_code == 1
    assert sorted(k for k, _ in result.failures) == ["a/rgb.png", "c/photo.jpg"]
    restored = restore(str(dst), str(tmp_path / "out"), progress=False)
    assert restored.exit_code == 1 and not (tmp_path / "out/c/photo.jpg").exists()


def _malicious_archive(root: Path, keys: list[str]) -> None:
    rows = []
    for key in sorted(keys):
        payload = f"content of {key!r}".encode()
        rows.append({c: None for c in shards.COLUMNS} | {
            "key": key, "payload": payload, "codec": "stored", "status": "stored",
            "file_sha256": hashlib.sha256(payload).hexdigest(),
        })  # fmt: skip
    fs = fsspec.filesystem("file")
    name = shards.shard_name(0, "f" * 64)
    shards.write_atomic(fs, str(root), name, shards.encode_shard(rows, {}))
    entry = {"file": name, "rows": len(rows), "first_key": rows[0]["key"], "last_key": rows[-1]["key"]}
    shards.write_manifest(fs, str(root), {"format": shards.ARCHIVE_FORMAT, "shards": [entry]})


def test_restore_never_writes_outside_out(tmp_path):
    archive, out, outside = tmp_path / "archive", tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    bad = ["../escape.png", "/abs/escape.png", "a/../../escape.png", "C:/escape.png", "x\\..\\escape.png",
           "nul\0.png", "link/escape.png"]  # fmt: skip
    _malicious_archive(archive, bad + ["fine/ok.png"])
    result = restore(str(archive), str(out), progress=False)
    assert result.exit_code == 1 and result.restored == 1
    assert sorted(k for k, _ in result.failures) == sorted(bad)
    assert (out / "fine/ok.png").read_bytes() == b"content of 'fine/ok.png'"
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.png").exists()
    assert not Path("/abs/escape.png").exists()


def test_cli_compress_verify_cat(tmp_path, capsysbinary):
    from jobs.cli import main

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    files = make_small_pngs(src, 3, (16, 16))
    (src / "photo.jpg").write_bytes(b"\xff\xd8\xff" + b"not really a jpeg")
    rc = main(["pipeline", "compress", str(src), str(dst), "--actors", "0", "--shard-size", "2", "--no-progress"])
    assert rc == 1  # the fake JPEG is an error row: nonzero exit, listed in the summary
    out = capsysbinary.readouterr().out.decode()
    assert "photo.jpg" in out and "failed images (1)" in out
    assert main(["pipeline", "verify", str(dst), "--no-progress"]) == 0
    assert main(["cat", str(dst), "img-001.png", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").tobytes() == Image.open(io.BytesIO(files["img-001.png"])).tobytes()
    capsysbinary.readouterr()
    assert main(["cat", str(dst), "img-002.png"]) == 0
    assert capsysbinary.readouterr().out[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["cat", str(dst), "photo.jpg"]) == 1
    assert main(["cat", str(dst), "nope.png"]) == 1
    assert main(["pipeline", "decompress", str(dst), str(tmp_path / "out"), "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(files)
    assert main(["pipeline", "compress", str(tmp_path / "empty"), str(dst), "--actors", "0"]) == 2


def test_restore_decodes_learned_payloads(tmp_path):
    """Archives hold learned (model-coded) payloads too: restore and cat decode them with the model."""
    from bitswap_core import api, container

    photo = Image.open(Path(__file__).resolve().parents[1] / "samples" / "usc-4.2.07.png").convert("RGB")
    image = photo.crop((100, 100, 132, 132))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    payload = api.compress_batch([image], smallest=False)[0]  # force the learned path
    box = container.unpack(payload)
    assert box.codec == "bitswap" and box.model_id
    row = {c: None for c in shards.COLUMNS} | {
        "key": "crop.png", "payload": payload, "codec": box.codec, "model_id": box.model_id,
        "format": "PNG", "mode": "RGB", "width": 32, "height": 32, "status": "ok",
        "pixel_digest": box.pixel_digest.hex(), "file_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
    }  # fmt: skip
    fs = fsspec.filesystem("file")
    name = shards.shard_name(0, "a" * 64)
    shards.write_atomic(fs, str(tmp_path / "arc"), name, shards.encode_shard([row], {}))
    entry = {"file": name, "rows": 1, "first_key": "crop.png", "last_key": "crop.png"}
    shards.write_manifest(fs, str(tmp_path / "arc"), {"format": shards.ARCHIVE_FORMAT, "shards": [entry]})
    result = restore(str(tmp_path / "arc"), str(tmp_path / "out"), progress=False)
    assert result.exit_code == 0 and result.restored == 1
    assert Image.open(tmp_path / "out" / "crop.png").tobytes() == image.tobytes()


def test_compress_exactly_the_given_files(tmp_path):
    """files=: the job runner hands over an already listed subset; only those are archived."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_small_pngs(src, 4, (16, 16))
    listed = list_sources(str(src)).files
    subset = [f for f in listed if f.key in ("img-001.png", "img-003.png")]
    summary = compress(str(src), str(dst), files=subset, actors=0, shard_size=1, progress=False)
    assert summary.exit_code == 0 and summary.shards_written == 2 and summary.cpus >= 1
    assert sorted(pq.read_table(str(dst), columns=["key"]).column("key").to_pylist()) == ["img-001.png", "img-003.png"]
    again = compress(str(src), str(dst), files=list(reversed(subset)), actors=0, shard_size=1, progress=False)
    assert again.shards_skipped == 2 and again.shards_written == 0


def test_a_file_smaller_than_its_coded_form_is_kept_byte_exact(tmp_path):
    """The archive never grows a file: a flat, well-packed PNG is stored as its original bytes."""
    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    src.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (12, 200, 40)).save(buf, "PNG", optimize=True)
    (src / "flat.png").write_bytes(buf.getvalue())
    summary = compress(str(src), str(dst), actors=0, shard_size=4, progress=False)
    assert summary.exit_code == 0
    row = pq.read_table(str(dst), columns=list(shards.META_COLUMNS)).to_pylist()[0]
    assert row["status"] == "stored" and "smaller than its coded form" in row["error"]
    assert row["compressed_bytes"] == len(buf.getvalue())
    assert restore(str(dst), str(out), progress=False).exit_code == 0
    assert (out / "flat.png").read_bytes() == buf.getvalue()


def _damaging(real):
    """A codec call that returns real containers whose learned payloads do not decode back (a codec bug)."""
    from dataclasses import replace

    from bitswap_core import container

    def damage(data: bytes) -> bytes:
        box = container.unpack(data)
        if box.codec.startswith("fallback:"):
            return data
        p = bytearray(box.payload)
        p[-5] ^= 0x5A  # inside the ANS words; the container itself (CRC) stays well-formed
        return container.pack(replace(box, payload=bytes(p)))

    def call(images, *args, **kwargs):
        out = real(images, *args, **kwargs, smallest=False)  # the learned path even where WebP is smaller
        return damage(out) if isinstance(out, bytes) else [damage(d) for d in out]

    return call


@pytest.mark.parametrize("verify_writes", [True, False])
def test_payloads_that_do_not_decode_back_are_stored_as_originals(tmp_path, monkeypatch, verify_writes):
    from bitswap_core import api

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    files = {}
    for i in range(3):
        buf = io.BytesIO()
        photo_crop("waterloo-monarch.png", (64 * i, 64, 64 * i + 64, 128)).save(buf, "PNG")
        files[f"img-{i}.png"] = buf.getvalue()
        (src / f"img-{i}.png").write_bytes(buf.getvalue())
    monkeypatch.setattr(api, "compress_batch", _damaging(api.compress_batch))
    monkeypatch.setattr(api, "compress", _damaging(api.compress))
    summary = compress(str(src), str(dst), actors=0, shard_size=8, progress=False, keep_smaller_originals=False,
                       verify_writes=verify_writes)
    rows = {r["key"]: r for r in pq.read_table(str(dst)).to_pylist()}
    learned = [k for k, r in rows.items() if r["codec"] in ("bitswap", "bbans")]
    if verify_writes:
        assert summary.exit_code == 0 and not learned
        for key, r in rows.items():
            if r["status"] == "stored":
                assert "did not decode back" in r["error"] and r["payload"] == files[key]
        assert any(r["status"] == "stored" for r in rows.values())
        assert verify(str(dst), progress=False).exit_code == 0
    else:  # without it the damage is only found when the archive is read
        assert learned and verify(str(dst), progress=False).exit_code == 1


def test_actors_hold_the_cpus_their_threads_use_and_share_the_gpus(monkeypatch):
    """threads_per_actor sets what each actor holds, so actors never ask for more CPUs or GPUs than the
    cluster has (Ray would leave the extra ones unscheduled and the job waiting): shares round down. GPU
    clusters get one actor per CPU too, sharing the GPUs (one per GPU left the cores idle), unless
    use_gpus is False."""
    import ray

    from pipeline.driver import _actor_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    assert _actor_resources(None, 100) == (8, 1.0, 0.0, 0)
    assert _actor_resources(None, 2) == (2, 1.0, 0.0, 0)  # fewer shards than CPUs: still one thread each
    assert _actor_resources(None, 100, threads=2) == (4, 2.0, 0.0, 0)
    assert _actor_resources(None, 2, threads=1) == (2, 1.0, 0.0, 0)
    assert _actor_resources(None, 100, threads=16) == (1, 8.0, 0.0, 0)
    assert _actor_resources(3, 100, threads=2) == (3, 2.0, 0.0, 0)
    assert _actor_resources(16, 100) == (16, 0.5, 0.0, 0)  # more actors than CPUs: each holds a share of one
    assert _actor_resources(6, 100, threads=2) == (6, 1.0, 0.0, 0)
    assert _actor_resources(12, 100) == (12, 0.66, 0.0, 0)  # rounded down: 12 x 0.67 would be 8.04 CPUs
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    assert _actor_resources(None, 100) == (16, 1.0, 0.0625, 16)
    assert _actor_resources(None, 100, threads=4) == (4, 4.0, 0.25, 4)
    assert _actor_resources(6, 100) == (6, 1.0, 0.1666, 6)  # 6 x 0.17 would be 1.02 GPUs
    assert _actor_resources(None, 100, use_gpus=False) == (16, 1.0, 0.0, 0)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    assert _actor_resources(2, 100) == (2, 1.0, 1.0, 2)
    assert _actor_resources(None, 1) == (1, 1.0, 1.0, 1)  # never more than a whole GPU
    assert _actor_resources(3, 100) == (3, 1.0, 0.5, 3)  # not 2/3: a third actor would fit on neither GPU
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 1.0})
    assert _actor_resources(None, 100) == (64, 1.0, 0.0625, 16)  # past 16 a GPU, the rest run on CPUs
    for res in ({"CPU": 16.0, "GPU": 1.0}, {"CPU": 7.0, "GPU": 3.0}, {"CPU": 2.0}):
        monkeypatch.setattr(ray, "cluster_resources", lambda res=res: res)
        for k in range(1, 40):
            n, cpus, gpus, on_gpu = _actor_resources(k, 100)
            assert n * cpus <= res["CPU"] + 1e-9 and on_gpu * gpus <= res.get("GPU", 0) + 1e-9
            assert on_gpu <= min(n, 16 * res.get("GPU", 0))


@pytest.mark.parametrize("setting, value", [("particles", 2), ("effort", 1)])
def test_encoder_settings_reach_the_codec_and_the_archive_restores(tmp_path, monkeypatch, setting, value):
    """The pipeline's particles and effort settings reach every compress_batch call (which codes for real),
    the archive restores bit-exact, and the default's shard plan is the one it was before the setting."""
    from bitswap_core import api

    src, dst, out = tmp_path / "src", tmp_path / "dst", tmp_path / "out"
    src.mkdir()
    photo_crop("usc-4.1.07.png", (0, 0, 64, 64)).save(src / "p.png")
    files = [SourceFile("p.png", "p.png", 1)]
    assert plan_shards(files, 4, {"codec": "bitswap"})[0].name != plan_shards(
        files, 4, {"codec": "bitswap", setting: value})[0].name
    seen, real = [], api.compress_batch

    def spy(images, *args, **kwargs):
        seen.append(kwargs.get(setting))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(api, "compress_batch", spy)
    summary = compress(str(src), str(dst), actors=0, progress=False, keep_smaller_originals=False, **{setting: value})
    assert summary.exit_code == 0 and seen and set(seen) == {value}
    assert restore(str(dst), str(out), progress=False).exit_code == 0
    assert Image.open(out / "p.png").tobytes() == Image.open(src / "p.png").tobytes()
