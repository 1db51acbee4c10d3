"""The bad-input corpus (tests/bad_inputs/cases.py), each case through the CLI in-process: the exit code,
exactly one `error:` stderr line naming the problem and what to do, no traceback, and no file created or
changed (nor a temporary left) unless the input is valid and the case allows the file."""

import re
import warnings
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import make
from bad_inputs.cases import CASES
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.data.images import load_image
from gpvcli.errors import GPVError

runner = CliRunner()
# What the atomic writers leave while writing (gpvcli.io): .NAME.HOST-PID.XXXXXXXX[.tmp] and .NAME.old
TEMPORARY = re.compile(r"^\..+(\.[A-Za-z0-9-]*-\d+\.[a-z0-9_]{8}(\.tmp)?|\.old)$")
QUIET = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)   # hidden by default


@pytest.fixture(scope="module")
def fx(tiny_world, tiny_run) -> make.Fixture:
    image = min((tiny_world["coco"] / "images" / "val2014").glob("*.jpg"))
    return make.Fixture(coco=tiny_world["coco"], data=tiny_world["data"], run=tiny_run, image=image)


def snapshot(roots: list[Path]) -> dict[Path, tuple]:
    """Every file and folder under `roots`: (size, modification time) of files, None for folders."""
    out = {}
    for root in roots:
        for p in root.rglob("*"):
            st = p.stat()
            out[p] = None if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def temporaries(paths) -> list[Path]:
    return [p for p in paths if TEMPORARY.match(p.name)]


def command(case, fx: make.Fixture, work: Path) -> tuple[list[str], Path | None]:
    """The case's command line, its input made in `work` (and that input's path)."""
    made = getattr(make, case.make)(fx, work) if case.make else None
    values = {"input": made, "ckpt": fx.ckpt, "run": fx.run, "data": fx.data, "image": fx.image}
    return [a.format(**values) for a in case.args], made


def invoke(args: list[str], work: Path, monkeypatch):
    """The result of `gpv ARGS` run in `work`, and the warnings it showed."""
    monkeypatch.chdir(work)
    monkeypatch.setenv("GPV_HOME", str(work / "home"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, args)
    return result, [w for w in caught if not issubclass(w.category, QUIET)]


def test_the_corpus_covers_every_command():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    commands = {"synth", "prepare", "train", "evaluate", "predict", "ablate", "report", "info"}
    assert {c.args[0] for c in CASES} >= commands
    assert all(c.exit in (0, 1, 2) and (c.exit == 0) == (not c.says) for c in CASES)
    assert all(c.make is None or callable(getattr(make, c.make)) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, fx, tmp_path, monkeypatch):
    monkeypatch.delenv("GPV_DEBUG", raising=False)
    work = tmp_path / "case"
    work.mkdir()
    args, made = command(case, fx, work)
    roots = [work, fx.coco.parent, fx.run.parent]          # the case folder and the shared fixture
    before = snapshot(roots)
    result, shown = invoke(args, work, monkeypatch)
    after = snapshot(roots)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == case.exit, result.output
    assert not temporaries(after)
    if case.exit:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        for words in case.says:
            assert words in lines[0], lines[0]
        assert not shown, [str(w.message) for w in shown]        # a warning would be another stderr line
        assert after == before, {str(p) for p in after.keys() ^ before.keys()} or "a file changed"
    else:
        assert not any(line.startswith("error:") for line in lines), result.stderr
        written = [p for p in after if after[p] != before.get(p, "absent") and p.is_file()]
        assert written and all(p.is_relative_to(work) for p in written)
        for p in written:
            assert any(fnmatch(p.relative_to(work).as_posix(), glob) for glob in case.writes), p
        if case.after:
            getattr(make, case.after)(made)


def test_debug_raises_instead(fx, tmp_path, monkeypatch):
    case = next(c for c in CASES if c.id == "prepare-negative-box")
    monkeypatch.setenv("GPV_DEBUG", "1")
    args, _ = command(case, fx, tmp_path)
    result, _ = invoke(args, tmp_path, monkeypatch)
    assert isinstance(result.exception, GPVError) and "negative size" in str(result.exception)


def test_16_bit_grayscale_keeps_its_values(fx, tmp_path):
    gray = np.asarray(load_image(fx.image).convert("L"), np.int16)
    wide = np.asarray(load_image(make.gray16_png(fx, tmp_path)), np.int16)           # (H, W, 3)
    assert wide.shape[:2] == gray.shape and np.abs(wide - gray[..., None]).max() <= 1
