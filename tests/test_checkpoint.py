import pytest
import torch

from toolkit.checkpoint import FORMAT_VERSION, load_checkpoint, make_checkpoint, save_checkpoint
from toolkit.errors import UserError
from toolkit.model import EVA4Net
from toolkit.spec import SEED_SPEC


def _ckpt(**kw):
    return make_checkpoint(EVA4Net().state_dict(), SEED_SPEC.with_size(64), epoch=3, step=10, **kw)


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _ckpt())
    c = load_checkpoint(path)
    assert c["epoch"] == 3 and c["step"] == 10 and c["iospec"]["height"] == 64
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_refuses_a_pickle_that_needs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"format": "toolkit.checkpoint", "payload": _Evil()}, bad)
    with pytest.raises(UserError, match="evil.pt: refused: the file needs code to load"):
        load_checkpoint(bad)
    assert not (tmp_path / "PWNED").exists()


def test_refuses_nan_weights_naming_the_tensor(tmp_path):
    c = _ckpt()
    c["model"]["convblock6.0.pointwise.weight"][0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", c)
    with pytest.raises(UserError, match="convblock6.0.pointwise.weight"):
        load_checkpoint(tmp_path / "nan.pt")


def test_refuses_wrong_shapes_and_newer_versions(tmp_path):
    c = _ckpt()
    c["model"]["convblock1.0.weight"] = torch.zeros(16, 3, 3, 3)
    save_checkpoint(tmp_path / "shape.pt", c)
    with pytest.raises(UserError, match=r"convblock1.0.weight has shape \(16, 3, 3, 3\)"):
        load_checkpoint(tmp_path / "shape.pt")
    c = _ckpt()
    c["format_version"] = FORMAT_VERSION + 1
    save_checkpoint(tmp_path / "new.pt", c)
    with pytest.raises(UserError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04broken zip"])
def test_garbage_files(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="bad.pt"):
        load_checkpoint(bad)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _ckpt())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(UserError, match="cut.pt"):
        load_checkpoint(cut)
