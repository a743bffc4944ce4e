"""Animals10 on folders in the real Kaggle layout, written by the tests with every image mode."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from animals10_tree import ENGLISH, ITALIAN, image_bytes, make_tree, snapshot

from advkit.data import CLASSES, Animals10, StudyTransform, UnreadableImageError, read_rgb

SIZE = 12
OPTIONS = {"image_size": SIZE, "progress": False}


@pytest.fixture
def raw_img(tmp_path: Path) -> Path:
    root = tmp_path / "archive" / "raw-img"
    make_tree(root)
    return root


def _relative(dataset: Animals10) -> list[str]:
    return [Path(path).relative_to(dataset.root).as_posix() for path, _ in dataset.samples]


def _split_of(root: Path, name: str) -> str:
    """Which split a file falls in (the split never depends on whether the file is readable)."""
    for split in ("train", "val"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = Animals10(root, split, verify="none", on_error="skip", **OPTIONS)  # type: ignore[arg-type]
        if any(Path(path).name == name for path, _ in dataset.samples + dataset.skipped):
            return split
    raise AssertionError(f"{name} is in no split")


def test_every_file_is_in_exactly_one_split_with_its_class(tmp_path: Path) -> None:
    raw_img = tmp_path / "raw-img"
    written = make_tree(raw_img)
    train = Animals10(raw_img, "train", **OPTIONS)
    val = Animals10(raw_img, "val", **OPTIONS)
    train_files, val_files = _relative(train), _relative(val)
    assert not set(train_files) & set(val_files)
    assert sorted(train_files + val_files) == sorted(written)
    for dataset, files in ((train, train_files), (val, val_files)):
        assert [written[f] for f in files] == dataset.targets == [s[1] for s in dataset.samples]
    # 6 files per class: round(0.2 * 6) = 1 in val, 5 in train, for every class.
    assert [val.targets.count(label) for label in range(10)] == [1] * 10
    assert [train.targets.count(label) for label in range(10)] == [5] * 10
    assert train.classes == val.classes == CLASSES
    assert CLASSES[train.targets[0]] == "dog" and _relative(train)[0].startswith("cane/")


def test_items_of_every_mode_are_float_rgb_in_unit_range(raw_img: Path) -> None:
    for split in ("train", "val"):
        dataset = Animals10(raw_img, split, **OPTIONS)  # type: ignore[arg-type]
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert type(image) is torch.Tensor
            assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
            assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
            assert isinstance(label, int) and 0 <= label < 10


def test_items_match_the_study_transform_of_the_decoded_file(raw_img: Path) -> None:
    val = Animals10(raw_img, "val", **OPTIONS)
    to_tensor = StudyTransform(SIZE, train=False)
    for index, (path, label) in enumerate(val.samples):
        image, item_label = val[index]
        assert torch.equal(image, to_tensor(read_rgb(path)))
        assert item_label == label
    assert torch.equal(val[-1][0], val[len(val) - 1][0])
    with pytest.raises(IndexError, match="index 10 out of range for 10 samples"):
        val[10]


def test_only_training_items_are_flipped(raw_img: Path) -> None:
    train = Animals10(raw_img, "train", **OPTIONS)
    plain = StudyTransform(SIZE, train=False)(read_rgb(train.samples[0][0]))
    assert not torch.equal(plain, plain.flip(-1))  # the test images are not symmetric
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(40)]
    flipped = [torch.equal(d, plain.flip(-1)) for d in draws]
    assert all(f or torch.equal(d, plain) for d, f in zip(draws, flipped, strict=True))
    assert 5 < sum(flipped) < 35
    val = Animals10(raw_img, "val", **OPTIONS)
    first = val[0][0]
    assert all(torch.equal(val[0][0], first) for _ in range(20))


def test_same_seed_same_split_other_seed_other_split(raw_img: Path) -> None:
    def val_files(seed: int) -> list[str]:
        return _relative(Animals10(raw_img, "val", seed=seed, **OPTIONS))

    assert val_files(0) == val_files(0)
    assert val_files(0) != val_files(1)


def test_fraction_sets_the_share_of_each_class(raw_img: Path) -> None:
    val = Animals10(raw_img, "val", val_fraction=0.5, **OPTIONS)
    assert [val.targets.count(label) for label in range(10)] == [3] * 10


def test_english_and_mixed_case_folder_names_give_the_same_split(
    raw_img: Path, tmp_path: Path
) -> None:
    english = tmp_path / "english"
    for italian, name in zip(ITALIAN, ENGLISH, strict=True):
        shutil.copytree(raw_img / italian, english / (name.upper() if name == "cat" else name))
    for split in ("train", "val"):
        original = Animals10(raw_img, split, **OPTIONS)  # type: ignore[arg-type]
        renamed = Animals10(english, split, **OPTIONS)  # type: ignore[arg-type]
        assert [Path(p).name for p, _ in original.samples] == [
            Path(p).name for p, _ in renamed.samples
        ]
        assert original.targets == renamed.targets


def test_the_folder_containing_raw_img_is_accepted(raw_img: Path) -> None:
    from_parent = Animals10(raw_img.parent, "val", **OPTIONS)
    assert from_parent.root == raw_img
    assert from_parent.samples == Animals10(raw_img, "val", **OPTIONS).samples


def test_hidden_entries_are_ignored_and_unknown_folders_warned_about(raw_img: Path) -> None:
    (raw_img / "cane" / ".DS_Store").write_bytes(b"\x00\x01binary")
    (raw_img / ".ipynb_checkpoints").mkdir()
    (raw_img / "gatto" / ".thumbnails").mkdir()
    (raw_img / "gatto" / ".thumbnails" / "x.jpg").write_bytes(b"not an image")
    before = Animals10(raw_img, "train", **OPTIONS).samples
    (raw_img / "zebra").mkdir()
    with pytest.warns(
        UserWarning, match=r"ignoring folders that are not Animals-10.*'zebra'"
    ) as record:
        after = Animals10(raw_img, "train", **OPTIONS)
    assert record[0].filename == __file__  # the warning points at the caller
    assert after.samples == before and not after.skipped


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("garbage.jpg", b"GIF89a but then nothing sensible" * 4, "cannot identify image"),
        ("notes.txt", b"a text file among the images", "not an image file"),
        ("empty.jpeg", b"", "cannot identify image"),
    ],
)
def test_a_file_that_is_not_an_image_raises_naming_it_or_is_skipped(
    raw_img: Path, name: str, content: bytes, reason: str
) -> None:
    before = {split: Animals10(raw_img, split, **OPTIONS).samples for split in ("train", "val")}
    (raw_img / "mucca" / name).write_bytes(content)
    split = _split_of(raw_img, name)
    pattern = rf"cannot read image '.*mucca/{name.replace('.', '[.]')}'.*{reason}"
    with pytest.raises(UnreadableImageError, match=pattern + ".*on_error='skip'"):
        Animals10(raw_img, split, **OPTIONS)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match=rf"skipping 1 unreadable file.*{name}.*{reason}") as w:
        skipping = Animals10(raw_img, split, on_error="skip", **OPTIONS)  # type: ignore[arg-type]
    assert w[0].filename == __file__
    assert [Path(p).name for p, _ in skipping.skipped] == [name]
    assert all(Path(p).name != name for p, _ in skipping.samples)
    # The new file takes part in the cow class's split; the other classes are unchanged.
    cow = CLASSES.index("cow")
    assert [s for s in skipping.samples if s[1] != cow] == [s for s in before[split] if s[1] != cow]


def _truncate_one(raw_img: Path) -> tuple[Path, str]:
    path = raw_img / "pecora" / "broken.jpeg"
    data = image_bytes(7, 99, variant=0, size=(64, 48))
    # Keep the header and the start of the scan (after the SOS marker): the pixels are cut.
    path.write_bytes(data[: data.index(b"\xff\xda") + 40])
    return path, _split_of(raw_img, path.name)


def test_a_truncated_file_fails_a_full_check_at_construction(raw_img: Path) -> None:
    path, split = _truncate_one(raw_img)
    Animals10(raw_img, split, verify="header", **OPTIONS)  # type: ignore[arg-type]
    with pytest.raises(UnreadableImageError, match=r"pecora/broken\.jpeg.*truncated"):
        Animals10(raw_img, split, verify="full", **OPTIONS)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable.*broken\.jpeg"):
        full = Animals10(raw_img, split, verify="full", on_error="skip", **OPTIONS)  # type: ignore[arg-type]
    assert str(path) not in [p for p, _ in full.samples]


def test_a_truncated_file_raises_when_loaded_or_is_replaced(raw_img: Path) -> None:
    path, split = _truncate_one(raw_img)
    strict = Animals10(raw_img, split, **OPTIONS)  # type: ignore[arg-type]
    index = [p for p, _ in strict.samples].index(str(path))
    with pytest.raises(UnreadableImageError, match=r"pecora/broken\.jpeg.*on_error='skip'"):
        strict[index]
    lenient = Animals10(raw_img, split, on_error="skip", **OPTIONS)  # type: ignore[arg-type]
    lenient.transform = StudyTransform(SIZE, train=False)  # compare without random flips
    expected = lenient[(index + 1) % len(lenient)]
    with pytest.warns(UserWarning, match=r"broken\.jpeg.*next readable sample"):
        replaced = lenient[index]
    assert torch.equal(replaced[0], expected[0]) and replaced[1] == expected[1]
    assert [Path(p).name for p, _ in lenient.skipped] == ["broken.jpeg"]


def test_nothing_is_written_into_the_data_folder(raw_img: Path) -> None:
    (raw_img / "cane" / "garbage.jpg").write_bytes(b"garbage")
    _truncate_one(raw_img)
    before = snapshot(raw_img.parent)
    for split in ("train", "val"):
        for verify in ("none", "header", "full"):
            with pytest.warns(UserWarning):
                dataset = Animals10(
                    raw_img.parent,
                    split,  # type: ignore[arg-type]
                    verify=verify,  # type: ignore[arg-type]
                    on_error="skip",
                    **OPTIONS,
                )
                for index in range(len(dataset)):
                    dataset[index]
        with pytest.raises(UnreadableImageError):
            Animals10(raw_img, split, verify="full", **OPTIONS)  # type: ignore[arg-type]
    assert snapshot(raw_img.parent) == before


def test_a_custom_transform_receives_the_rgb_image(raw_img: Path) -> None:
    dataset = Animals10(raw_img, "val", transform=lambda image: image, **OPTIONS)
    image, _ = dataset[0]
    assert image.mode == "RGB" and image.size == (13, 9)


def test_description_says_real_photographs(raw_img: Path) -> None:
    val = Animals10(raw_img, "val", **OPTIONS)
    assert val.synthetic is False
    assert val.description.startswith("Animals-10 (Kaggle, real photographs), val split: 10 ")
    assert "Animals10(" in repr(val) and "split='val'" in repr(val)


def test_missing_or_misplaced_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="root must be a path, got NoneType"):
        Animals10(None, **OPTIONS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Animals-10 folder not found: '.*nowhere'.*raw-img"):
        Animals10(tmp_path / "nowhere", **OPTIONS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="Animals-10 folder not found"):
        Animals10(tmp_path / "file", **OPTIONS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"missing class folders .*'cane' \(or 'dog'\)"):
        Animals10(tmp_path / "empty", **OPTIONS)


def test_missing_class_is_named(raw_img: Path) -> None:
    shutil.rmtree(raw_img / "ragno")
    with pytest.raises(
        ValueError, match=r"missing class folders .*: 'ragno' \(or 'spider'\); found"
    ):
        Animals10(raw_img, **OPTIONS)


def test_class_without_images_is_named(raw_img: Path) -> None:
    shutil.rmtree(raw_img / "farfalla")
    (raw_img / "farfalla").mkdir()
    with pytest.raises(ValueError, match=r"farfalla' \(butterfly\) has no image files"):
        Animals10(raw_img, **OPTIONS)
    (raw_img / "farfalla" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"farfalla' \(butterfly\) has no image files"):
        Animals10(raw_img, **OPTIONS)


def test_a_class_in_two_folders_is_an_error(raw_img: Path) -> None:
    shutil.copytree(raw_img / "cane", raw_img / "dog")
    with pytest.raises(ValueError, match=r"class 'dog' has several folders.*'cane', 'dog'"):
        Animals10(raw_img, **OPTIONS)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"split": "test"}, ValueError, "split must be 'train' or 'val', got 'test'"),
        ({"on_error": "ignore"}, ValueError, "on_error must be 'raise' or 'skip', got 'ignore'"),
        ({"verify": "all"}, ValueError, "verify must be 'none', 'header' or 'full', got 'all'"),
        ({"image_size": 0}, ValueError, "image_size must be >= 1, got 0"),
        ({"image_size": "224"}, TypeError, "image_size must be an int, got str"),
        ({"val_fraction": 1.0}, ValueError, r"val_fraction must be in \(0, 1\), got 1.0"),
        ({"seed": None}, TypeError, "seed must be an int, got NoneType"),
        ({"transform": "resize"}, TypeError, "transform must be callable, got str"),
    ],
)
def test_bad_arguments_are_rejected(
    raw_img: Path, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {"progress": False, **kwargs}
    with pytest.raises(error, match=message):
        Animals10(raw_img, **arguments)  # type: ignore[arg-type]
