import pytest
import torch

from toolkit.core.errors import UserError
from toolkit.core.spec import SEED_SPEC
from toolkit.net.checkpoint import FORMAT_VERSION, load_checkpoint, make_checkpoint, save_checkpoint
from toolkit.net.model import EVA4Net


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


# --- the payload hash (format version 2) ----------------------------------------------------------

def _raw(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_saved_checkpoints_carry_the_payload_hash(tmp_path):
    from toolkit.net.checkpoint import HASH_KEY, payload_sha256, verify_payload

    path = save_checkpoint(tmp_path / "c.pt", _ckpt(training={"optimizer": {"state": {0: {"m": torch.ones(3)}}}}))
    raw = _raw(path)
    assert raw["format_version"] == FORMAT_VERSION == 2
    assert len(raw[HASH_KEY]) == 64 and raw[HASH_KEY] == payload_sha256(raw)
    assert verify_payload(raw, path) is True


@pytest.mark.parametrize("where", ["model", "iospec", "training", "metrics", "epoch"])
def test_a_change_anywhere_after_saving_is_refused_in_one_line(tmp_path, where):
    path = save_checkpoint(tmp_path / "c.pt", _ckpt(metrics={"val_loss": 0.5}, training={"rng": {"torch": torch.zeros(4)}}))
    raw = _raw(path)
    if where == "model":
        raw["model"]["convblock1.0.weight"].view(-1)[0] += 1e-6
    elif where == "iospec":
        raw["iospec"]["mask"]["scale"] = 0.25
    elif where == "training":
        raw["training"]["rng"]["torch"][2] = 1.0
    elif where == "metrics":
        raw["metrics"]["val_loss"] = 0.49
    else:
        raw["epoch"] = 4
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(UserError, match="edited.pt: checkpoint content does not match its SHA-256") as e:
        load_checkpoint(tmp_path / "edited.pt")
    assert "\n" not in str(e.value)


def test_the_hash_does_not_depend_on_the_file_layout(tmp_path):
    """Canonical content, not bytes: the legacy (non-zip) torch.save layout and another pickle
    protocol hold the same payload, so they verify against the same hash."""
    path = save_checkpoint(tmp_path / "c.pt", _ckpt())
    raw = _raw(path)
    torch.save(raw, tmp_path / "old-layout.pt", _use_new_zipfile_serialization=False, pickle_protocol=3)
    assert load_checkpoint(tmp_path / "old-layout.pt")["epoch"] == 3


def test_version_1_checkpoints_without_a_hash_still_load(tmp_path):
    from toolkit.net.checkpoint import HASH_KEY, verify_payload

    old = _ckpt()
    old["format_version"] = 1
    assert HASH_KEY not in old
    torch.save(old, tmp_path / "v1.pt")  # as toolkit versions before the hash wrote them
    assert load_checkpoint(tmp_path / "v1.pt")["epoch"] == 3
    assert verify_payload(old) is False


def test_version_2_without_its_hash_is_refused(tmp_path):
    torch.save(_ckpt(), tmp_path / "stripped.pt")  # version 2 content, hash left out
    with pytest.raises(UserError, match="stripped.pt: checkpoint carries no payload_sha256"):
        load_checkpoint(tmp_path / "stripped.pt")


def test_invalid_format_versions_are_refused(tmp_path):
    for bad in (0, "2", True):
        c = _ckpt()
        c["format_version"] = bad
        torch.save(c, tmp_path / "v.pt")
        with pytest.raises(UserError, match="invalid format version"):
            load_checkpoint(tmp_path / "v.pt")
