"""Image folders: only regular files, no escaping symlinks, any file name, no decompression bombs."""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from pathlib import Path

import pytest
from animals10_tree import image_bytes, make_tree

from advkit.data import Animals10, UnreadableImageError, read_rgb
from advkit.data.images import check_image

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file types")


def both_splits(root: Path, **options: object) -> list[Animals10]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Animals10(root, split, progress=False, **options) for split in ("train", "val")]


def raised_for(root: Path, name: str, **options: object) -> str:
    """The message of the error a split raised naming ``name`` (the file is in one split)."""
    messages = []
    for split in ("train", "val"):
        try:
            Animals10(root, split, progress=False, **options)
        except UnreadableImageError as err:
            messages.append(str(err))
    found = [m for m in messages if name in m]
    assert len(found) == 1, messages
    return found[0]


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width x height`` pixels, followed by a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@posix_only
@pytest.mark.timeout(60)
@pytest.mark.parametrize("verify", ["header", "none"])
def test_a_fifo_named_jpg_is_never_opened(tmp_path: Path, verify: str) -> None:
    make_tree(tmp_path, per_class=3)
    os.mkfifo(tmp_path / "cane" / "pipe.jpg")
    message = raised_for(tmp_path, "pipe.jpg", verify=verify)
    assert "FIFO" in message
    skipped = [
        p for ds in both_splits(tmp_path, on_error="skip", verify=verify) for p, _ in ds.skipped
    ]
    assert [Path(p).name for p in skipped] == ["pipe.jpg"]


@posix_only
def test_read_rgb_refuses_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(UnreadableImageError, match=r"pipe\.png.*FIFO"):
        read_rgb(tmp_path / "pipe.png")


@posix_only
def test_a_symlink_out_of_the_data_folder_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "secret"
    make_tree(root, per_class=3)
    outside.mkdir()
    (outside / "private.png").write_bytes(image_bytes(0, 0, 0))
    os.symlink(outside / "private.png", root / "cane" / "link.png")
    first = sorted((root / "cane").iterdir())[0]
    os.symlink(first, root / "cane" / f"inside{first.suffix}")  # inside the folder: fine
    message = raised_for(root, "link.png")
    assert "outside the data folder" in message and "follow_symlinks=True" in message
    followed = both_splits(root, follow_symlinks=True)
    names = {Path(p).name for ds in followed for p, _ in ds.samples}
    assert {"link.png", f"inside{first.suffix}"} <= names


@posix_only
def test_a_non_utf8_file_name_is_a_path_like_any_other(tmp_path: Path) -> None:
    make_tree(tmp_path, per_class=3)
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    try:
        (tmp_path / "cane" / name).write_bytes(image_bytes(0, 9, 0))
    except (UnicodeEncodeError, OSError):
        pytest.skip("the file system refuses non-UTF-8 names")
    splits = both_splits(tmp_path)
    paths = [p for ds in splits for p, _ in ds.samples]
    assert sum(Path(p).name == name for p in paths) == 1
    for ds in splits:
        for index in range(len(ds)):
            ds[index]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(13000, 13500))  # 175.5 megapixels in a tiny file
    with pytest.raises(UnreadableImageError, match=r"bomb\.png.*13000x13500.*max_pixels"):
        read_rgb(path)
    with pytest.raises(UnreadableImageError, match=r"bomb\.png.*max_pixels"):
        check_image(path, "header")
    with pytest.raises(UnreadableImageError, match=r"bomb\.png.*max_pixels=100"):
        read_rgb(tmp_path.parent / tmp_path.name / "bomb.png", max_pixels=100)


def test_a_bomb_in_a_data_set_is_named(tmp_path: Path) -> None:
    make_tree(tmp_path, per_class=3)
    (tmp_path / "gatto" / "huge.png").write_bytes(bomb_png(9000, 9000))
    assert "max_pixels" in raised_for(tmp_path, "huge.png")
    small = both_splits(tmp_path, max_pixels=10_000, on_error="skip")
    assert any(Path(p).name == "huge.png" for ds in small for p, _ in ds.skipped)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"max_pixels": 0}, ValueError, "max_pixels must be >= 1, got 0"),
        ({"max_pixels": -5}, ValueError, "max_pixels must be >= 1, got -5"),
        # Wrong types are TypeErrors, as everywhere in advkit (a float was a ValueError).
        ({"max_pixels": 1.5}, TypeError, "max_pixels must be an int, got float"),
        ({"max_pixels": True}, TypeError, "max_pixels must be an int, got bool"),
        ({"follow_symlinks": 1}, TypeError, "follow_symlinks must be a bool, got int"),
    ],
)
def test_folder_settings_are_validated(
    tmp_path: Path, settings: dict, error: type, message: str
) -> None:
    make_tree(tmp_path, per_class=2)
    with pytest.raises(error, match=message):
        Animals10(tmp_path, progress=False, **settings)
