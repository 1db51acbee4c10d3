"""Progress off a terminal: plain lines at a steady rhythm, never a bar."""

from gpvcli.progress import PlainProgress, progress_bar


def test_off_a_terminal_progress_is_plain_lines(capsys):
    assert isinstance(progress_bar(True), PlainProgress)          # pytest's captured stdout is no terminal
    with PlainProgress(fraction=0.25, interval_s=1e9) as progress:
        task = progress.add_task("training run", total=8, info="")
        for step in range(8):
            progress.update(task, advance=1, info=f"loss {step:.3f}")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"training run {k}/8 ({100 * k // 8}%) loss {k - 1:.3f}"
                                                      for k in (2, 4, 6, 8)]
    assert all("elapsed" in line for line in lines) and "eta" in lines[0] and "eta" not in lines[-1]


def test_a_line_each_tenth_exactly(capsys):
    with PlainProgress(interval_s=1e9) as progress:
        task = progress.add_task("training gpv run", total=20)
        for _ in range(20):
            progress.advance(task)
    counts = [int(line.split()[3].split("/")[0]) for line in capsys.readouterr().out.splitlines()]
    assert counts == list(range(2, 21, 2))         # 6/20 is 30%, however 6 / 20 / 0.1 rounds


def test_a_resumed_or_cut_short_task_prints_where_it_stopped(capsys):
    with PlainProgress(fraction=0.5, interval_s=1e9) as progress:
        task = progress.add_task("evaluating", total=10, completed=4)
        progress.advance(task, 2)
    assert capsys.readouterr().out.splitlines()[-1].startswith("evaluating 6/10 (60%)")


def test_silent_progress_prints_nothing(capsys):
    with progress_bar(False) as progress:
        progress.advance(progress.add_task("x", total=3, info=""), 3)
    assert capsys.readouterr().out == ""


def test_a_slow_task_prints_at_the_interval_too(capsys):
    with PlainProgress(fraction=1.0, interval_s=0.0) as progress:    # every update is past the interval
        task = progress.add_task("caching", total=1000)
        for _ in range(3):
            progress.advance(task)
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()] == [
        f"caching {k}/1000 ({100 * k / 1000:.0f}%)" for k in (1, 2, 3)]
