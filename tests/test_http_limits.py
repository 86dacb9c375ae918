"""The HTTP side under slow and stalled clients: request heads and bodies are timed, connections are capped, and
/healthz keeps answering, in process and in a real ``notifier run`` whose file-descriptor limit is low."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from notifier.config.settings import load_settings
from notifier.config.subscribers import load_config
from notifier.daemon import Notifier
from notifier.web.server import HttpServer
from tests.arxiv_server import ArxivStandIn
from tests.cli import ROOT, cli_environment

CONFIG = """\
subscribers:
  - name: audio
    email: ann@lab.example
    categories: [cs.SD, eess.AS]
    rules:
      - name: music
        query: music
"""
HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: notifier\r\n"  # the blank line that ends the head never comes
CAP = 8
TIMEOUT = 1.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[HttpServer]:
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    settings = load_settings(
        {}, {"subscribers": str(tmp_path / "subscribers.yaml"), "data_dir": str(tmp_path / "data")}
    )
    async with (
        Notifier(settings, load_config(settings.subscribers, {})) as app,
        HttpServer(app, "127.0.0.1", 0, max_connections=CAP, header_timeout=TIMEOUT, request_timeout=TIMEOUT) as served,
    ):
        yield served


async def stalled_clients(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` connections that each send half a request head and then nothing."""
    clients = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HALF_A_HEAD)
        await writer.drain()
        clients.append((reader, writer))
    return clients


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def healthz(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as response,
    ):
        return response.status, await response.text()


def close_all(clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in clients:
        writer.close()


@pytest.mark.slow
async def test_stalled_clients_never_keep_healthz_out_and_are_closed_after_the_header_timeout(server):
    clients = await stalled_clients(server.port, 5 * CAP)
    try:
        assert await healthz(server.port) == (200, "ok\n")
        assert server.guard.open_connections <= CAP
        evicted = [await closed_by_server(reader, 0.2) for reader, _ in clients[:CAP]]
        assert all(evicted), "the connections that waited longest made room for new ones"
        remaining = clients[-(CAP - 1) :]
        closed = await asyncio.gather(*(closed_by_server(reader, TIMEOUT + 1.0) for reader, _ in remaining))
        assert all(closed), "a connection that never completes its request head is closed after the timeout"
        assert server.guard.open_connections == 0
    finally:
        close_all(clients)


@pytest.mark.slow
async def test_an_idle_kept_alive_connection_is_closed_after_the_header_timeout(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: notifier\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1)
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(3) == b"ok\n"
        assert await closed_by_server(reader, TIMEOUT + 1.0)
    finally:
        writer.close()


@pytest.mark.slow
async def test_a_body_that_never_arrives_is_answered_408_and_the_connection_closed(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /unsubscribe HTTP/1.1\r\nHost: notifier\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 200\r\n\r\nList-Unsubscribe=One"
        )
        answer = await asyncio.wait_for(reader.read(), TIMEOUT + 3.0)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert b"Connection: close" in answer
    finally:
        writer.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Starts `notifier run` with at most 256 open files, as `ulimit -n 256` would.
LOW_FILE_LIMIT = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
    "os.execv(sys.executable, [sys.executable, '-m', 'notifier', 'run'])"
)


@pytest.mark.slow
async def test_a_daemon_with_256_open_files_answers_healthz_through_372_stalled_requests(tmp_path):
    (tmp_path / "subscribers.yaml").write_text(CONFIG)
    port = free_port()
    log_path = tmp_path / "stderr.log"
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    async with ArxivStandIn(day="2025-06-03") as arxiv:
        env = cli_environment(tmp_path, arxiv, NOTIFIER_HTTP_ADDR=f"127.0.0.1:{port}")
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", LOW_FILE_LIMIT, cwd=ROOT, env=env, stdout=log, stderr=log
            )
        try:
            for _ in range(200):
                if b"http listening" in log_path.read_bytes():
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail(f"the daemon did not start listening: {log_path.read_text()}")

            async def stall() -> None:
                with contextlib.suppress(OSError, TimeoutError):
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
                    writer.write(HALF_A_HEAD)
                    clients.append((reader, writer))

            await asyncio.gather(*(stall() for _ in range(372)))
            for _ in range(3):
                assert await healthz(port) == (200, "ok\n")
                await asyncio.sleep(0.5)
            assert process.returncode is None, log_path.read_text()
            assert log_path.stat().st_size < 16_000, log_path.read_text()[-2000:]
        finally:
            close_all(clients)
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 30) == 0, log_path.read_text()[-2000:]
