"""Properties of name parsing and of the reader's pairing (Hypothesis).

test_names.py holds the examples and the plain round trips; here: what must hold for *every*
name — spelling variants that mean the same key, near misses that must never pair, and the
reader pairing exactly the keys that have all three kinds plus their background, whatever
the order, case and container (zip members, read by name: no image is decoded here).
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.core.errors import UserError
from toolkit.data.names import (
    FOLDER_NAMES,
    IMAGE_EXTENSIONS,
    KINDS,
    PairName,
    format_background_name,
    kind_of_component,
    parse_background_name,
    parse_pair_name,
)
from toolkit.data.reader import PAIR_KINDS, open_dataset

ids = st.integers(0, 999_999_999)
small = st.integers(0, 6)
exts = st.sampled_from(sorted(IMAGE_EXTENSIONS))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _recase(text: str, flips: list[bool]) -> str:
    return "".join(ch.upper() if flip else ch for ch, flip in zip(text, flips + [False] * len(text)))


@FAST
@given(ids, ids, ids, exts, st.lists(st.booleans(), max_size=40), st.integers(0, 3))
def test_case_and_leading_zeros_do_not_change_the_key(bg, fg, it, ext, flips, zeros):
    stem = f"combined_s{str(bg).zfill(min(9, len(str(bg)) + zeros))}_p{fg}_it{it}"
    name = _recase(f"{stem}.{ext}", flips)
    assert parse_pair_name(name) == PairName(bg, fg, it)


@FAST
@given(st.text(max_size=60))
def test_parsed_ids_are_bounded_and_the_key_round_trips(text):
    pn = parse_pair_name(text)
    if pn is not None:
        assert all(0 <= v < 10**9 for v in (pn.bg, pn.fg, pn.it))
        assert parse_pair_name(pn.filename("png")) == pn
    k = parse_background_name(text)
    if k is not None:
        assert 0 <= k < 10**9 and parse_background_name(format_background_name(k)) == k


near_misses = st.sampled_from([
    "combined_s{b}_p{f}_it{i} .jpg",  # a space before the extension
    "combined_s{b}_pl_it{i}.jpg",  # letter l for digit 1
    "combined-s{b}-p{f}-it{i}.jpg",  # dashes
    "combined_s{b}_p{f}_it{i}.jpg.bak",  # not an image extension
    "combined_s{b}_p{f}.jpg",  # no iteration
    "combinedd_s{b}_p{f}_it{i}.jpg",
    "combined_s{b}_p{f}_it{i}_copy.jpg",
    "combined_s{b}_p{f}_it1234567890.jpg",  # more digits than an id may have
    "combined_s_p{f}_it{i}.jpg",
])


@FAST
@given(near_misses, st.integers(1, 99), st.integers(1, 99), st.integers(1, 99))
def test_near_misses_never_parse(template, b, f, i):
    assert parse_pair_name(template.format(b=b, f=f, i=i)) is None


@FAST
@given(st.sampled_from(KINDS), st.lists(st.booleans(), max_size=20), st.sampled_from(["", "_", "-", " "]),
       st.integers(0, 12), st.booleans())
def test_folder_spellings_keep_their_kind(kind, flips, sep, number, as_zip):
    name = FOLDER_NAMES[kind]
    if sep:
        name = sep.join([name[:3], name[3:]])
    name = _recase(name, flips) + (str(number) if number else "") + (".zip" if as_zip else "")
    assert kind_of_component(name) == kind


# --- pairing through the reader ----------------------------------------------------------------

keys = st.tuples(small, small, small).map(lambda t: PairName(*t))
entries = st.lists(st.tuples(st.sampled_from(PAIR_KINDS), keys, exts, st.booleans()), max_size=25)
backgrounds = st.sets(small, max_size=7)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries, backgrounds, st.randoms(use_true_random=False))
def test_the_reader_pairs_exactly_the_complete_keys(files, bgs, rnd):
    """A sample exists iff its key has a composite, a mask and a depth map and its background
    exists; everything else is counted as skipped, never an exception other than 'no pairs'."""
    members: dict[str, bytes] = {}
    have: dict[str, set[PairName]] = {k: set() for k in PAIR_KINDS}
    for kind, pn, ext, upper in files:
        name = pn.filename(ext)
        members[f"{FOLDER_NAMES[kind]}/{name.upper() if upper else name}"] = b"x"
        have[kind].add(pn)
    for k in bgs:
        members[f"{FOLDER_NAMES['bg']}/{format_background_name(k, 'png')}"] = b"x"
    order = list(members.items())
    rnd.shuffle(order)
    complete = {pn for pn in have["fgbg"] & have["mask"] & have["depth"] if pn.bg in bgs}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in order:
                z.writestr(name, data)
        if not complete:
            with pytest.raises(UserError, match="no image pairs found"):
                open_dataset(path)
            return
        with open_dataset(path) as ds:
            got = [PairName(s.bg, s.fg, s.it) for s in ds.samples]
            assert got == sorted(complete)  # sorted by (s, p, it), each once
            assert all(s.refs["bg"].member.endswith(f"Shelves_{s.bg}.png") for s in ds.samples)
            all_keys = have["fgbg"] | have["mask"] | have["depth"]
            duplicates = sum(v for k, v in ds.skipped.items() if k.startswith("duplicate"))
            assert sum(ds.skipped.values()) - duplicates == len(all_keys) - len(complete)
