"""The public codec API: lossless for every image, byte-identical in batches, clear errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib
from dataclasses import replace

import numpy as np
import pytest
from conftest import noise_image, photo_crop
from PIL import Image, ImageCms

import bitswap_core
from bitswap_core import api, container, fallback
from bitswap_core.coding import adapt
from bitswap_core.errors import (
    BitswapError,
    CorruptPayloadError,
    ImageRefusedError,
    ModelMismatchError,
    UnsupportedFormatError,
)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("codec", ["bitswap", "bbans"])
@pytest.mark.parametrize("size", [(1, 1), (5, 3), (33, 65), (64, 32)])
def test_learned_round_trip_any_size(tiny_model, codec, size):
    img = noise_image(size[1], size[0], seed=size[0])
    data = bitswap_core.compress(img, tiny_model, codec=codec, smallest=False)
    assert container.unpack(data).codec == codec
    assert same(bitswap_core.decompress(data, tiny_model), img)


def test_photo_round_trip_and_size(tiny_model):
    img = photo_crop()
    data = bitswap_core.compress(img, tiny_model, smallest=False)
    out = bitswap_core.decompress(data, tiny_model)
    assert same(out, img)


def test_batch_gives_the_same_bytes_as_alone(tiny_model):
    imgs = [photo_crop(box=(0, 0, 40, 40)), noise_image(20, 70, 1), photo_crop(box=(10, 10, 75, 42))]
    together = bitswap_core.compress_batch(imgs, tiny_model, smallest=False)
    alone = [bitswap_core.compress(im, tiny_model, smallest=False) for im in imgs]
    assert together == alone
    back = bitswap_core.api.decompress_batch(together, tiny_model)
    assert all(same(a, b) for a, b in zip(imgs, back))


def test_payload_decodes_in_a_fresh_process_with_other_threads_and_batch(tiny_model_path, tmp_path):
    imgs = [photo_crop(box=(0, 0, 64, 40)), noise_image(33, 17, 5)]
    datas = bitswap_core.compress_batch(imgs, tiny_model_path, smallest=False)
    for i, d in enumerate(datas):
        (tmp_path / f"{i}.bsw").write_bytes(d)
    script = textwrap.dedent(f"""
        import torch, sys
        torch.set_num_threads(1)
        import bitswap_core
        from bitswap_core.api import decompress_batch
        a = (open(r"{tmp_path}/0.bsw", "rb").read(), open(r"{tmp_path}/1.bsw", "rb").read())
        one = [bitswap_core.decompress(x, r"{tiny_model_path}") for x in a]   # batch size 1 each
        both = decompress_batch(list(a)[::-1], r"{tiny_model_path}")           # batch of 2, reversed
        for im, i in zip(one, range(2)):
            im.save(r"{tmp_path}/" + str(i) + ".png")
        assert [x.tobytes() for x in both[::-1]] == [x.tobytes() for x in one]
        print("threads", torch.get_num_threads())
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for i, im in enumerate(imgs):
        assert same(Image.open(tmp_path / f"{i}.png").convert("RGB"), im)


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "1", "I;16", "CMYK", "I", "F"])
def test_other_modes_go_through_the_recorded_fallback(tiny_model, mode):
    base = noise_image(19, 23, 3)
    if mode == "I;16":
        img = Image.fromarray(np.random.default_rng(0).integers(0, 65535, (19, 23), dtype=np.uint16))
        assert img.mode == "I;16"
    else:
        img = base.convert(mode)
    data = bitswap_core.compress(img, tiny_model)
    assert container.unpack(data).codec.startswith("fallback:")
    out = bitswap_core.decompress(data, tiny_model)
    assert same(out, img)


def test_icc_profile_is_kept(tiny_model):
    img = photo_crop(box=(0, 0, 33, 33))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.info["icc_profile"] = icc
    out = bitswap_core.decompress(bitswap_core.compress(img, tiny_model, smallest=False), tiny_model)
    assert out.info["icc_profile"] == icc and same(out, img)


def test_smallest_picks_the_fallback_for_flat_graphics(tiny_model):
    img = Image.new("RGB", (64, 64), (10, 200, 30))
    data = bitswap_core.compress(img, tiny_model)
    assert container.unpack(data).codec in (fallback.PNG, fallback.WEBP, fallback.JXL)
    assert same(bitswap_core.decompress(data, tiny_model), img)


def test_photos_the_model_loses_get_jpeg_xl_at_full_effort(tiny_model):
    """Where JPEG-XL wins at its fast effort, the kept payload is the full-effort one when that is smaller."""
    img = photo_crop("usc-4.2.07.png", box=(0, 0, 96, 96))
    box = container.unpack(bitswap_core.compress(img, tiny_model))
    fast = fallback.candidates(img)[fallback.JXL]
    assert box.codec == fallback.JXL
    assert len(box.payload) == min(len(fast), len(fallback.encode_verified(img, fallback.JXL, "max")))
    assert same(bitswap_core.decompress(bitswap_core.compress(img, tiny_model), tiny_model), img)


def test_graphics_get_webp_at_full_effort(tiny_model):
    """Where WebP wins at its fast effort, the kept payload is the full-effort one when that is smaller."""
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    img = Image.fromarray(colours[np.tile(rng.integers(0, 5, (8, 12)), (6, 5))], "RGB")
    data = bitswap_core.compress(img, tiny_model)
    box = container.unpack(data)
    name, fast = fallback.encode(img)
    assert name == fallback.WEBP and box.codec == fallback.WEBP
    assert len(box.payload) == min(len(fast), len(fallback.encode_webp(img, "max")))
    assert same(bitswap_core.decompress(data, tiny_model), img)


def test_wrong_model_is_refused(tiny_model, tmp_path):
    import torch

    from bitswap_core.model.config import PRESETS
    from bitswap_core.model.export import export_tensors
    from bitswap_core.model.float_model import BitSwapModel
    from bitswap_core.registry import load_model, save_model

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_model(other, PRESETS["tiny"], export_tensors(BitSwapModel(PRESETS["tiny"])))
    data = bitswap_core.compress(noise_image(8, 8), tiny_model, smallest=False)
    with pytest.raises(ModelMismatchError, match="coded with model"):
        bitswap_core.decompress(data, load_model(other))


def test_absurd_sizes_are_refused():
    with pytest.raises(ImageRefusedError, match="exceeds the limit"):
        bitswap_core.compress(Image.new("RGB", (3000, 3000)), max_pixels=1_000_000)


def test_damaged_model_file_is_a_clear_error(tiny_model_path, tmp_path):
    from bitswap_core.registry import load_model

    bad = tmp_path / "bad.safetensors"
    raw = bytearray(tiny_model_path.read_bytes())
    bad.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(UnsupportedFormatError):
        load_model(bad)
    raw[-100] ^= 0xFF  # inside tensor data: the id no longer matches
    bad.write_bytes(bytes(raw))
    with pytest.raises((ModelMismatchError, UnsupportedFormatError)):
        load_model(bad)


def test_shared_tables_keep_the_model_id_and_its_bytes(tiny_model, tmp_path):
    """A model file that leaves its CDF tables in tables/<id>.safetensors beside it loads as the same model
    (same id), codes the same bytes, and two such files share one tables file."""
    from bitswap_core.registry import load_model, save_model, tables_id

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert save_model(a, tiny_model.cfg, tiny_model.tensors, {"n": 1}, shared_tables=True) == tiny_model.id
    save_model(b, tiny_model.cfg, tiny_model.tensors, {"n": 2}, shared_tables=True)
    assert [p.name for p in (tmp_path / "tables").iterdir()] == [f"{tables_id(tiny_model.tensors)}.safetensors"]
    full = (tmp_path / "full.safetensors")
    save_model(full, tiny_model.cfg, tiny_model.tensors)
    assert a.stat().st_size < full.stat().st_size // 2
    shared = load_model(a)
    assert shared.id == tiny_model.id and load_model(b).id == tiny_model.id
    im = photo_crop()
    assert bitswap_core.compress(im, shared, smallest=False) == bitswap_core.compress(im, tiny_model, smallest=False)


def test_share_tables_script_shares_and_inlines_without_changing_the_id(tiny_model_path, tmp_path):
    """scripts/share_tables.py: in place, the file shrinks and keeps its id; --inline writes a
    self-contained copy that loads with nothing beside it."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from bitswap_core.registry import load_model

    script = Path(__file__).resolve().parent.parent / "scripts" / "share_tables.py"
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    model = zoo / "m.safetensors"
    shutil.copyfile(tiny_model_path, model)
    subprocess.run([sys.executable, str(script), str(model)], check=True, capture_output=True)
    assert model.stat().st_size < tiny_model_path.stat().st_size // 2
    assert load_model(model).id == load_model(tiny_model_path).id
    alone = tmp_path / "elsewhere" / "copy.safetensors"
    alone.parent.mkdir()
    subprocess.run([sys.executable, str(script), "--inline", str(model), str(alone)], check=True,
                   capture_output=True)
    assert not (alone.parent / "tables").exists() and load_model(alone).id == load_model(tiny_model_path).id


def test_shared_tables_missing_damaged_or_hostile_are_clear_errors(tiny_model, tmp_path):
    from safetensors.numpy import load_file, save_file

    from bitswap_core.registry import load_model, save_model, tables_id

    path = tmp_path / "m.safetensors"
    save_model(path, tiny_model.cfg, tiny_model.tensors, shared_tables=True)
    tables = tmp_path / "tables" / f"{tables_id(tiny_model.tensors)}.safetensors"
    kept = tables.read_bytes()
    tables.unlink()
    with pytest.raises(UnsupportedFormatError, match="m.safetensors.*missing or unreadable"):
        load_model(path)
    t = load_file(str(tmp_path / "m.safetensors"))
    body = dict(t)
    bad = {k: v.copy() for k, v in tiny_model.tensors.items() if k in ("table_x", "table_z")}
    bad["table_x"][3, 7] += 1
    save_file(bad, str(tables), metadata={"format": "bitswap-tables-v1", "id": tables_id(tiny_model.tensors)})
    with pytest.raises(ModelMismatchError, match="damaged"):
        load_model(path)
    tables.write_bytes(kept)
    assert load_model(path).id == tiny_model.id
    meta = {"format": "bitswap-exact-v1", "config": tiny_model.cfg.to_json(), "id": tiny_model.id}
    for name in ("../../etc/passwd", "0" * 31 + "G", ""):
        hostile = tmp_path / "hostile.safetensors"
        save_file(body, str(hostile), metadata={**meta, "tables": name})
        with pytest.raises(UnsupportedFormatError, match="not an id"):
            load_model(hostile)
    both = tmp_path / "both.safetensors"
    save_file({**body, **{k: tiny_model.tensors[k] for k in ("table_x", "table_z")}}, str(both),
              metadata={**meta, "tables": tables_id(tiny_model.tensors)})
    with pytest.raises(UnsupportedFormatError, match="also names shared"):
        load_model(both)


def test_every_zoo_file_is_package_data():
    """A wheel carries only what pyproject's package-data names: a zoo model without its shared tables
    would not load once installed."""
    from pathlib import Path

    import tomllib

    root = Path(bitswap_core.__file__).parent
    globs = tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    named = {p for g in globs["bitswap_core"] for p in root.glob(g)}
    files = {p for p in (root / "zoo").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files and files <= named, sorted(str(p.relative_to(root)) for p in files - named)


def _repack(data: bytes, payload: bytes) -> bytes:
    c = container.unpack(data)
    return container.pack(container.Container(c.codec, c.model_id, c.mode, c.width, c.height, c.icc_profile,
                                              c.pixel_digest, payload))


def test_truncated_and_corrupt_learned_payloads_raise(tiny_model):
    img = photo_crop(box=(0, 0, 40, 40))
    data = bitswap_core.compress(img, tiny_model, smallest=False)
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(BitswapError):
            bitswap_core.decompress(data[:cut], tiny_model)
    payload = container.unpack(data).payload
    head = len(payload) - len(adapt.from_bytes(payload, tiny_model.cfg.pixel_phases, 3)[1])
    for pos in (0, 5, 12, (len(payload) - head) // 2, len(payload) - head - 1):  # in the ANS bytes
        bad = bytearray(payload)
        bad[head + pos] ^= 0x01
        with pytest.raises(CorruptPayloadError):  # valid CRC, hostile payload: still caught
            bitswap_core.decompress(_repack(data, bytes(bad)), tiny_model)
    for pos in range(head):  # the scale adaptation header: an error, or (a shift no pixel used) the image
        bad = bytearray(payload)
        bad[pos] ^= 0x01
        try:
            out = bitswap_core.decompress(_repack(data, bytes(bad)), tiny_model)
        except CorruptPayloadError:
            continue
        assert same(out, img)


def test_fuzz_learned_decoder_with_mutated_payloads(tiny_model):
    """Mutated real payloads behind a valid header/CRC: a BitswapError or the exact image, nothing else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    img = photo_crop(box=(0, 0, 40, 33))
    data = bitswap_core.compress(img, tiny_model, smallest=False)
    payload = container.unpack(data).payload

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(1, 255)), min_size=1, max_size=4),
           st.integers(0, len(payload)))
    def check(flips, cut):
        bad = bytearray(payload[: max(cut, 1)] if cut < 12 else payload)
        for pos, x in flips:
            if pos < len(bad):
                bad[pos] ^= x
        try:
            out = bitswap_core.decompress(_repack(data, bytes(bad)), tiny_model)
        except BitswapError:
            return
        assert same(out, img)

    check()


def test_default_model_round_trip_on_a_sample():
    img = photo_crop("usc-4.2.07.png", box=(100, 100, 228, 228))
    data = bitswap_core.compress(img, smallest=False)
    c = container.unpack(data)
    assert c.codec == "bitswap" and len(c.model_id) == 32
    assert same(bitswap_core.decompress(data), img)
    assert len(data) < 128 * 128 * 3  # smaller than raw pixels, first-block overhead included


def test_payloads_are_the_same_with_and_without_the_int8_product(monkeypatch):
    """The int8 product (exact.py) is only a faster way to the same integers: the default model writes the
    same bytes with it and with the float path, and each decodes the other's payloads."""
    from bitswap_core import registry
    from bitswap_core.model import exact

    imgs = [photo_crop("usc-4.2.07.png", box=(7, 3, 103, 70)), noise_image(20, 36, 3)]
    fast = registry.load_model(registry.default_model_path())
    monkeypatch.setenv(exact.INT8_ENV, "0")
    plain = registry.load_model(registry.default_model_path())
    assert plain.exact.px.blocks[0][0].w8 is None
    monkeypatch.delenv(exact.INT8_ENV)
    datas = bitswap_core.compress_batch(imgs, fast, smallest=False)
    assert datas == bitswap_core.compress_batch(imgs, plain, smallest=False)
    assert all(same(bitswap_core.decompress(d, plain), im) for d, im in zip(datas, imgs))
    assert all(same(bitswap_core.decompress(d, fast), im) for d, im in zip(datas, imgs))


@pytest.mark.parametrize("model_id", ["b369ef88", "f7567cc2", "19e3b86f", "96e1b9a5", "653383b7", "c018a9f4",
                                      "42aaf5c8", "3523a0a0", "402d19a8", "69736ef8", "cb3c525f", "5e47c6ae",
                                      "8159ce16", "c38a73ed", "eeaa8f79"])
def test_payloads_of_earlier_default_models_keep_decoding(model_id):
    """A stored payload of each shipped default model (tests/data: the first default's in container v1,
    the second's, the third's and the fourth's in v2, the fifth's in v3 with a scale adaptation header,
    the sixth's (phase blocks) in v7, the seventh's in v8, the eighth's in v16, the ninth's to the
    thirteenth's in v17, the fourteenth's and the fifteenth's, the current default, in v18) decodes with
    model=None: the zoo keeps every shipped model, found by the id the payload records, and the decoder
    stays able to read what it wrote before."""
    from pathlib import Path

    data = (Path(__file__).parent / "data" / f"default-{model_id}-48x40.bsw").read_bytes()
    assert container.unpack(data).model_id.startswith(model_id)
    assert same(bitswap_core.decompress(data), photo_crop(box=(0, 0, 48, 40)))


def _same_adaptation(a: adapt.Adaptation, b: adapt.Adaptation) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
               for x, y in zip((a.shifts, a.spikes, a.spikes2, a.blend, a.colour),
                               (b.shifts, b.spikes, b.spikes2, b.blend, b.colour))) and a.latent == b.latent


def test_adapted_payloads_of_container_v4_to_v7_decode_and_the_encoder_still_writes_them():
    """tests/data: the fifth default's payloads of a flat-graphic crop, container v4 (scale shifts and
    spikes in its header) and v5 (and second spikes), and of a scan crop, v6 (and the blend of phase
    (0,0)'s sub-phases) and v7 (and of the later phases). All decode exactly; encoding the crops again with
    the model they name, without the border of v8 and the colour blend of v9, gives the v7 adaptation and
    coding, and with the newer parts switched off the older ones (the encoder's choice and coding are
    deterministic; a change shows here)."""
    from pathlib import Path

    from bitswap_core.coding.bitsback import encode_images
    from bitswap_core.registry import find_by_id

    data = Path(__file__).parent / "data"
    graphic, scan = photo_crop("waterloo-serrano.png", box=(0, 0, 64, 48)), photo_crop("usc-4.2.07.png",
                                                                                       box=(0, 0, 96, 96))
    stored = [(data / f"default-653383b7-serrano-64x48-v{v}.bsw").read_bytes() for v in (4, 5)]
    stored += [(data / f"default-653383b7-usc-4.2.07-96x96-v{v}.bsw").read_bytes() for v in (6, 7)]
    boxes = [container.unpack(d) for d in stored]
    assert [b.version for b in boxes] == [4, 5, 6, 7]
    parsed = [adapt.from_bytes(b.payload, 4, 3, b.version) for b in boxes]
    (one, _), (two, _), (sub, _), (full, _) = parsed
    assert one.shifts is not None and one.spikes is not None and one.spikes2 is None
    assert two.spikes2 is not None and two.spikes2.any()
    assert sub.blend is not None and sub.blend[1:4, ..., 0].any() and not sub.blend[4:].any()
    assert full.blend is not None and full.blend[4:].any()
    for d, img in zip(stored, (graphic, graphic, scan, scan)):
        assert same(bitswap_core.decompress(d), img)
    model = find_by_id(boxes[3].model_id)
    bc = model.block_coder("bitswap", 1, border=False)
    arr = np.asarray(scan, dtype=np.uint8)
    (a,) = adapt.choose(bc, [arr], colour=0, latent=0, values=0, residuals=0)
    assert _same_adaptation(a, parsed[3][0])
    assert encode_images(bc, [arr], adaptations=[a])[0].to_bytes() == parsed[3][1]
    for kw, img, (old, ans) in (({"spikes": 1, "blend": 0, "colour": 0}, graphic, parsed[0]),
                                ({"blend": 0, "colour": 0}, graphic, parsed[1]),
                                ({"blend": 1, "colour": 0}, scan, parsed[2])):
        arr = np.asarray(img, dtype=np.uint8)
        (a,) = adapt.choose(bc, [arr], **kw, latent=0, values=0, residuals=0)
        assert _same_adaptation(a, old)
        assert encode_images(bc, [arr], adaptations=[a])[0].to_bytes() == ans


def test_flipped_bits_in_each_section_of_a_v6_header_give_an_error_or_the_exact_image():
    """The stored v6 payload (scale shifts and blend in its header) behind a valid container CRC: a bit
    flipped in the band count, a shift, a section's class count or a blend weight or shift is a clear
    CorruptPayloadError (a malformed header, or pixels that fail the checksum) or, where no pixel used
    that value, the exact image; never anything else."""
    from pathlib import Path

    data = (Path(__file__).parent / "data" / "default-653383b7-usc-4.2.07-96x96-v6.bsw").read_bytes()
    img = photo_crop("usc-4.2.07.png", box=(0, 0, 96, 96))
    payload = container.unpack(data).payload
    a, _ = adapt.from_bytes(payload, 4, 3, version=6)
    assert a.shifts is not None and a.spikes is None and a.blend is not None
    blend_at = 1 + 36 + 1 + 1  # shifts section, empty spike and second-spike sections
    for pos, bit in ((0, 0x01), (0, 0x80), (5, 0x01), (20, 0x40), (37, 0x03), (38, 0x02), (blend_at, 0x01),
                     (blend_at + 1, 0x01), (blend_at + 2, 0x10), (blend_at + 30, 0x01), (blend_at + 71, 0x01)):
        bad = bytearray(payload)
        bad[pos] ^= bit
        try:
            out = bitswap_core.decompress(_repack(data, bytes(bad)))
        except CorruptPayloadError:
            continue
        assert same(out, img), pos


def test_v8_payload_decodes_and_the_encoder_still_writes_it():
    """tests/data: the sixth default's container v8 payload of a 3 x 3-block scan crop (every block but the
    last row and column reads the next blocks' border) decodes exactly, and encoding the crop again with
    that model and without the colour blend of v9 gives the same adaptation and coding (coding with the
    border is deterministic; a change shows here)."""
    from pathlib import Path

    from bitswap_core.coding.bitsback import encode_images
    from bitswap_core.registry import find_by_id

    stored = (Path(__file__).parent / "data" / "default-c018a9f4-usc-4.2.07-96x96-v8.bsw").read_bytes()
    box = container.unpack(stored)
    assert box.version == 8 and box.bordered
    scan = photo_crop("usc-4.2.07.png", box=(0, 0, 96, 96))
    assert same(bitswap_core.decompress(stored), scan)
    old, ans = adapt.from_bytes(box.payload, 4, 3, version=8)
    bc = find_by_id(box.model_id).block_coder("bitswap", container.split_for(box.version))
    arr = np.asarray(scan, dtype=np.uint8)
    (a,) = adapt.choose(bc, [arr], colour=0, latent=0, values=0, residuals=0)
    assert _same_adaptation(a, old) and a.colour is None
    assert encode_images(bc, [arr], adaptations=[a])[0].to_bytes() == ans


def test_v9_payload_with_a_colour_blend_decodes_and_the_encoder_still_writes_it():
    """tests/data: the seventh default's container v9 payload of a 3 x 3-block crop of a colour photo, whose
    header holds a colour blend, decodes exactly, and encoding the crop again without the latent shift and
    with a bits-back first block gives the same adaptation and coding."""
    from pathlib import Path

    from bitswap_core.coding.bitsback import encode_images
    from bitswap_core.registry import find_by_id

    stored = (Path(__file__).parent / "data" / "default-42aaf5c8-monarch-96x96-v9.bsw").read_bytes()
    box = container.unpack(stored)
    assert box.version == 9 and box.bordered
    a, _ = adapt.from_bytes(box.payload, 4, 3, version=9)
    assert a.colour is not None and a.colour[4:, ..., 0].any()
    crop = photo_crop("waterloo-monarch.png", box=(64, 64, 160, 160))
    assert same(bitswap_core.decompress(stored), crop)
    bc = find_by_id(box.model_id).block_coder("bitswap", container.split_for(box.version))
    arr = np.asarray(crop, dtype=np.uint8)
    old, ans = adapt.from_bytes(box.payload, 4, 3, version=9)
    (again,) = adapt.choose(bc, [arr], latent=0, values=0, residuals=0)
    assert _same_adaptation(again, old)
    assert encode_images(bc, [arr], adaptations=[again])[0].to_bytes() == ans


@pytest.mark.parametrize("name, version", [("default-c38a73ed-monarch-128x128-v18.bsw", 18),
                                           ("default-eeaa8f79-monarch-128x128-v19.bsw", 19),
                                           ("default-eeaa8f79-monarch-128x128-v20.bsw", 20)])
def test_v18_to_v20_payloads_decode_and_the_encoder_writes_them_again(monkeypatch, name, version):
    """tests/data: a 128x128 monarch crop coded with phase (0,0)'s first sub-phase split again (`phase_split=2`:
    ten coding steps, with a blend, colour blend and residual feedback on the new steps' rows) in container
    v18 (the fourteenth default), v19 (the fifteenth: its adaptation header deflated) and v20 (the fifteenth:
    its first parts on the first block's grid while the stack is shallow) decodes exactly, and encoding the
    crop again with the model it names, writing that version, gives the same bytes (the fit and the coding
    are deterministic; a change shows here)."""
    from pathlib import Path

    from bitswap_core.registry import find_by_id

    stored = (Path(__file__).parent / "data" / name).read_bytes()
    box = container.unpack(stored)
    a, rest = adapt.from_bytes(box.payload, 4, 3, version=box.version)
    assert box.version == version and a.split == 2 and a.blend.shape[0] == 10 and a.blend[1:4].any()
    assert version < 20 or rest[1] > 1  # (v20: the lead, how many parts are on the grid, after the grid byte)
    img = photo_crop("waterloo-monarch.png", (200, 100, 328, 228))
    assert bitswap_core.decompress(stored).tobytes() == img.tobytes()
    monkeypatch.setattr(container, "VERSION", version)
    assert bitswap_core.compress(img, find_by_id(box.model_id), smallest=False, phase_split=2) == stored


def test_the_encoder_splits_phase_0_twice_only_where_it_pays_and_the_header_says_so():
    """By default images of 256x256 pixels or more split phase (0,0) twice, smaller ones once (the deeper
    split's header rows cost more than a small image's pixels save); either way the payload names its split
    and decodes exactly, batched together; a split outside 1..2 is refused, a damaged one is corrupt."""
    assert [api.phase_split_for(w, h) for w, h in ((256, 256), (255, 256), (48, 40), (4000, 20))] == \
        [2, 1, 1, 2]
    imgs = [photo_crop(box=(0, 0, 48, 40)), photo_crop(box=(0, 0, 64, 48))]
    datas = [bitswap_core.compress(imgs[0], smallest=False), bitswap_core.compress(imgs[1], smallest=False,
                                                                                   phase_split=2)]
    assert [adapt.from_bytes(container.unpack(d).payload, 4, 3)[0].split for d in datas] == [1, 2]
    assert [same(a, b) for a, b in zip(bitswap_core.decompress_batch(datas), imgs)] == [True, True]
    with pytest.raises(ValueError, match="phase_split"):
        bitswap_core.compress(imgs[0], smallest=False, phase_split=3)
    box = container.unpack(datas[0])
    unpacker = zlib.decompressobj(-15)
    head = unpacker.decompress(box.payload)  # (v19: the header is deflated, the split its first byte)
    for split in (0, 3, 255):
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        payload = packer.compress(bytes([split]) + head[1:]) + packer.flush() + unpacker.unused_data
        with pytest.raises(CorruptPayloadError, match=f"split {split} is not 1 to 2"):
            bitswap_core.decompress(container.pack(replace(box, payload=payload)))
