"""Atomic folder replacement survives a kill at any point."""

import os

import pytest

from gpvcli import io


def _write_version(path, text):
    with io.atomic_dir(path) as tmp:
        (tmp / "state.json").write_text(text)


def test_atomic_dir_replaces_and_leaves_nothing_beside(tmp_path):
    last = tmp_path / "last"
    _write_version(last, "1")
    _write_version(last, "2")
    assert (last / "state.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_kill_between_the_two_renames_keeps_the_previous_version(tmp_path):
    last = tmp_path / "last"
    _write_version(last, "1")
    os.replace(last, tmp_path / ".last.old")      # where a kill after atomic_dir's first rename leaves it
    assert io.restore_interrupted(last) == last
    assert (last / "state.json").read_text() == "1"
    assert not (tmp_path / ".last.old").exists()

    os.replace(last, tmp_path / ".last.old")
    _write_version(last, "2")                     # the next save also restores first, then replaces
    assert (last / "state.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_failed_write_keeps_the_old_folder(tmp_path):
    last = tmp_path / "last"
    _write_version(last, "1")
    with pytest.raises(RuntimeError), io.atomic_dir(last) as tmp:
        (tmp / "state.json").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (last / "state.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
