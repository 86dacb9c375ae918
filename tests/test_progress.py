"""A long step says how far it is: a log line every few seconds with a count, a rate and the time left."""

from __future__ import annotations

import logging

from notifier.progress import LOG_EVERY, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "notifier.progress"]


def test_a_long_step_logs_its_count_rate_and_time_left_every_few_seconds(caplog):
    caplog.set_level(logging.INFO, logger="notifier")
    clock = Clock()
    with Progress("planning", total=10_000, unit="digests", clock=clock, bar=False) as progress:
        for _ in range(4):
            clock.now += LOG_EVERY / 2
            progress.advance(1_000)
    assert lines(caplog)[:2] == [
        "planning: 2,000 of 10,000 digests, 400/s, about 20 s left",
        "planning: 4,000 of 10,000 digests, 400/s, about 15 s left",
    ]
    assert lines(caplog)[-1] == "planning done: 4,000 of 10,000 digests, 400/s, about 15 s left in 10.0 s"


def test_a_short_step_says_nothing_and_an_unknown_total_has_no_time_left(caplog):
    caplog.set_level(logging.INFO, logger="notifier")
    clock = Clock()
    with Progress("sending", total=None, unit="deliveries", clock=clock, bar=False) as progress:
        progress.advance(5)
    assert lines(caplog) == []
    assert progress.line(clock.now + 1) == "5 deliveries, 5.0/s"


def test_a_step_that_fails_says_it_stopped(caplog):
    caplog.set_level(logging.INFO, logger="notifier")
    clock = Clock()
    try:
        with Progress("compiling", total=3, unit="rules", clock=clock, bar=False) as progress:
            progress.advance(1)
            clock.now += 3
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert lines(caplog) == ["compiling stopped: 1 of 3 rules, 0.3/s, about 6 s left in 3.0 s"]


def test_on_a_terminal_a_bar_is_drawn_on_standard_error(capsys):
    with Progress("planning", total=3, unit="digests", bar=True) as progress:
        progress.advance(3)
    assert "planning" in capsys.readouterr().err
