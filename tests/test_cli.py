"""The command line as people meet it: help, exit codes, quiet commands, `list`, `send-test`, `rename`, pipes."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.config.settings import ENV_VARS
from notifier.exit_codes import TABLE
from notifier.store.sqlite import SqliteStore
from tests.cli import start_cli
from tests.slack_server import SlackServer
from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.slow  # each test runs the CLI in a child process

ROOT = Path(__file__).resolve().parents[1]
# From the environment only: an option would show in the process list.
SECRETS = {"smtp_password", "slack_token", "llm_api_key"}

CONFIG = """\
subscribers:
  - name: audio-lab
    email: [ann@lab.example, bob@lab.example]
    slack: "#papers"
    categories: [cs.SD, eess.AS]
    rules:
      - name: speech recognition
        query: '"speech recognition" OR asr'
      - name: music
        query: music
  - name: voice
    email: voice@speech.example
    categories: [eess.AS]
    schedule: "weekly mon 09:00 Europe/Berlin"
    rules:
      - name: speech
        query: speech OR audio OR music OR sound
"""


def notifier(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory that holds the bundled day's papers (what `notifier demo` stored)."""
    folder = tmp_path_factory.mktemp("demo") / "run"
    assert notifier("demo", "--dir", str(folder)).returncode == 0
    return folder


def test_help_ends_with_the_exit_code_table():
    done = notifier("--help")
    assert done.returncode == 0
    assert done.stdout.endswith(TABLE)
    assert "  3    once: arXiv could not be reached" in TABLE and "  4    once, retry, send-test" in TABLE


def test_each_command_has_a_description_and_only_the_settings_that_apply():
    check = notifier("check", "--help").stdout
    assert "Validate subscribers.yaml and the settings. An error is printed as" in check
    assert "file:line:column: message" in " ".join(check.split())
    assert "--smtp-host" not in check and "--slack-api-url" not in check and "--http-addr" not in check
    status = notifier("status", "--help").stdout
    assert "--data-dir" in status and "--smtp-host" not in status
    send_test = notifier("send-test", "--help").stdout
    assert "--smtp-host" in send_test and "--http-addr" not in send_test


def test_every_setting_but_the_secrets_has_an_option_of_the_same_name_on_run():
    run = notifier("run", "--help").stdout
    for name, variable in ENV_VARS.items():
        option = "--" + name.replace("_", "-")
        if name in SECRETS:
            assert option not in run
        else:
            assert f"{option} " in run and f"[{variable}]" in run, option


def test_options_of_other_commands_are_still_accepted(config, tmp_path):
    done = notifier("check", "--subscribers", str(config), "--data-dir", str(tmp_path), "--poll-interval", "60")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{config}: ok: 2 subscribers, 3 rules, categories cs.SD, eess.AS\n"


def test_a_bad_option_value_is_a_config_error(config):
    done = notifier("status", "--subscribers", str(config), "--lease-seconds", "0")
    assert (done.returncode, done.stderr) == (1, "error: --lease-seconds: must be positive\n")


def test_status_preview_and_retry_print_no_log_lines_unless_verbose(config, tmp_path):
    env = {"NOTIFIER_SUBSCRIBERS": str(config), "NOTIFIER_DATA_DIR": str(tmp_path / "data")}
    for command in (["status"], ["preview", "voice"], ["retry"], ["list"]):
        done = notifier(*command, env=env)
        assert done.returncode == 0, done.stderr
        assert "INFO" not in done.stderr and "email via files" not in done.stderr, command
    verbose = notifier("status", "-v", env=env)
    assert "INFO    notifier.channels.router: email via files in" in verbose.stderr


def test_rename_refuses_a_new_name_that_subscribers_yaml_does_not_have(config, tmp_path):
    env = {"NOTIFIER_SUBSCRIBERS": str(config), "NOTIFIER_DATA_DIR": str(tmp_path / "data")}
    done = notifier("rename", "voice", "vocals", env=env)
    assert done.returncode == 1
    assert done.stderr == (
        f"error: no subscriber named 'vocals' in {config} (known: audio-lab, voice); rename 'voice' to 'vocals'"
        " there first, then run `notifier rename` again\n"
    )


def test_rename_errors_read_like_every_other_command_s(config, tmp_path):
    env = {"NOTIFIER_SUBSCRIBERS": str(config), "NOTIFIER_DATA_DIR": str(tmp_path / "data")}
    done = notifier("rename", "gone", "voice", env=env)
    assert (done.returncode, done.stderr) == (2, "error: no subscriber named 'gone' in the store\n")


def test_rename_moves_the_history_to_a_name_subscribers_yaml_has(config, demo_data):
    data = ["--data-dir", str(demo_data)]
    config.write_text(CONFIG.replace("name: audio-lab", "name: listening-lab"), encoding="utf-8")
    done = notifier("rename", "audio-lab", "listening-lab", "--subscribers", str(config), *data)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "history of 'audio-lab' now belongs to 'listening-lab'\n",
        "",
    )


def test_preview_into_a_pipe_that_closes_early_ends_quietly(config, demo_data):
    """`notifier preview voice | head -n 1`: the reader leaves long before the digest is written."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "notifier",
            "preview",
            "voice",
            "--subscribers",
            str(config),
            "--data-dir",
            str(demo_data),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    errors = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 0
    assert first.startswith(b"Subject: [arXiv weekly] ")
    assert errors == b""


def test_preview_shows_every_recipient_and_leaves_out_one_that_unsubscribed(config, demo_data):
    """`preview` plans as a real plan does, for each email address and Slack channel, and records nothing."""
    config.write_text(CONFIG.replace("name: audio-lab", "name: listening-lab"), encoding="utf-8")
    options = ("--subscribers", str(config), "--data-dir", str(demo_data))

    def shown(done: subprocess.CompletedProcess[str]) -> list[str]:
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith(("Subject: ", "To: ", "Slack "))]

    first = shown(notifier("preview", "listening-lab", *options))
    assert [line for line in first if not line.startswith("Subject: ")] == [
        "To: ann@lab.example",
        "To: bob@lab.example",
        "Slack #papers: 2 messages (--slack shows the Block Kit JSON)",
    ]
    assert first[0].startswith("Subject: [arXiv] ") and first[0] == first[2], "each address gets the same digest"
    store = SqliteStore(demo_data / "notifier.sqlite3")
    try:
        counts = store.delivery_counts()
        store.unsubscribe("listening-lab", "Bob@Lab.example", datetime.now(UTC))
    finally:
        store.close()
    done = notifier("preview", "listening-lab", *options)
    assert shown(done) == [first[0], "To: ann@lab.example", first[4]]
    assert done.stderr == "(no digest for bob@lab.example: unsubscribed)\n"
    slack = notifier("preview", "listening-lab", "--slack", *options)
    assert slack.returncode == 0
    assert slack.stderr == "(Slack payload for #papers)\n(no digest for bob@lab.example: unsubscribed)\n"
    assert json.loads(slack.stdout)[0]["blocks"]
    store = SqliteStore(demo_data / "notifier.sqlite3")
    try:
        assert store.delivery_counts() == counts, "preview records nothing"
        state = store.subscriber_state("listening-lab")
        assert state is not None and state.cursor is None and state.last_digest_at is None, "and moves no cursor"
    finally:
        store.close()


def test_list_shows_each_subscriber_s_rules_channels_schedule_and_next_due_time(config, tmp_path, demo_data):
    fresh = notifier("list", "--subscribers", str(config), "--data-dir", str(tmp_path / "data"))
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.splitlines() == [
        "SUBSCRIBER  RULES                         CHANNELS              CATEGORIES     SCHEDULE"
        "                        NEXT DUE",
        "audio-lab   2: speech recognition, music  email (2), slack (1)  cs.SD eess.AS  daily 08:00 UTC"
        "                 at the first run",
        "voice       1: speech                     email (1)             eess.AS        weekly mon 09:00 Europe/Berlin"
        "  at the first run",
    ]
    demo = notifier(
        "list", "--subscribers", str(ROOT / "notifier/demo/data/subscribers.yaml"), "--data-dir", str(demo_data)
    )
    rows = demo.stdout.splitlines()
    assert rows[0].split() == ["SUBSCRIBER", "RULES", "CHANNELS", "CATEGORIES", "SCHEDULE", "NEXT", "DUE"]
    assert rows[1].startswith("audio-lab ") and rows[1].endswith(" 08:00 UTC")
    assert rows[2].startswith("voice-team ") and rows[2].endswith(" 08:00 UTC")


async def test_send_test_reaches_each_channel_and_reports_each_result(config, tmp_path):
    async with SlackServer(token="xoxb-test", channels={"#papers"}) as slack:
        with SmtpServer() as smtp:
            code, out = await send_test(smtp, slack, tmp_path, config)
            received = smtp.wait_for(2)
    assert code == 0
    assert out.splitlines() == [
        "email ann@lab.example: sent",
        "email bob@lab.example: sent",
        "slack #papers: sent",
    ]
    assert sorted(rcpt for message in received for rcpt in message.rcpt_tos) == ["ann@lab.example", "bob@lab.example"]
    message = email.message_from_bytes(received[0].data, policy=email.policy.default)
    assert message["Subject"] == "[arXiv] test message for audio-lab"
    body = message.get_body(("plain",))
    assert body is not None
    assert " ".join(body.get_content().split()) == (
        "This is a test message from arxiv-notifier for the subscriber audio-lab, sent by `notifier send-test`."
        " Its digests of new arXiv papers matching its rules (speech recognition, music) come daily 08:00 UTC."
    )
    (post,) = slack.posts
    assert post.channel == "#papers" and post.text is not None
    assert post.text.startswith("This is a test message from arxiv-notifier for the subscriber audio-lab")


async def test_send_test_reports_a_refused_channel_and_exits_4(config, tmp_path):
    async with SlackServer(token="xoxb-test", channels=set()) as slack:
        with SmtpServer() as smtp:
            smtp.faults.reject.add("bob@lab.example")
            code, out = await send_test(smtp, slack, tmp_path, config)
    assert code == 4
    lines = out.splitlines()
    assert lines[0] == "email ann@lab.example: sent"
    assert lines[1].startswith("email bob@lab.example: failed: ")
    assert lines[2].startswith("slack #papers: failed: ") and "channel_not_found" in lines[2]


def test_send_test_without_smtp_or_slack_writes_the_outbox_and_says_so(config, tmp_path):
    data = tmp_path / "data"
    done = notifier("send-test", "voice", "--subscribers", str(config), "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    (written,) = (data / "outbox" / "email").iterdir()
    assert done.stdout == f"email voice@speech.example: written to {written} (NOTIFIER_SMTP_HOST is not set)\n"


async def send_test(smtp: SmtpServer, slack: SlackServer, tmp_path: Path, config: Path) -> tuple[int, str]:
    """`notifier send-test audio-lab` through the SMTP server and the Slack stand-in: (exit code, output)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "NOTIFIER_SUBSCRIBERS": str(config),
        "NOTIFIER_DATA_DIR": str(tmp_path / "data"),
        "NOTIFIER_SMTP_HOST": "127.0.0.1",
        "NOTIFIER_SMTP_PORT": str(smtp.port),
        "NOTIFIER_SMTP_SECURITY": "none",
        "NOTIFIER_MAIL_FROM": "digest@lab.example",
        "NOTIFIER_SLACK_TOKEN": "xoxb-test",
        "NOTIFIER_SLACK_API_URL": slack.api_url,
    }
    process = await start_cli("send-test", "audio-lab", env=env)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert b"Traceback" not in err, err
    return process.returncode, out.decode()


def test_schema_still_prints_json():
    assert json.loads(notifier("schema").stdout)["title"] == "arxiv-notifier subscribers.yaml"
