"""`ParityOptions`: the CLI's option rules live in the library, so a Python caller gets its errors."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from toolkit.core.errors import UserError
from toolkit.verify.compare import Thresholds
from toolkit.verify.parity_options import ParityOptions

REFUSED = [
    ({"layer_tol": 0.1}, ["--layer-tol", "0.1"], "--layer-tol is the tolerance of parity --layers"),
    ({"golden": "g", "limit": 4}, ["--golden", "g", "--limit", "4"], "--limit and --batch-size do not go with it"),
    ({"golden": "g", "reference": "r.pt"}, ["--golden", "g", "--reference", "r.pt"], "--reference, --data and --save-golden"),
    ({"layers": True, "batch_size": 2}, ["--layers", "--batch-size", "2"], "runs one pair at a time"),
    ({"layers": True, "save_golden": "s"}, ["--layers", "--save-golden", "s"], "--golden and --save-golden do not go"),
    ({"layers": True, "overrides": Thresholds(max_abs=1e-3)}, ["--layers", "--max-abs", "1e-3"], "--provider, --max-abs"),
    ({"provider": "cpu,cuda"}, ["--provider", "cpu,cuda"], "takes one provider"),
    ({"limit": 0}, ["--limit", "0"], "must be positive"),
]


@pytest.mark.parametrize("kwargs, flags, message", REFUSED, ids=[" ".join(f) for _, f, _ in REFUSED])
def test_the_library_refuses_what_the_cli_refuses_with_the_same_line(kwargs, flags, message):
    with pytest.raises(UserError, match=message) as library:
        ParityOptions(models=("m.onnx",), **kwargs)
    if flags[0] in ("--layers", "--golden"):  # one subprocess per mode keeps this quick
        r = run_cli("parity", "--model", "m.onnx", *flags)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(str(library.value)), r.stderr


def test_the_mode_follows_the_options():
    assert ParityOptions(("m.onnx",)).mode == "reference"
    assert ParityOptions(("m.onnx",), golden="g").mode == "golden"
    assert ParityOptions(("m.onnx",), layers=True, layer_tol=0.1).mode == "layers"
