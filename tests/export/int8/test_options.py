"""`Int8Options`: the int8 values' rules in one place, the same line from Python, from
`ExportOptions` and from `toolkit export`."""

from __future__ import annotations

import pytest

from export.int8 import Int8Options
from export.options import ExportOptions
from toolkit.core.errors import UserError

REFUSED = [
    ({"target": "gpu"}, {"int8_target": "gpu"}, "--int8-target must be one of cpu, tensorrt, got 'gpu'"),
    ({"method": "kl"}, {"calib_method": "kl"}, "--calib-method must be one of minmax, entropy, percentile, got 'kl'"),
    ({"search": "maybe"}, {"int8_search": "maybe"}, "--int8-search must be one of auto, off, got 'maybe'"),
    ({"budget_s": 0}, {"search_budget_s": 0}, "--int8-search-budget must be in (0, 86400] seconds, got 0"),
    ({"budget_s": float("nan")}, {"search_budget_s": float("nan")}, "--int8-search-budget must be in (0, 86400] seconds"),
    ({"budget_s": "soon"}, {"search_budget_s": "soon"}, "--int8-search-budget must be in (0, 86400] seconds, got soon"),
]


@pytest.mark.parametrize("own, export, line", REFUSED, ids=[next(iter(o)) + "=" + str(next(iter(o.values()))) for o, _, _ in REFUSED])
def test_int8_options_and_export_options_refuse_with_the_same_line(own, export, line):
    with pytest.raises(UserError) as direct:
        Int8Options(**own)
    with pytest.raises(UserError) as through_export:
        ExportOptions(int8=True, **export)
    assert str(direct.value).startswith(line) and str(direct.value) == str(through_export.value)


def test_export_options_hand_over_what_was_asked():
    o = ExportOptions(int8=True, int8_target="tensorrt", calib_method="minmax", force=True, int8_search="off", search_budget_s=30)
    assert o.int8_options == Int8Options(target="tensorrt", method="minmax", force=True, search="off", budget_s=30.0)
    assert Int8Options().target == "cpu" and Int8Options().search == "auto" and Int8Options(budget_s="60").budget_s == 60.0


def test_min_speedup_is_a_ratio_of_zero_or_more():
    assert Int8Options(min_speedup=0).min_speedup == 0
    with pytest.raises(UserError, match="int8 min_speedup must be 0 or more"):
        Int8Options(min_speedup=-0.5)
