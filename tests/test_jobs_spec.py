"""Job specs: the example parses, defaults fill in, errors name the field, the hash is stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.spec import JobSpec, SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parent.parent


def minimal(**extra):
    d = {"name": "j", "destination": "/tmp/archive-x", "sources": [{"url": "/tmp/images-x"}]}
    d.update(extra)
    return d


def test_example_spec_parses():
    spec = load_spec(REPO / "examples" / "job.toml")
    assert spec.name == "photos"
    assert spec.destination == "s3://my-archive-bucket/bitswap/photos"
    assert spec.sources[0].exclude == ("tmp/*", "*/thumbnails/*")
    assert spec.compare.codecs == ("png", "webp", "jxl")
    assert spec.cluster_address is None and spec.actors is None


def test_defaults_and_relative_paths(tmp_path):
    (tmp_path / "job.toml").write_text('name = "a"\ndestination = "out/arch"\n[[sources]]\nurl = "imgs"\n')
    spec = load_spec(tmp_path / "job.toml")
    assert spec.destination == str(tmp_path / "out" / "arch")
    assert spec.sources[0].url == str(tmp_path / "imgs")
    assert spec.shard_size == 256 and spec.codec == "bitswap" and spec.cost.storage_usd_per_gb_month > 0
    assert spec.verify_writes and not parse_spec(minimal(verify_writes=False)).verify_writes
    assert spec.use_gpus and not parse_spec(minimal(use_gpus=False)).use_gpus
    assert spec.sources[0].include == ()  # the pipeline's image patterns


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"shard_sise": 3}, "shard_sise", "did you mean 'shard_size'"),
        ({"shard_size": 0}, "shard_size", ">= 1"),
        ({"shard_size": "10"}, "shard_size", "integer"),
        ({"codec": "zip"}, "codec", "bitswap"),
        ({"name": "a b"}, "name", "letters"),
        ({"cost": {"gpu_usd_per_hour": -1}}, "cost.gpu_usd_per_hour", ">= 0"),
        ({"cost": {"storage": 1}}, "cost.storage", "unknown field"),
        ({"compare": {"codecs": ["png", "gif"]}}, "compare.codecs[1]", "not one of"),
        ({"compare": {"sample_size": -1}}, "compare.sample_size", ">= 0"),
        ({"sources": []}, "sources", "non-empty"),
        ({"sources": [{"include": ["*.png"]}]}, "sources[0].url", "missing"),
        ({"sources": [{"url": "/a", "exclude": ["/abs/*"]}]}, "sources[0].exclude[0]", "relative"),
        ({"sources": [{"url": "/a"}, {"url": "/b"}]}, "sources[0].name", "more than one source"),
        ({"sources": [{"url": "/a", "name": "x"}, {"url": "/b", "name": "x"}]}, "sources[1].name", "used by"),
        ({"sources": [{"url": "/tmp/archive-x/sub"}]}, "sources[0].url", "overlaps"),
        ({"verify_writes": "no"}, "verify_writes", "true or false"),
        ({"use_gpus": 1}, "use_gpus", "true or false"),
        ({"particles": 0}, "particles", ">= 1"),
        ({"particles": 17}, "particles", "<= 16"),
        ({"effort": 0}, "effort", ">= 1"),
        ({"effort": 3}, "effort", "<= 2"),
    ],
)
def test_errors_name_the_field(change, field, words):
    with pytest.raises(SpecError) as ei:
        parse_spec(minimal(**change))
    assert ei.value.field == field
    assert str(ei.value).startswith(field + ":")
    assert words in str(ei.value)


def test_missing_required_and_bad_toml(tmp_path):
    with pytest.raises(SpecError, match="^destination: missing"):
        parse_spec({"name": "a", "sources": ["/x"]})
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SpecError, match="not valid TOML") as ei:
        load_spec(bad)
    assert str(bad) in str(ei.value)
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.toml")


def test_hash_is_stable_and_sensitive():
    a = parse_spec(minimal())
    b = parse_spec(dict(reversed(list(minimal(shard_size=256).items()))))  # same values, other layout
    assert isinstance(a, JobSpec) and a.hash == b.hash and len(a.hash) == 16
    assert parse_spec(minimal(shard_size=8)).hash != a.hash
    assert parse_spec(minimal(cost={"storage_usd_per_gb_month": 0.01})).hash != a.hash
    # particles is left out of the hash at its default, so specs written before it keep their hash
    assert parse_spec(minimal(particles=1)).hash == a.hash and "particles" not in a.to_dict()
    four = parse_spec(minimal(particles=4))
    assert four.hash != a.hash and parse_spec(four.to_dict()) == four
    # so is the encoder's effort (2)
    assert parse_spec(minimal(effort=2)).hash == a.hash and "effort" not in a.to_dict()
    fast = parse_spec(minimal(effort=1))
    assert fast.effort == 1 and fast.hash != a.hash and parse_spec(fast.to_dict()) == fast


def test_the_particles_limit_is_the_codecs():
    from bitswap_core.coding import importance
    from jobs.spec import MAX_PARTICLES

    assert MAX_PARTICLES == importance.MAX_PARTICLES


def test_round_trip_through_the_run_record():
    """A crashed run is completed with the spec stored in its record: to_dict must parse back the same."""
    spec = parse_spec(
        minimal(actors=0, threads_per_actor=1, cluster_address="auto",
                sources=[{"url": "/tmp/a", "name": "cams", "exclude": ["x/*"]}])
    )
    again = parse_spec(spec.to_dict())
    assert again == spec and again.hash == spec.hash and again.actors == 0 and again.threads_per_actor == 1
    assert parse_spec(minimal()).threads_per_actor is None
    with pytest.raises(SpecError, match="threads_per_actor"):
        parse_spec(minimal(threads_per_actor=0))
    assert parse_spec(parse_spec(minimal()).to_dict()).actors is None
