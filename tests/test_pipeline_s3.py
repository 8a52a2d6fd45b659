"""S3 through a real moto server: listed, read and written with s3fs from the standard AWS environment.

No storage options are passed anywhere: the endpoint and credentials reach s3fs (in this process and in
the Ray actors) only as AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, as for a user.
"""

from __future__ import annotations

import io
import json
import logging
import uuid

import boto3
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_fixtures import (  # noqa: F401 - the fixtures are used by name
    EXPECTED_STATUS,
    MOTO_KEY,
    MOTO_SECRET,
    TEST_MAX_PIXELS,
    aws_env,
    make_dataset,
    moto_endpoint,
    ray_cluster,
)

from pipeline import shards
from pipeline.driver import compress
from pipeline.restore import cat, restore, verify
from pipeline.sources import open_fs


@pytest.fixture
def bucket(request, tmp_path):
    """A fresh bucket holding the mixed dataset under src/; yields (name, {key: bytes})."""
    request.getfixturevalue("aws_env")
    name = f"pipeline-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")  # endpoint and keys from the environment too
    s3.create_bucket(Bucket=name)
    files = make_dataset(tmp_path / "data")
    for key, data in files.items():
        s3.put_object(Bucket=name, Key=f"src/{key}", Body=data)
    s3.put_object(Bucket=name, Key="src/.hidden/skip.png", Body=files["a/rgb.png"])
    return name, files


def _all_objects(bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


@pytest.mark.usefixtures("ray_cluster")
def test_s3_to_s3_on_ray_actors(bucket, tmp_path, capsys, caplog):
    name, files = bucket
    caplog.set_level(logging.DEBUG, logger="pipeline")
    src, dst = f"s3://{name}/src", f"s3://{name}/archive"
    summary = compress(src, dst, actors=2, shard_size=5, max_pixels=TEST_MAX_PIXELS, progress=True,
        keep_smaller_originals=False)
    assert summary.manifest_written and summary.shards_written == 3, summary.format()
    assert summary.stats.images == len(files) and summary.stats.error == 3
    print(summary.format())

    objects = _all_objects(name)
    archive = {k: v for k, v in objects.items() if k.startswith("archive/")}
    assert sorted(k.rsplit("/", 1)[-1] for k in archive) == sorted(
        [shards.MANIFEST_NAME] + [e["file"] for e in json.loads(archive[f"archive/{shards.MANIFEST_NAME}"])["shards"]]
    )  # no temporaries left behind
    for key, data in archive.items():  # the credentials are in no written file ...
        assert MOTO_SECRET.encode() not in data and MOTO_KEY.encode() not in data, key
    manifest = json.loads(archive[f"archive/{shards.MANIFEST_NAME}"])
    assert manifest["source"] == src
    fs, _ = open_fs(dst)
    table = pq.read_table(f"{name}/archive", filesystem=fs)  # pyarrow reads the s3fs filesystem directly
    assert {r["key"]: r["status"] for r in table.select(["key", "status"]).to_pylist()} == EXPECTED_STATUS

    assert cat(dst, "c/photo.jpg") == files["c/photo.jpg"]
    assert verify(dst, progress=False).exit_code == 0
    out = restore(dst, str(tmp_path / "out"), progress=False)
    assert out.exit_code == 0 and out.restored == 11
    got = Image.open(tmp_path / "out/a/rgb.png")
    assert got.tobytes() == Image.open(io.BytesIO(files["a/rgb.png"])).tobytes()

    to_s3 = restore(dst, f"s3://{name}/restored", progress=False)  # OUT may be a URL too
    assert to_s3.exit_code == 0
    assert _all_objects(name)["restored/b/lossless.webp"][:4] == b"RIFF"

    captured = capsys.readouterr()
    logs = captured.out + captured.err + caplog.text + summary.format()
    assert MOTO_SECRET not in logs  # ... and in no log line


def test_s3_resume_skips_finished_shards(bucket):
    name, files = bucket
    src, dst = f"s3://{name}/src/a", f"s3://{name}/arch"
    first = compress(src, dst, actors=0, shard_size=2, progress=False)
    assert first.exit_code == 0 and first.shards_written == 2
    fs, _ = open_fs(dst)
    fs.rm(f"{name}/arch/{shards.MANIFEST_NAME}")
    fs.rm(f"{name}/arch/{sorted(n for n in fs.ls(f'{name}/arch') if 'shard-' in n)[1].rsplit('/', 1)[1]}")
    second = compress(src, dst, actors=0, shard_size=2, progress=False)
    assert second.shards_skipped == 1 and second.shards_written == 1 and second.manifest_written
    assert second.stats.images == 4
