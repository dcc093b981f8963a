from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vseg.data.palette import DAVIS_PALETTE, read_mask, rgb_to_ids, write_mask
from vseg.errors import InputError


def test_davis_palette_first_colours():
    # The published DAVIS / VOC colours for ids 0..4.
    assert DAVIS_PALETTE[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert len({tuple(c) for c in DAVIS_PALETTE}) == 256


def test_roundtrip_keeps_ids_and_palette(tmp_path):
    ids = np.zeros((7, 9), np.uint8)
    ids[1:3, 2:5] = 1
    ids[4:, 6:] = 3
    own = DAVIS_PALETTE.copy()
    own[1] = (10, 200, 30)
    path = write_mask(tmp_path / "m.png", ids, own)
    img = Image.open(path)
    assert img.mode == "P"
    back, pal = read_mask(path)
    np.testing.assert_array_equal(back, ids)
    np.testing.assert_array_equal(pal[1], (10, 200, 30))
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary file left behind


def test_rgb_mask_maps_colours_to_ids(tmp_path):
    ids = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    Image.fromarray(DAVIS_PALETTE[ids]).save(tmp_path / "rgb.png")
    back, _ = read_mask(tmp_path / "rgb.png")
    np.testing.assert_array_equal(back, ids)


def test_rgb_mask_with_unknown_colour_is_one_clear_error(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "bad.png")
    with pytest.raises(InputError, match=r"bad\.png.*#010203"):
        read_mask(tmp_path / "bad.png")


def test_grey_mask_reads_as_ids(tmp_path):
    ids = np.array([[0, 2], [5, 0]], np.uint8)
    Image.fromarray(ids, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png")[0], ids)


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_mask(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="text.png"):
        read_mask(tmp_path / "text.png")


def test_rgb_to_ids_prefers_first_duplicate_colour():
    pal = np.zeros((256, 3), np.uint8)
    pal[1] = pal[2] = (9, 9, 9)
    rgb = np.full((1, 1, 3), 9, np.uint8)
    assert rgb_to_ids(rgb, pal)[0, 0] == 1


def test_atomic_save_gives_umask_permissions(tmp_path):
    import os

    from vseg.data.palette import atomic_save

    old = os.umask(0o022)
    try:
        target = tmp_path / "out.bin"
        atomic_save(target, lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert target.read_bytes() == b"x"
    assert (target.stat().st_mode & 0o777) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


def test_atomic_save_refuses_a_path_that_is_not_a_regular_file(tmp_path):
    from vseg.data.palette import atomic_save
    from vseg.errors import InputError

    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        atomic_save(folder, lambda f: f.write(b"x"))
    with pytest.raises(InputError, match="not a regular file"):
        atomic_save(Path("/dev/null"), lambda f: f.write(b"x"))
    assert Path("/dev/null").is_char_device()
