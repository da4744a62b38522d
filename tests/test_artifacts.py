"""The artifact format: round trip, checksums, atomic writes, weights_only loading."""

from __future__ import annotations

import pytest
import torch

from preempt import artifacts
from preempt.errors import PreemptError


def test_round_trip_with_sidecar(tmp_path) -> None:
    p = tmp_path / "a.pt"
    artifacts.save(p, {"x": torch.arange(6.0).view(2, 3)}, {"stage": "t", "seed": 3})
    data, meta = artifacts.load(p)
    assert torch.equal(data["x"], torch.arange(6.0).view(2, 3))
    assert meta["stage"] == "t" and meta["seed"] == 3 and meta["shapes"] == {"x": [2, 3]}
    assert {"torch", "python", "preempt"} <= set(meta["versions"])
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupted_file_is_refused(tmp_path) -> None:
    p = tmp_path / "a.pt"
    artifacts.save(p, {"x": torch.ones(100)}, {})
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PreemptError, match="checksum does not match"):
        artifacts.load(p)


def test_missing_sidecar_is_refused(tmp_path) -> None:
    p = tmp_path / "a.pt"
    artifacts.save(p, {"x": torch.ones(1)}, {})
    artifacts.sidecar(p).unlink()
    with pytest.raises(PreemptError, match="sidecar"):
        artifacts.load(p)


def test_pickled_objects_are_refused(tmp_path) -> None:
    class Payload:
        def __reduce__(self):  # noqa: D105
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, p)
    (tmp_path / "evil.json").write_text('{"sha256": "%s"}' % artifacts.sha256(p))
    with pytest.raises(PreemptError, match="cannot be loaded safely"):
        artifacts.load(p)


def test_interrupted_write_leaves_nothing(tmp_path) -> None:
    p = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_equal_tensors_give_byte_equal_files(tmp_path) -> None:
    """A rerun that computes the same tensors must not change the output's hash (DVC then keeps
    the stages after it): the bytes may not depend on the temporary file's random name."""
    t = {"x": torch.arange(12.0).reshape(3, 4), "y": torch.tensor([1, 2, 3])}
    artifacts.save(tmp_path / "a.pt", t, {"stage": "test"})
    artifacts.save(tmp_path / "b" / "a.pt", t, {"stage": "other"})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "a.pt").read_bytes()
    assert artifacts.load_meta(tmp_path / "a.pt")["sha256"] == artifacts.load_meta(tmp_path / "b" / "a.pt")["sha256"]


def test_a_slice_is_saved_as_its_own_elements_not_its_base(tmp_path) -> None:
    """The data stage keeps x[:n_eval] of a whole split: the file holds those images only (torch.save
    of a view writes the view's entire storage)."""
    base = torch.rand(1000, 3, 8, 8)
    artifacts.save(tmp_path / "head.pt", {"x": base[:10], "tail": base[-3:, 0]}, {})
    artifacts.save(tmp_path / "own.pt", {"x": base[:10].clone(), "tail": base[-3:, 0].clone()}, {})
    assert (tmp_path / "head.pt").stat().st_size == (tmp_path / "own.pt").stat().st_size < base.numel()
    back, _ = artifacts.load(tmp_path / "head.pt")
    assert torch.equal(back["x"], base[:10]) and torch.equal(back["tail"], base[-3:, 0])
