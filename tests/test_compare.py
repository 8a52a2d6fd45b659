"""Codec comparison: classical codecs measured and verified on real samples; CLI prints a table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from bitswap_core import container
from bitswap_core.coding import adapt
from jobs import compare
from jobs.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _sample(name: str, box: tuple[int, int, int, int] = (0, 0, 64, 48)) -> Image.Image:
    with Image.open(SAMPLES / name) as image:
        return image.crop(box)


@pytest.fixture(scope="module")
def rgb() -> Image.Image:
    return _sample("usc-4.1.07.png")


@pytest.mark.parametrize("codec", compare.CLASSICAL)
def test_classical_codecs_measure_and_verify(rgb: Image.Image, codec: str) -> None:
    m = compare.measure(rgb, codec, name="jelly")
    assert m.status == "ok", m.status
    assert m.compressed_bytes > 0 and m.encode_s >= 0 and m.decode_s >= 0
    assert (m.pixels, m.dims) == (64 * 48, 64 * 48 * 3)
    assert 0.5 < m.bpd < 10  # a 64x48 photo crop: no codec reaches 0, headers keep it under ~10
    assert m.bpd == pytest.approx(8 * m.compressed_bytes / (64 * 48 * 3))


@pytest.mark.parametrize(
    ("name", "box"),
    [
        ("waterloo-bird.png", (0, 0, 40, 30)),  # L
        ("usc-ruler.png", (0, 0, 200, 40)),  # "1"
        ("waterloo-frymire-crop-p.png", (0, 0, 80, 60)),  # P with transparency
    ],
)
def test_other_modes_are_coded_losslessly(name: str, box: tuple[int, int, int, int]) -> None:
    image = _sample(name, box)
    rows = compare.compare({name: image}, compare.CLASSICAL)
    assert [r.status for r in rows] == ["ok"] * len(compare.CLASSICAL)
    assert all(r.dims == image.width * image.height for r in rows)  # one channel in each of these modes


def test_a_codec_that_does_not_round_trip_is_reported(rgb: Image.Image, monkeypatch) -> None:
    real_open = compare._pil_open

    def damaged(data: bytes) -> Image.Image:
        out = real_open(data)
        out.putpixel((3, 3), tuple(255 - v for v in out.getpixel((3, 3))))
        return out

    monkeypatch.setattr(compare, "_pil_open", damaged)
    m = compare.measure(rgb, "png")
    assert m.status.startswith("FAILED") and "differ" in m.status
    assert m.bpd is None and m.compressed_bytes is None


def test_missing_jxl_plugin_is_na(rgb: Image.Image, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pillow_jxl", None)  # makes `import pillow_jxl` fail
    m = compare.measure(rgb, "jxl")
    assert m.status.startswith("n/a") and "pillow_jxl" in m.status


def test_learned_rows_go_through_the_api(rgb: Image.Image, tiny_model) -> None:
    bits, bbans = (compare.measure(rgb, c, model=tiny_model) for c in ("bitswap", "bbans"))
    assert bits.ok and bbans.ok and bits.compressed_bytes > 0 and bbans.compressed_bytes > 0
    # the learned path itself, not the fallback; the note says how many blocks the context model coded
    # (coding/direct.py: with this random-weight model, some)
    assert all(r.note == "" or r.note.endswith("of 4 blocks direct") for r in (bits, bbans))
    assert "blocks direct" in bits.note


def test_learned_rows_are_skipped_with_a_reason(rgb: Image.Image, tmp_path: Path) -> None:
    m = compare.measure(rgb, "bitswap", model=tmp_path / "missing.safetensors")
    assert m.status.startswith("n/a: compress raised FileNotFoundError: model file not found")


def test_totals_add_bits_and_dims(rgb: Image.Image) -> None:
    grey = _sample("waterloo-bird.png", (0, 0, 32, 32))
    rows = compare.compare([("a", rgb), ("b", grey)], ["png", "gzip"])
    assert [(r.image, r.codec) for r in rows] == [("a", "png"), ("a", "gzip"), ("b", "png"), ("b", "gzip")]
    png_total = compare.totals(rows)[0]
    assert png_total.codec == "png" and png_total.dims == 64 * 48 * 3 + 32 * 32
    assert png_total.compressed_bytes == rows[0].compressed_bytes + rows[2].compressed_bytes


def test_cli_compare_prints_a_table_and_json(tmp_path: Path, capsys) -> None:
    paths = []
    for name in ("usc-4.1.07.png", "waterloo-bird.png"):
        path = tmp_path / name
        _sample(name).save(path)
        paths.append(str(path))
    assert main(["compare", *paths, "--codecs", "png,gzip,lzma"]) == 0
    out = capsys.readouterr().out
    assert "PNG opt" in out and "LZMA-9" in out and "bpd" in out and "ALL (2 images" in out
    assert main(["compare", paths[0], "--codecs", "png,bzip2", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in table["rows"]] == ["PNG opt", "bzip2-9"]
    assert all(r["status"] == "ok" and r["bpd"] > 0 for r in table["rows"])
    assert main(["compare", paths[0], "--codecs", "png,zstd"]) == 1
    assert "unknown codec" in capsys.readouterr().err


def test_cli_decompress_refuses_lossy_output(tmp_path: Path, capsys) -> None:
    assert main(["decompress", str(tmp_path / "x.bsw"), str(tmp_path / "x.jpg")]) == 1
    assert "lossless" in capsys.readouterr().err


def test_cli_compress_decompress_with_a_model_file(tmp_path: Path, capsys, tiny_model, tiny_model_path) -> None:
    source = _sample("usc-4.1.07.png", (0, 0, 40, 36))
    src, packed, out = tmp_path / "in.png", tmp_path / "sub" / "img.bsw", tmp_path / "out.tiff"
    source.save(src)
    args = ["--codec", "bbans", "--model", str(tiny_model_path), "--learned-only"]
    assert main(["compress", str(src), str(packed), *args]) == 0
    box = container.unpack(packed.read_bytes())
    assert box.model_id == tiny_model.id and box.codec == "bbans"
    plain = tmp_path / "plain.bsw"
    assert main(["compress", str(src), str(plain), *args, "--adapt-blocks", "0"]) == 0
    fast = tmp_path / "fast.bsw"
    assert main(["compress", str(src), str(fast), *args, "--effort", "1"]) == 0
    assert main(["decompress", str(fast), str(out), "--model", str(tiny_model_path)]) == 0
    with Image.open(out) as restored:
        assert restored.tobytes() == source.tobytes()
    coarse = tmp_path / "coarse.bsw"
    assert main(["compress", str(src), str(coarse), *args, "--adapt-blocks", "0", "--first-block", "coarse"]) == 0
    # the same empty adaptation header (no scale shifts), then the first block's grid
    (a, plain_rest), (b, coarse_rest) = (adapt.from_bytes(container.unpack(f.read_bytes()).payload,
                                                          tiny_model.cfg.pixel_phases, 3) for f in (plain, coarse))
    assert a.shifts is None and b.shifts is None and plain_rest[0] == 0 != coarse_rest[0]
    assert main(["decompress", str(coarse), str(out), "--model", str(tiny_model_path)]) == 0
    deep = tmp_path / "deep.bsw"  # the split: 1 for this small image by default, 2 when asked
    assert main(["compress", str(src), str(deep), *args, "--phase-split", "2"]) == 0
    assert a.split == 1 and adapt.from_bytes(container.unpack(deep.read_bytes()).payload,
                                             tiny_model.cfg.pixel_phases, 3)[0].split == 2
    assert main(["decompress", str(deep), str(out), "--model", str(tiny_model_path)]) == 0
    assert main(["decompress", str(packed), str(out), "--model", str(tiny_model_path)]) == 0
    with Image.open(out) as restored:
        assert (restored.mode, restored.tobytes()) == (source.mode, source.tobytes())
    assert main(["decompress", str(src), str(tmp_path / "bad.png")]) == 1  # a PNG is not a container
    assert "UnsupportedFormatError" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()
    assert main(["compress", str(tmp_path / "missing.png"), str(packed)]) == 1


@pytest.mark.parametrize("name", ["usc-4.1.07.png", "waterloo-frymire-crop-p.png"])
def test_cli_compress_decompress_round_trip(tmp_path: Path, capsys, name: str) -> None:
    source = _sample(name, (0, 0, 40, 36))
    src, packed, out = tmp_path / "in.png", tmp_path / "img.bsw", tmp_path / "out.png"
    source.save(src)
    assert main(["compress", str(src), str(packed)]) == 0
    assert main(["decompress", str(packed), str(out)]) == 0
    with Image.open(out) as restored:
        assert (restored.mode, restored.size, restored.tobytes()) == (
            source.mode,
            source.size,
            source.tobytes(),
        )
    damaged = bytearray(packed.read_bytes())
    damaged[len(damaged) // 2] ^= 0x40
    packed.write_bytes(bytes(damaged))
    assert main(["decompress", str(packed), str(tmp_path / "bad.png")]) == 1
    assert "CorruptPayloadError" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()
