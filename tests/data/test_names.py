"""toolkit.data.names: the pairing key and the kind of a file, from names alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.data.names import (
    FOLDER_NAMES,
    KINDS,
    PairName,
    format_background_name,
    format_pair_name,
    is_image_name,
    kind_of_path,
    looks_like_background,
    parse_background_name,
    parse_pair_name,
)


def test_kinds_and_original_folder_names():
    assert KINDS == ("bg", "fgbg", "mask", "depth")
    assert FOLDER_NAMES == {"bg": "Background", "fgbg": "OverlayedImages",
                            "mask": "OverlayedMasks", "depth": "DepthImage"}
    for kind, folder in FOLDER_NAMES.items():
        assert kind_of_path([folder]) == kind
        assert kind_of_path([f"{folder}.zip"]) == kind


@pytest.mark.parametrize("name, expected", [
    ("combined_s12_p3_it7.jpg", PairName(12, 3, 7)),
    ("combined_s1_p100_it39.JPG", PairName(1, 100, 39)),
    ("Combined_S012_P3_IT07.png", PairName(12, 3, 7)),
    ("OverlayedImages/7/combined_s12_p3_it7.jpeg", PairName(12, 3, 7)),
    ("combined_s2_p3_it4.webp", PairName(2, 3, 4)),
    ("combined_s2_p3_it4.bmp", PairName(2, 3, 4)),
])
def test_parse_pair_name_accepts(name, expected):
    assert parse_pair_name(name) == expected
    assert parse_pair_name(name).key == f"combined_s{expected.bg}_p{expected.fg}_it{expected.it}"


@pytest.mark.parametrize("name", [
    "combined_s12_p3_it7", "combined_s12_p3_it7.txt", "combined_s12_p3.jpg", "combined_s_p3_it7.jpg",
    "xcombined_s1_p1_it1.jpg", "combined_s1_p1_it1x.jpg", "combined_s-1_p1_it1.jpg", "Shelves_3.jpg",
    "combined_s1_p1_it1234567890.jpg", "combined_s١_p1_it1.jpg", ".jpg", "",
])
def test_parse_pair_name_rejects(name):
    assert parse_pair_name(name) is None


@pytest.mark.parametrize("name, expected", [
    ("Shelves_1.jpg", 1), ("Shelves_100.PNG", 100), ("Background/Shelves_7.jpeg", 7),
    ("my_room_42.jpg", 42),  # the notebook only read the text after the last "_"
    ("Shelves_.jpg", None), ("Shelves_x.jpg", None), ("Shelves7.jpg", None), ("_7.jpg", None),
    ("Shelves_3.gif", None), ("Shelves_3", None), ("combined_s1_p1_it0.jpg", None),
])
def test_parse_background_name(name, expected):
    assert parse_background_name(name) == expected


def test_looks_like_background_needs_the_shelves_prefix():
    assert looks_like_background("shelves_3.jpg")
    assert not looks_like_background("room_3.jpg")


@pytest.mark.parametrize("parts, kind", [
    (["data", "Background"], "bg"),
    (["data", "OverlayedImages", "7"], "fgbg"),
    (["OverlayedMasks.zip", "OverlayedMasks", "0"], "mask"),
    (["DepthImage3.zip"], "depth"),  # the original shipped four numbered zips per kind
    (["fg_bg"], "fgbg"), (["FG-BG"], "fgbg"), (["masks"], "mask"), (["depth"], "depth"),
    (["Depth Maps"], "depth"), (["bg"], "bg"), (["backgrounds"], "bg"),
    (["depth-project", "OverlayedMasks", "1"], "mask"),  # the innermost folder wins
    (["data", "0"], None), ([], None), (["images"], None),
])
def test_kind_of_path(parts, kind):
    assert kind_of_path(parts) == kind


def test_is_image_name():
    assert is_image_name("a.JPG") and is_image_name("x/y.webp")
    assert not is_image_name("a.zip") and not is_image_name("jpg") and not is_image_name("a.")


ids = st.integers(min_value=0, max_value=999_999_999)
exts = st.sampled_from(["jpg", "jpeg", "png", "bmp", "webp"]).flatmap(
    lambda e: st.sampled_from([e, e.upper(), e.capitalize()]))


@given(ids, ids, ids, exts)
def test_pair_name_round_trip(bg, fg, it, ext):
    name = format_pair_name(bg, fg, it, ext)
    pn = parse_pair_name(name)
    assert pn == PairName(bg, fg, it)
    assert parse_pair_name(pn.filename(ext.lower())) == pn
    assert parse_pair_name(f"OverlayedImages/{it}/{name}") == pn
    assert parse_background_name(name) is None  # a pair name is never a background


@given(ids, exts)
def test_background_name_round_trip(bg, ext):
    assert parse_background_name(format_background_name(bg, ext)) == bg


@given(st.text())
def test_random_names_never_crash(text):
    pn = parse_pair_name(text)
    assert pn is None or isinstance(pn, PairName)
    k = parse_background_name(text)
    assert k is None or (isinstance(k, int) and k >= 0)
    image = is_image_name(text)
    background = looks_like_background(text)
    assert isinstance(image, bool) and isinstance(background, bool)
    assert image or (pn is None and k is None and not background)  # only image names parse as anything
    assert not background or k is not None  # a Shelves_<k> name has its number
    assert pn is None or not background  # a pair name is never a background


@given(st.lists(st.text(), max_size=6))
def test_random_paths_never_crash(parts):
    assert kind_of_path(parts) in (None, *KINDS)
