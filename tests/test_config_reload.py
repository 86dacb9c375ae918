"""The running daemon meets hostile subscribers.yaml edits: after each one and a SIGHUP it is still alive, /healthz
answers, and /readyz names the rejected edit's line, until a good file is back. A rejected value taken from the
environment is shown by its ${VAR} reference, never by itself."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import aiohttp
import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.web.server import readiness as readiness_of
from tests.arxiv_server import ArxivStandIn
from tests.cli import cli_environment, start_cli

GOOD = """\
subscribers:
  - name: perf
    email: ann@lab.example
    categories: [cs.DC]
    schedule: "daily 08:00 UTC"
    rules:
      - name: tail latency
        query: 'tail latency'
"""
BOMB = "\n".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    + [f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]" for level in range(1, 10)]
    + ["subscribers: *l9", ""]
)
# (edit, the line /readyz names, what it says)
EDITS = [
    (GOOD.replace("name: perf", "name: !foo perf"), 2, "YAML tag '!foo' is not supported"),
    ("subscribers: &a [*a]\n", 1, "recursive alias"),
    (BOMB, 6, "values repeated through aliases"),
    (GOOD.replace("'tail latency'", "'" + "(" * 999 + "a" + ")" * 999 + "'"), 8, "nests parentheses and NOTs"),
    (GOOD.replace("'tail latency'", "'" + " ".join(["a"] * 999) + "'"), 8, "more than 200 terms"),
    (GOOD.replace("ann@lab.example", "'ann@[lab.example'"), 3, "is not an email address"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def readiness(session: aiohttp.ClientSession, port: int) -> dict[str, object]:
    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return dict(json.loads(await response.text()))


async def eventually(check, seconds: float = 20.0) -> object:
    """The first true result of ``await check()`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = await check()
        except aiohttp.ClientError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_the_daemon_survives_hostile_edits_and_says_which_line_it_rejected(tmp_path):
    config = tmp_path / "subscribers.yaml"
    config.write_text(GOOD)
    port = free_port()
    async with ArxivStandIn(day="2025-06-03") as arxiv, aiohttp.ClientSession() as session:
        env = cli_environment(tmp_path, arxiv, NOTIFIER_HTTP_ADDR=f"127.0.0.1:{port}")
        process = await start_cli("run", env=env)
        try:

            async def healthy() -> bool:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    return response.status == 200

            await eventually(healthy)
            for text, line, fragment in [*EDITS, (GOOD, None, None)]:
                config.write_text(text)
                process.send_signal(signal.SIGHUP)

                async def reported(line=line, fragment=fragment) -> bool:
                    problem = (await readiness(session, port)).get("config")
                    if line is None:
                        return problem is None
                    return (
                        isinstance(problem, str)
                        and problem.startswith(f"rejected at line {line}: ")
                        and (fragment in problem)
                    )

                assert await eventually(reported), await readiness(session, port)
                assert process.returncode is None, "the daemon is still running"
                assert await healthy()
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            _out, err = await asyncio.wait_for(process.communicate(), 30)
    log = err.decode()
    assert process.returncode == 0, log
    assert "Traceback" not in log
    assert log.count("config rejected, keeping the last good one") >= len(EDITS), log
    assert f"{config}:8:" in log


async def test_a_rejected_value_from_the_environment_is_shown_by_its_reference_in_the_log_and_on_readyz(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("LAB_MAIL", "s3cr3t-t0ken-not-an-address")
    path = tmp_path / "subscribers.yaml"
    path.write_text(GOOD)
    settings = load_settings({"NOTIFIER_SUBSCRIBERS": str(path), "NOTIFIER_DATA_DIR": str(tmp_path / "data")})
    async with Notifier(settings, load_config(path, {})) as app:
        path.write_text(GOOD.replace("ann@lab.example", "${LAB_MAIL}"))
        assert await app.reload_config(force=True) is False
        problems = readiness_of(app)
    assert problems["config"] == (
        "rejected at line 3: subscriber 'perf': email: '${LAB_MAIL}' is not an email address: An email address must"
        " have an @-sign."
    )
    assert "s3cr3t" not in json.dumps(problems) + caplog.text
    assert "'${LAB_MAIL}' is not an email address" in caplog.text
