"""Progress where output is not a terminal (CI, nohup, SLURM .out files): plain periodic lines."""

import io
import os

from rich.console import Console

from lib.corpus.progress import BuildProgress
from lib.models import _quiet_transformers
from lib.progress import LineProgress, progress, quiet_library_bars


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_every_tenth_with_fields_elapsed_and_eta():
    out, clock = io.StringIO(), Clock()
    with LineProgress(out, clock) as bars:
        task = bars.add_task("train", total=200, info="")
        for step in range(1, 201):
            clock.now += 0.5  # 2 steps/s
            bars.update(task, completed=step, info=f"loss {1 / step:.3f}" if step >= 100 else "")
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0] == "train 20/200 (10%) elapsed 0:00:10 eta 0:01:30"
    assert lines[4] == "train 100/200 (50%) loss 0.010 elapsed 0:00:50 eta 0:00:50"
    assert lines[-1] == "train 200/200 (100%) loss 0.005 elapsed 0:01:40"


def test_slow_work_still_reports_every_30_seconds_and_resumed_work_estimates_from_its_own_pace():
    out, clock = io.StringIO(), Clock()
    bars = LineProgress(out, clock)
    task = bars.add_task("train", total=1000, completed=500)  # resumed half-way
    for step in range(501, 521):
        clock.now += 4.0  # 0.25 steps/s: 10% would take 400 s
        bars.update(task, completed=step)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["508/1000", "516/1000"]  # at 32 s and 64 s
    assert lines[0].endswith("elapsed 0:00:32 eta 0:32:48")  # 492 steps left at 0.25/s
    bars.stop()  # the last state is written on exit
    assert out.getvalue().splitlines()[-1].startswith("train 520/1000 (52%)")


def test_indeterminate_work_and_advance():
    out, clock = io.StringIO(), Clock()
    with LineProgress(out, clock) as bars:
        reading = bars.add_task("reading MEDLINE records", total=None)
        clock.now += 12
        bars.update(reading, total=1, completed=1)
        rows = bars.add_task("negatives", total=50)
        for _ in range(50):
            bars.advance(rows)
    lines = out.getvalue().splitlines()
    assert lines[0] == "reading MEDLINE records 1/1 (100%) elapsed 0:00:12"
    assert lines[-1].startswith("negatives 50/50 (100%)") and len(lines) == 2  # seconds of work: its last line only


def test_a_terminal_gets_the_rich_bar_and_a_file_gets_lines():
    assert type(progress(console=Console(file=io.StringIO(), force_terminal=True))).__name__ == "Progress"
    assert isinstance(progress(console=Console(file=io.StringIO())), LineProgress)


def test_a_corpus_build_in_a_log_file_starts_with_a_plain_title_line(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    with BuildProgress(title="building corpus titles-0123") as build:
        build.advance(build.task("negatives", total=4), 4)
    assert out.getvalue().splitlines()[0] == "building corpus titles-0123"  # no time, no "progress.py:30"


def test_library_bars_are_switched_off_in_a_log_file_and_left_on_a_terminal(monkeypatch):
    from transformers.utils import logging as hf_logging

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    hf_logging.enable_progress_bar()
    try:
        quiet_library_bars(Terminal())
        assert hf_logging.is_progress_bar_enabled() and "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
        quiet_library_bars(io.StringIO())  # a file or a pipe
        assert not hf_logging.is_progress_bar_enabled()
        with _quiet_transformers():  # loading a pretrained model silences transformers for a while ...
            pass
        assert not hf_logging.is_progress_bar_enabled()  # ... and leaves the bars off, as it found them
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    finally:
        hf_logging.enable_progress_bar()
