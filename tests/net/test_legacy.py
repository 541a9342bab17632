"""The restricted importer: reads the original files, refuses anything that could run code."""

import pickle

import pytest
import torch

from toolkit.net.checkpoint import FORMAT, load_checkpoint
from toolkit.net.legacy import LEGACY_MAGIC, LegacyImportError, import_legacy, read_legacy
from toolkit.net.model import UNUSED_LEGACY_MODULES


def test_reads_every_tensor_of_the_fixture(legacy_fixture):
    legacy = read_legacy(legacy_fixture)
    assert legacy.root_class == "__main__.Net"
    params = sum(v.size for k, v in legacy.state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert params == 662_624  # architecture.md: parameters in the file, unused modules included
    assert legacy.state["convblock5.0.depthwise.weight"].shape == (128, 1, 3, 3)
    assert legacy.state["convblock1.1.num_batches_tracked"].shape == ()


def test_import_drops_unused_modules_and_writes_a_weights_only_checkpoint(legacy_fixture, tmp_path):
    out = tmp_path / "new.pt"
    report = import_legacy(legacy_fixture, out, calibration=None)
    assert set(report.dropped) == set(UNUSED_LEGACY_MODULES)
    assert sum(report.dropped.values()) == 169_216
    assert report.parameters == 493_408
    raw = torch.load(out, weights_only=True)  # plain data only
    assert raw["format"] == FORMAT and raw["recipe"] == "seed"
    assert not any(k.startswith(UNUSED_LEGACY_MODULES) for k in raw["model"])
    ref = read_legacy(legacy_fixture).state
    ckpt = load_checkpoint(out)
    for key, tensor in ckpt["model"].items():
        assert torch.equal(tensor, torch.from_numpy(ref[key].copy())), key


def _legacy_file(payload: bytes) -> bytes:
    """A legacy-layout torch file whose object pickle is `payload`."""
    head = pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2) + pickle.dumps({"little_endian": True}, protocol=2)
    return head + payload + pickle.dumps([], protocol=2)


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize(
    "fn,arg,name",
    [
        (__import__("os").system, "touch PWNED", "system"),
        (eval, "1+1", "builtins.eval"),
        (__import__("subprocess").Popen, "true", "subprocess.Popen"),
    ],
)
def test_refuses_forbidden_globals_and_runs_nothing(tmp_path, monkeypatch, fn, arg, name):
    monkeypatch.chdir(tmp_path)  # `touch PWNED` would land here if anything ran
    bad = tmp_path / "evil.pt"
    bad.write_bytes(_legacy_file(pickle.dumps(_Evil(fn, arg), protocol=4)))
    with pytest.raises(LegacyImportError, match=name):
        import_legacy(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x80\x02K\x01."])
def test_garbage_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(LegacyImportError, match="bad.pt"):
        read_legacy(bad)


def test_truncated_fixture_is_a_clear_error(legacy_fixture, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(legacy_fixture.read_bytes()[: 2_000_000])
    with pytest.raises(LegacyImportError, match="cut.pt"):
        read_legacy(bad)


def test_header_must_be_plain_data(tmp_path):
    bad = tmp_path / "header.pt"
    bad.write_bytes(pickle.dumps(_Evil(print, "x"), protocol=4) + b"rest")
    with pytest.raises(LegacyImportError, match=r"header.pt: .*builtins\.print"):
        read_legacy(bad)


def test_storage_bytes_must_be_complete(tmp_path, legacy_fixture):
    bad = tmp_path / "short.pt"
    bad.write_bytes(legacy_fixture.read_bytes()[:-4])
    with pytest.raises(LegacyImportError, match="truncated"):
        read_legacy(bad)


def _module_pickle(modules) -> bytes:
    """A legacy-layout file whose root is an allowed `__main__.Net` with a chosen `_modules`."""
    body = (
        b"\x80\x02c__main__\nNet\nq\x00)\x81q\x01}q\x02(X\x08\x00\x00\x00_modulesq\x03"
        + pickle.dumps(modules, protocol=2)[2:-1]
        + b"ub."
    )
    return _legacy_file(body)


def test_malformed_module_state_is_a_clear_error(tmp_path):
    bad = tmp_path / "badmod.pt"
    bad.write_bytes(_module_pickle(7))
    with pytest.raises(LegacyImportError, match="badmod.pt: malformed module state"):
        read_legacy(bad)


def test_self_referencing_pickle_is_a_clear_error(tmp_path):
    import collections

    loop = collections.OrderedDict()
    loop["x"] = loop
    bad = tmp_path / "cyclic.pt"
    bad.write_bytes(_legacy_file(pickle.dumps(loop, protocol=2)))
    with pytest.raises(LegacyImportError, match="cyclic.pt"):
        read_legacy(bad)


def test_a_toolkit_checkpoint_needs_no_import(imported_ckpt):
    with pytest.raises(LegacyImportError, match="already a toolkit checkpoint"):
        read_legacy(imported_ckpt)


def test_epoch_comes_from_the_file_name(legacy_fixture, tmp_path):
    assert import_legacy(legacy_fixture, tmp_path / "a.pt", calibration=None).epoch == 12  # eva4-week15-epoch12.pt
    assert import_legacy(legacy_fixture, tmp_path / "b.pt", epoch=3, calibration=None).epoch == 3
    assert load_checkpoint(tmp_path / "a.pt")["epoch"] == 12
