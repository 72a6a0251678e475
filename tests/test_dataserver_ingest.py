"""Decoding uploaded archives: good layouts, conversions, and every kind of refused archive."""

from __future__ import annotations

import hashlib
import io
import itertools
import stat
import unicodedata
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from mlitb.dataserver import (
    DEFAULT_LIMITS,
    InputShape,
    UploadLimits,
    decode_archive,
    format_ids,
    parse_ids,
    write_archive,
)
from mlitb.errors import UploadError

RGB8 = InputShape(width=8, height=8, channels=3)
FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # tmp_path is reused: every example rewrites it
rng = np.random.default_rng(1)


def image_bytes(pixels: np.ndarray, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def random_rgb(h: int = 8, w: int = 8) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_zip(path: Path, entries: dict[str, bytes],
             compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def refused(path: Path, shape: InputShape = RGB8, limits: UploadLimits = DEFAULT_LIMITS) -> str:
    with pytest.raises(UploadError) as caught:
        decode_archive(path, shape, limits)
    return str(caught.value)


# -- good archives ---------------------------------------------------------------------------
def test_good_archive_decodes_pixels_labels_and_hashes(tmp_path: Path) -> None:
    samples = [(label, random_rgb()) for label in ("dog", "cat", "dog", "cat", "emu")]
    path = write_archive(tmp_path / "good.zip", samples)
    decoded = decode_archive(path, RGB8)
    assert decoded.images.shape == (5, 3, 8, 8) and decoded.images.dtype == np.uint8
    assert decoded.label_names == ("cat", "dog", "emu")
    assert decoded.label_counts() == {"cat": 2, "dog": 2, "emu": 1}
    with zipfile.ZipFile(path) as archive:
        for i, name in enumerate(decoded.names):
            index = int(name.rsplit("/", 1)[1].split(".")[0])
            label, pixels = samples[index]
            assert decoded.label_names[decoded.labels[i]] == label
            assert np.array_equal(decoded.images[i], pixels.transpose(2, 0, 1))
            assert decoded.sha256[i] == hashlib.sha256(archive.read(name)).hexdigest()


def test_decoding_is_deterministic_and_interleaves_labels(tmp_path: Path) -> None:
    samples = [(label, random_rgb(4, 4)) for label in ("a", "b") for _ in range(40)]
    path = write_archive(tmp_path / "two.zip", samples)
    shape = InputShape(width=4, height=4, channels=3)
    first, second = decode_archive(path, shape), decode_archive(path, shape)
    assert first.names == second.names and np.array_equal(first.images, second.images)
    assert 0 < first.labels[:20].sum() < 20  # the first 20 ids are not all one label


def test_wrapper_folder_is_stripped(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "w.zip", [("cat", random_rgb()), ("dog", random_rgb())],
                         wrapper="my-dataset")
    decoded = decode_archive(path, RGB8)
    assert decoded.label_names == ("cat", "dog")


def test_junk_is_ignored(tmp_path: Path) -> None:
    png = image_bytes(random_rgb())
    path = make_zip(tmp_path / "junk.zip", {
        "cat/": b"", "cat/1.png": png, "cat/.DS_Store": b"\0junk", "Thumbs.db": b"junk",
        "__MACOSX/cat/._1.png": b"\0\5\26\7", "cat/._1.png": b"\0\5\26\7",
        ".DS_Store": b"junk", "dog/desktop.ini": b"[x]", "dog/2.png": png})
    decoded = decode_archive(path, RGB8)
    assert decoded.label_names == ("cat", "dog") and len(decoded) == 2


def test_rgb_to_grayscale_and_grayscale_to_rgb(tmp_path: Path) -> None:
    rgb, gray = random_rgb(), rng.integers(0, 256, (8, 8), dtype=np.uint8)
    path = write_archive(tmp_path / "modes.zip", [("rgb", rgb), ("gray", gray)])
    as_gray = decode_archive(path, InputShape(width=8, height=8, channels=1))
    as_rgb = decode_archive(path, RGB8)
    by_label = {as_gray.label_names[label]: i for i, label in enumerate(as_gray.labels)}
    assert as_gray.images.shape == (2, 1, 8, 8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(as_gray.images[by_label["rgb"], 0], expected)
    assert np.array_equal(as_gray.images[by_label["gray"], 0], gray)
    for channel in range(3):
        assert np.array_equal(as_rgb.images[by_label["gray"], channel], gray)


def test_other_sizes_are_fitted_with_bilinear_and_center_crop(tmp_path: Path) -> None:
    wide = random_rgb(10, 20)
    flat = np.full((30, 12, 3), (10, 200, 90), dtype=np.uint8)
    path = write_archive(tmp_path / "sizes.zip", [("wide", wide), ("flat", flat)])
    decoded = decode_archive(path, RGB8)
    by_label = {decoded.label_names[label]: i for i, label in enumerate(decoded.labels)}
    expected = ImageOps.fit(Image.fromarray(wide), (8, 8), method=Image.Resampling.BILINEAR)
    assert np.array_equal(decoded.images[by_label["wide"]],
                          np.asarray(expected).transpose(2, 0, 1))
    assert (decoded.images[by_label["flat"]].reshape(3, -1).T == (10, 200, 90)).all()


def test_jpeg_and_other_formats_decode(tmp_path: Path) -> None:
    pixels = random_rgb()
    path = make_zip(tmp_path / "formats.zip", {
        f"x/1.{ext}": image_bytes(pixels, fmt) for fmt, ext in
        (("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tif"))})
    assert len(decode_archive(path, RGB8)) == 5


# -- refused archives ----------------------------------------------------------------------------
def test_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "a.zip").write_bytes(b"this is not a zip at all" * 10)
    assert "not a valid zip archive" in refused(tmp_path / "a.zip")
    (tmp_path / "b.zip").write_bytes(image_bytes(random_rgb()))
    assert "not a valid zip archive" in refused(tmp_path / "b.zip")


@pytest.mark.parametrize("name", [
    "../evil.png", "cat/../../evil.png", "/etc/cat/evil.png", "cat\\evil.png", "C:/cat/x.png",
    "cat/./x.png", "cat//x.png", "ca\x07t/x.png",
])
def test_path_traversal_and_odd_names(tmp_path: Path, name: str) -> None:
    png = image_bytes(random_rgb())
    path = make_zip(tmp_path / "t.zip", {"cat/ok.png": png, name: png})
    assert repr(name) in refused(path)


def test_symlink_entry(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cat/ok.png", image_bytes(random_rgb()))
        link = zipfile.ZipInfo("cat/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert "'cat/link.png': is a symbolic link" in refused(path)


def test_encrypted_entry(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "enc.zip", {"cat/secret.png": image_bytes(random_rgb())})
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the flag fields
        data[data.index(signature) + offset] |= 0x1  # "encrypted"
    path.write_bytes(bytes(data))
    assert "'cat/secret.png': is encrypted" in refused(path)


def test_zip_bomb_entry_ratio(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "bomb.zip", {"cat/ok.png": image_bytes(random_rgb()),
                                           "cat/bomb.png": bytes(8 << 20)}, zipfile.ZIP_DEFLATED)
    message = refused(path)
    assert "'cat/bomb.png': expands" in message and "zip bomb" in message


def test_zip_bomb_whole_archive_ratio(tmp_path: Path) -> None:
    entries = {f"cat/{i}.png": bytes(64 << 10) for i in range(40)}
    path = make_zip(tmp_path / "many.zip", entries, zipfile.ZIP_DEFLATED)
    assert "the archive expands" in refused(path)


def test_file_and_total_size_limits(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "big.zip", {f"cat/{i}.png": image_bytes(random_rgb(64, 64))
                                           for i in range(3)})
    size = len(image_bytes(random_rgb(64, 64)))
    assert "per file" in refused(path, limits=UploadLimits(max_file_bytes=size // 2))
    assert "bytes uncompressed" in refused(path, limits=UploadLimits(max_total_bytes=2 * size))
    assert "the archive is" in refused(path, limits=UploadLimits(max_archive_bytes=100))


def test_image_pixel_and_decoded_size_limits(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "px.zip", [("cat", random_rgb(64, 64))])
    assert "64x64 pixels" in refused(path, limits=UploadLimits(max_image_pixels=1000))
    assert "need" in refused(path, limits=UploadLimits(max_decoded_bytes=100))


def test_a_non_image_file(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "txt.zip", {"cat/1.png": image_bytes(random_rgb()),
                                          "cat/notes.txt": b"hello"})
    message = refused(path)
    # The file's name and what it holds, not the BytesIO object Pillow's own message names.
    assert "'cat/notes.txt': is not an image (it holds text; JPEG, PNG" in message
    assert "BytesIO" not in message


def test_a_damaged_image_says_what_the_decoder_found(tmp_path: Path) -> None:
    truncated = image_bytes(random_rgb())[:60]
    path = make_zip(tmp_path / "cut.zip", {"cat/1.png": truncated})
    message = refused(path)
    assert "'cat/1.png': is not an image Pillow can decode" in message
    assert "BytesIO" not in message


def test_eps_is_not_accepted(tmp_path: Path) -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    path = make_zip(tmp_path / "eps.zip", {"cat/x.eps": eps})
    assert "'cat/x.eps': is not an image" in refused(path)


@pytest.mark.parametrize("entries", [{}, {"cat/": b"", "dog/": b""}, {"__MACOSX/": b"",
                                                                       ".DS_Store": b"x"}])
def test_empty_archive(tmp_path: Path, entries: dict[str, bytes]) -> None:
    assert "holds no files" in refused(make_zip(tmp_path / "empty.zip", entries))


def test_no_label_folder(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "flat.zip", {"1.png": image_bytes(random_rgb())})
    assert "'1.png': is not inside a label folder" in refused(path)


def test_bad_layouts(tmp_path: Path) -> None:
    png = image_bytes(random_rgb())
    deep = make_zip(tmp_path / "deep.zip", {"a/b/c/1.png": png})
    assert "nested too deep" in refused(deep)
    two = make_zip(tmp_path / "two.zip", {"train/cat/1.png": png, "test/cat/2.png": png})
    assert "several top-level folders" in refused(two)
    mixed = make_zip(tmp_path / "mixed.zip", {"data/cat/1.png": png, "data/readme.png": png})
    assert "'data/readme.png'" in refused(mixed)


def test_too_many_files(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "n.zip", [("cat", random_rgb())] * 6)
    assert "6 entries, over the limit of 5" in refused(path, limits=UploadLimits(max_entries=5))


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_corrupted_images(tmp_path: Path, cut: float) -> None:
    png, jpg = image_bytes(random_rgb(32, 32)), image_bytes(random_rgb(32, 32), "JPEG")
    for name, data in (("cat/bad.png", png), ("cat/bad.jpg", jpg)):
        path = make_zip(tmp_path / "bad.zip", {"cat/good.png": png,
                                               name: data[:int(len(data) * cut)]})
        assert f"'{name}': is not an image Pillow can decode" in refused(path)


def test_corrupted_archive_member(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "crc.zip", {"cat/1.png": image_bytes(random_rgb())})
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside the stored member's bytes: its CRC no longer matches
    path.write_bytes(bytes(data))
    message = refused(path)
    assert "'cat/1.png'" in message or "not a valid zip archive" in message


def test_bad_shapes() -> None:
    with pytest.raises(UploadError, match="channels must be 1"):
        InputShape(width=8, height=8, channels=4)
    with pytest.raises(UploadError, match="width must be between"):
        InputShape(width=0, height=8, channels=3)


# -- properties -----------------------------------------------------------------------------------
labels_st = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_ "),
                    min_size=1, max_size=12).filter(lambda s: s.strip(". ") == s)


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE_OK)
@given(labels=st.lists(labels_st, min_size=1, max_size=12), channels=st.sampled_from([1, 3]),
       wrapper=st.sampled_from([None, "data"]), side=st.integers(1, 12))
def test_any_archive_round_trips(tmp_path: Path, labels: list[str], channels: int,
                                 wrapper: str | None, side: int) -> None:
    shape = (side, side) if channels == 1 else (side, side, 3)
    samples = [(label, rng.integers(0, 256, shape, dtype=np.uint8)) for label in labels]
    path = write_archive(tmp_path / "any.zip", samples, wrapper=wrapper)
    decoded = decode_archive(path, InputShape(width=side, height=side, channels=channels))
    nfc = partial(unicodedata.normalize, "NFC")  # labels are stored in Unicode NFC
    assert decoded.label_names == tuple(sorted({nfc(x) for x in labels}))
    for i, name in enumerate(decoded.names):
        label, pixels = samples[int(name.rsplit("/", 1)[1].split(".")[0])]
        assert decoded.label_names[decoded.labels[i]] == nfc(label)
        assert np.array_equal(decoded.images[i].transpose(1, 2, 0).squeeze(-1) if channels == 1
                              else decoded.images[i].transpose(1, 2, 0), pixels)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.binary(max_size=2000), flips=st.lists(st.integers(0, 10_000), max_size=8))
def test_garbage_and_damaged_archives_only_raise_upload_error(
        tmp_path: Path, data: bytes, flips: list[int]) -> None:
    good = bytearray(make_zip(tmp_path / "g.zip", {"cat/1.png": image_bytes(random_rgb(4, 4)),
                                                   "dog/2.png": image_bytes(random_rgb(4, 4))},
                              zipfile.ZIP_DEFLATED).read_bytes())
    for flip in flips:
        good[flip % len(good)] ^= 0x5A
    for blob in (data, bytes(good)):
        (tmp_path / "x.zip").write_bytes(blob)
        try:
            decode_archive(tmp_path / "x.zip", InputShape(width=4, height=4, channels=3))
        except UploadError:
            pass


@given(st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=50))
def test_id_encoding_round_trips(ids: list[int]) -> None:
    assert parse_ids(format_ids(ids), max_count=10**6).tolist() == ids


@given(st.lists(st.integers(0, 200), min_size=1, max_size=30, unique=True).map(sorted))
def test_id_runs_are_compact(ids: list[int]) -> None:
    text = format_ids(ids)
    runs = 1 + sum(1 for a, b in itertools.pairwise(ids) if b != a + 1)
    assert text.count(",") == runs - 1


@pytest.mark.parametrize("text,message", [
    ("1-", "not an id"), ("a", "not an id"), ("5-3", "ends before"), ("1,1", "more than once"),
    ("0-2,2", "more than once"), ("4294967296", "largest id"), ("0-2000", "more than 1000"),
    ("-1", "not an id"), ("1;2", "not an id"),
])
def test_bad_id_lists(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ids(text, max_count=1000)
