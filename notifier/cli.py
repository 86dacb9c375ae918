"""Command line: ``notifier run | once | check | preview NAME | status | retry [NAME] | schema``.

Settings come from ``NOTIFIER_*`` environment variables; the options below override them. The commands that send
or change history (``run``, ``once``, ``retry``, ``rename``) hold the data directory's lock (:mod:`notifier.lock`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from notifier import __version__
from notifier.channels.webhooks import display_recipient, scrub
from notifier.config import Config, SubscriberFields, SubscriberModel, load_config
from notifier.daemon import CycleReport, Notifier, run_daemon, until_signalled, utcnow
from notifier.errors import ConfigError, DataDirBusyError, NotifierError
from notifier.lock import DataDirLock, data_dir_lock, hold_data_dir
from notifier.logs import RepeatFilter
from notifier.settings import ENV_VARS, Settings, load_settings
from notifier.store_factory import open_store

log = logging.getLogger("notifier")

_OPTIONS: dict[str, str] = {
    "subscribers": "path of subscribers.yaml",
    "data_dir": "folder for the database and the outbox",
    "arxiv_rss_url": "feed base URL; categories are appended",
    "arxiv_api_url": "arXiv API query URL",
    "min_request_interval": "seconds between requests to arXiv (at least 3)",
    "contact": "contact address sent in the User-Agent",
    "smtp_host": "SMTP server; without it mail is written to the outbox folder",
    "smtp_port": "SMTP port (default by security: 587, 465 or 25)",
    "smtp_username": "SMTP user name",
    "smtp_security": "starttls, tls or none",
    "smtp_pool_size": "SMTP connections kept open at once",
    "mail_from": "From address of digests",
    "slack_api_url": "Slack Web API base URL",
    "public_url": "https:// URL where this daemon is reachable (enables one-click unsubscribe)",
    "http_addr": "host:port to serve /healthz, /readyz, /metrics and /unsubscribe on",
    "templates": "folder with templates overriding the built-in ones",
    "database_url": "postgresql:// URL of a database several daemons share (default: SQLite in the data folder)",
    "webhook_hosts": "hosts (host or host:port, comma-separated) webhooks may post to, besides hooks.slack.com",
}


EXIT_CODES = """\
exit codes:
  0    done; also when SIGTERM or SIGINT stopped run, once or retry (the sends in flight finish first,
       within a few seconds; what was not sent goes out at the next run)
  1    the config is invalid (check prints file:line:column)
  2    bad usage, or the command failed (the store, arXiv, a mail server...; the reason is logged)
  5    another notifier is sending from the same data directory (SQLite) and did not finish within
       NOTIFIER_LOCK_WAIT seconds (default 30); nothing was sent; try again later
  130  interrupted while starting
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("settings (each overrides its environment variable)")
    for name, text in _OPTIONS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=f"{text} [{ENV_VARS[name]}]")
    common.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("NOTIFIER_LOG_FORMAT", "text"),
        help="log line format [NOTIFIER_LOG_FORMAT]",
    )

    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Watch arXiv and send each subscriber the new papers that match their rules.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"arxiv-notifier {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run the daemon until SIGTERM/SIGINT")
    once = commands.add_parser(
        "once", parents=[common], help="poll, match, and send every pending digest now (for cron)"
    )
    once.add_argument("--no-poll", action="store_true", help="skip polling; plan and send from stored papers")
    commands.add_parser("check", parents=[common], help="validate the config; exit 1 with file:line errors")
    preview = commands.add_parser(
        "preview", parents=[common], help="render a subscriber's next digest without sending or recording anything"
    )
    preview.add_argument("name", help="the subscriber's name")
    preview.add_argument("--html", type=Path, metavar="FILE", help="also write the HTML email to FILE")
    preview.add_argument("--slack", action="store_true", help="print the Slack Block Kit JSON instead of the text")
    commands.add_parser("status", parents=[common], help="show feeds and pending, retrying and failed deliveries")
    retry = commands.add_parser(
        "retry", parents=[common], help="send failed deliveries again (all, or one subscriber's)"
    )
    retry.add_argument("name", nargs="?", help="only this subscriber's deliveries")
    rename = commands.add_parser(
        "rename", parents=[common], help="move a subscriber's history to a new name, so nothing is sent again"
    )
    rename.add_argument("old", help="the name the store knows")
    rename.add_argument("new", help="the new name, as written in subscribers.yaml")
    commands.add_parser("schema", help="print the JSON Schema of subscribers.yaml (for editors)")
    return parser


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbose: bool, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    handler.addFilter(RepeatFilter(handler))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("aiosmtplib", "slack_sdk", "asyncio", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(subscribers_schema(), indent=2))
        return 0
    setup_logging(args.verbose, args.log_format)
    try:
        settings = load_settings(overrides={name: getattr(args, name) for name in _OPTIONS})
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DataDirBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 5
    except NotifierError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command: str = args.command
    if command == "check":
        return _check(settings)
    if command == "rename":
        with hold_data_dir(settings):
            return _rename(settings, args.old, args.new)
    config = load_config(settings.subscribers)
    for warning in config.warnings:
        log.warning("%s", warning)
    if command == "run":
        log.info("data directory: %s", settings.data_dir)
        if settings.database_url:
            log.info("database: %s", settings.redacted()["database_url"])
        with hold_data_dir(settings):
            asyncio.run(run_daemon(settings, config))
        return 0
    if command == "once":
        with hold_data_dir(settings):
            return asyncio.run(_once(settings, config, poll=not args.no_poll))
    if command == "preview":
        return asyncio.run(_preview(settings, config, args.name, args.html, args.slack))
    if command == "status":
        return asyncio.run(_status(settings, config))
    if command == "retry":
        return _retry(settings, config, args.name)
    raise AssertionError(command)  # pragma: no cover


def _check(settings: Settings) -> int:
    try:
        config = load_config(settings.subscribers)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rules = sum(len(s.rules) for s in config.subscribers)
    categories = ", ".join(config.categories)
    print(f"{settings.subscribers}: ok: {len(config.subscribers)} subscribers, {rules} rules, categories {categories}")
    return 0


async def _once(settings: Settings, config: Config, *, poll: bool) -> int:
    async def cycle(stop: asyncio.Event) -> CycleReport:
        async with Notifier(settings, config, recover_interrupted=True) as app:
            return await app.cycle(force_send=True, poll=poll, stop=stop)

    report = await until_signalled(cycle)
    if report is None:
        print("stopped by signal; the deliveries still in flight are sent again at the next run")
        return 0
    for outcome in report.polls:
        detail = f", {outcome.new_items} new items" if outcome.status in ("ok", "repeat") else ""
        error = f": {outcome.error}" if outcome.error else ""
        print(f"feed {outcome.feed_key}: {outcome.status}{detail}{error}")
    sent = report.sent
    print(
        f"digests: {report.plan.digests} ({report.plan.papers} papers); deliveries: {sent.sent} sent, "
        f"{sent.retry} to retry, {sent.failed} failed"
    )
    if report.plan.failed:
        names = ", ".join(report.plan.failed[:10]) + (", ..." if len(report.plan.failed) > 10 else "")
        print(f"not planned: {len(report.plan.failed)} digests ({names}); `notifier status` says why")
    if not settings.smtp_host or not settings.slack_token:
        print(f"outbox: {settings.outbox}")
    print(f"time: {report.timing()}")
    if report.polls and all(outcome.status == "error" for outcome in report.polls):
        print("warning: no feed could be fetched; the next run tries again", file=sys.stderr)
    if report.stopped:
        print("stopped by signal; what was not sent goes out at the next run")
    return 0


async def _preview(settings: Settings, config: Config, name: str, html: Path | None, slack: bool) -> int:
    subscriber = config.subscriber(name)
    async with Notifier(settings, config) as app:
        digest = app.planner.preview(config, subscriber, utcnow())
        renderer = app.planner.renderer
        if slack:
            messages = renderer.slack(digest)
            print(
                json.dumps([{"text": m.text, "blocks": list(m.blocks)} for m in messages], indent=2, ensure_ascii=False)
            )
        else:
            rendered = renderer.email(digest)
            print(f"Subject: {rendered.subject}\n")
            print(rendered.text)
            if html is not None:
                html.write_text(rendered.html, encoding="utf-8")  # noqa: ASYNC240 (one small file, once)
                print(f"HTML written to {html}", file=sys.stderr)
    if digest.is_empty:
        print(
            f"(nothing new matches {name}'s rules in the stored papers; run 'notifier once' to poll)", file=sys.stderr
        )
    return 0


async def _status(settings: Settings, config: Config) -> int:
    async with Notifier(settings, config) as app:
        now = utcnow()
        print(f"data directory: {settings.data_dir}")
        print(f"papers stored: {app.store.paper_count()}")
        print("feeds (one per category):")
        for key in config.categories:
            health = app.poller.health(key, now)
            seen = health.last_announced.isoformat() if health.last_announced else "none"
            line = f"  {key}: {health.state}; last announcement seen {seen}; next expected "
            line += health.next_expected.isoformat(timespec="minutes")
            if health.last_error:
                line += f"; last error: {health.last_error}"
            print(line)
            for backfill in app.store.backfills(key, states=("pending",)):
                error = f"; last error: {backfill.last_error}" if backfill.last_error else ""
                print(
                    f"    backfill of {backfill.day} pending ({backfill.reason}, {backfill.attempts} attempts){error}"
                )
        names = {subscriber.name for subscriber in config.subscribers}
        failures = [failure for name, failure in app.store.plan_failures().items() if name in names]
        print(f"plan failures: {len(failures) or 'none'}")
        for failure in failures:
            times = "time" if failure.attempts == 1 else "times"
            print(
                f"  {failure.subscriber}: failed {failure.attempts} {times} since {failure.first_failed:%Y-%m-%d %H:%M}"
                f" UTC, last at {failure.last_failed:%Y-%m-%d %H:%M}; its papers wait: {failure.reason}"
            )
        counts = app.store.delivery_counts()
        print("deliveries: " + (", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none"))
        for row in app.store.deliveries(("pending", "sending", "retry", "failed")):
            when = (
                f" next attempt {row.next_attempt_at:%Y-%m-%d %H:%M}"
                if row.next_attempt_at and row.state == "retry"
                else ""
            )
            reason = f": {scrub(row.last_error, row.recipient)}" if row.last_error else ""
            print(
                f"  {row.state:8} {row.subscriber} {row.channel} {display_recipient(row.recipient)}"
                f" ({row.paper_count} papers, {row.attempts} attempts){when}{reason}"
            )
    return 0


def _rename(settings: Settings, old: str, new: str) -> int:
    store = open_store(settings)
    try:
        store.rename_subscriber(old, new)
    finally:
        store.close()
    print(f"history of {old!r} now belongs to {new!r}; name it {new!r} in {settings.subscribers} if not done yet")
    return 0


def _retry(settings: Settings, config: Config, name: str | None) -> int:
    """Queue failed deliveries again and send them; beside another sender, queue them for it to send."""
    if name is not None:
        config.subscriber(name)
    lock = data_dir_lock(settings)
    if lock is not None and not lock.try_acquire():
        return _queue_for(lock, settings, name)
    try:
        return asyncio.run(_retry_now(settings, config, name))
    finally:
        if lock is not None:
            lock.release()


def _queue_for(lock: DataDirLock, settings: Settings, name: str | None) -> int:
    store = open_store(settings)
    try:
        count = store.retry_failed(utcnow(), name)
    finally:
        store.close()
    print(
        f"{count} deliveries queued again; the notifier sending from {settings.data_dir} ({lock.holder_text()})"
        " sends them, or the next run does"
    )
    return 0


async def _retry_now(settings: Settings, config: Config, name: str | None) -> int:
    async def retry(stop: asyncio.Event) -> None:
        async with Notifier(settings, config, recover_interrupted=True) as app:
            count = app.store.retry_failed(utcnow(), name)
            print(f"{count} deliveries queued again")
            report = await app.send(stop)
        print(f"deliveries: {report.sent} sent, {report.retry} to retry, {report.failed} failed")

    await until_signalled(retry)
    return 0


_FIELD_HELP = {
    "name": "Unique name, used by `notifier preview NAME`, in logs and in the store",
    "email": "An email address or a list of them; each gets its own digest",
    "slack": "A Slack channel (#name or ID), an incoming-webhook https:// URL, or a list of them",
    "categories": "arXiv categories to follow, such as cs.DC",
    "schedule": '"daily HH:MM ZONE", "weekly mon HH:MM ZONE" (IANA zone) or "instant"',
    "announce_types": "Which announcements to send; add replace / replace-cross to get new versions",
    "send_empty": "Also send a short digest saying why there are no papers",
    "rules": "Each rule is one section of the digest",
}


def subscribers_schema() -> dict[str, Any]:
    """The JSON Schema of subscribers.yaml, from the models that validate it."""

    class SubscribersFile(BaseModel):
        model_config = ConfigDict(extra="forbid", title="arxiv-notifier subscribers.yaml")
        defaults: SubscriberFields | None = None
        subscribers: list[SubscriberModel] = []

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **SubscribersFile.model_json_schema()}
    definitions = schema["$defs"]
    definitions["SubscriberFields"]["description"] = "Defaults for every subscriber: any subscriber field but name"
    for model in ("SubscriberFields", "SubscriberModel"):
        properties = definitions[model]["properties"]
        for name in ("email", "slack"):  # one string is read as a list of one
            many = properties[name]
            title, default = many.pop("title"), many.pop("default")
            properties[name] = {"title": title, "anyOf": [{"type": "string"}, many], "default": default}
        for name, text in _FIELD_HELP.items():
            if name in properties:
                properties[name]["description"] = text
    return schema


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
