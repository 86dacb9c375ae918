"""Command line: ``notifier run | once | check | preview NAME | status | retry [NAME] | rename OLD NEW | list |
likes NAME | send-test NAME | demo | schema``.

Settings come from ``NOTIFIER_*`` environment variables; the options of the same name override them (each command
takes those that apply to it). The commands that send or change history (``run``, ``once``, ``retry``, ``rename``)
hold the data directory's lock (:mod:`notifier.lock`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from notifier import __version__, commands
from notifier.config.last_good import load_or_last_good
from notifier.config.settings import ENV_VARS, Settings, load_settings
from notifier.config.subscribers import SubscriberFields, SubscriberModel, load_config
from notifier.daemon import run_daemon
from notifier.errors import ConfigError, DataDirBusyError, NotifierError
from notifier.exit_codes import TABLE as EXIT_CODES
from notifier.exit_codes import ExitCode
from notifier.lock import hold_data_dir
from notifier.logs import RepeatFilter

log = logging.getLogger("notifier")

# Every setting but the two secrets (NOTIFIER_SMTP_PASSWORD, NOTIFIER_SLACK_TOKEN: an option would show them in the
# process list), grouped by what it is about; each command takes the groups that apply to it.
_GROUPS: dict[str, dict[str, str]] = {
    "store": {
        "data_dir": "folder for the database and the outbox",
        "database_url": "postgresql:// URL of a database several daemons share (default: SQLite in the data folder)",
    },
    "sender": {
        "lock_wait": "seconds to wait for another notifier sending from the same data folder (SQLite)",
        "lease_seconds": "PostgreSQL: seconds a claimed delivery is kept from other daemons",
    },
    "arxiv": {
        "arxiv_rss_url": "feed base URL; categories are appended",
        "arxiv_api_url": "arXiv API query URL",
        "min_request_interval": "seconds between requests to arXiv (at least 3)",
        "contact": "contact address sent in the User-Agent",
        "request_timeout": "seconds one request to arXiv may take",
        "poll_timeout": "seconds one poll (every feed, backfills, API look-ups) may take in all",
        "backfill_days": "days back the API is asked for what the feed missed",
        "max_feed_bytes": "largest feed or API answer read, in bytes",
        "retention_days": "days sent payloads and old papers are kept (0: all)",
    },
    "mail": {
        "smtp_host": "SMTP server; without it mail is written to the outbox folder",
        "smtp_port": "SMTP port (default by security: 587, 465 or 25)",
        "smtp_username": "SMTP user name (the password comes from NOTIFIER_SMTP_PASSWORD only)",
        "smtp_security": "starttls, tls or none",
        "smtp_validate_certs": "true or false: check the SMTP server's certificate",
        "smtp_pool_size": "SMTP connections kept open at once",
        "mail_from": "From address of digests",
    },
    "slack": {
        "slack_api_url": "Slack Web API base URL (the token comes from NOTIFIER_SLACK_TOKEN only)",
        "webhook_hosts": "hosts (host or host:port, comma-separated) webhooks may post to, besides hooks.slack.com",
    },
    "render": {
        "templates": "folder with templates overriding the built-in ones",
        "public_url": "https:// URL where this daemon is reachable (enables one-click unsubscribe and feedback links)",
        "render_workers": "processes a plan of 100 digests or more renders in (default: one per core; 0: none)",
    },
    "llm": {
        "llm_url": "OpenAI-compatible base URL for summaries and embeddings (the key comes from NOTIFIER_LLM_API_KEY"
        " only)",
        "llm_model": "the model that writes summaries, such as gpt-4o-mini or llama3.1:8b",
        "embedding_model": "the model that embeds papers for ranking, such as text-embedding-3-small (unset: TF-IDF)",
        "llm_concurrency": "requests to the LLM at once",
        "llm_daily_limit": "papers summarised per UTC day, by every process together",
        "llm_timeout": "seconds one LLM request may take",
        "llm_grace": "seconds a due digest may wait for its summaries before it goes without them",
    },
    "http": {
        "http_addr": "host:port to serve the status page, /healthz, /readyz, /metrics and /unsubscribe on",
        "poll_interval": "seconds between polls while an expected announcement has not appeared",
        "status_show_addresses": "true or false: show recipients' addresses on the status page",
    },
}
_OPTIONS = {name: text for group in _GROUPS.values() for name, text in group.items()}
_TITLES = {
    "store": "store",
    "sender": "sending",
    "arxiv": "arXiv",
    "mail": "email",
    "slack": "Slack",
    "render": "rendering",
    "llm": "LLM summaries and embeddings",
    "http": "daemon",
}

# command -> (one-line help, description, option groups)
_COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "run": (
        "run the daemon until SIGTERM/SIGINT",
        "Run the daemon: poll arXiv shortly after each announcement, send digests when they are due, retry failed"
        " deliveries, reload subscribers.yaml when it changes (or on SIGHUP), stop cleanly on SIGTERM/SIGINT.",
        ("store", "sender", "arxiv", "mail", "slack", "render", "llm", "http"),
    ),
    "once": (
        "poll, match, and send every pending digest now (for cron)",
        "One full cycle now: poll arXiv, match, then send every pending digest whatever its schedule. Exits 3 when"
        " arXiv could not be reached and 4 when some deliveries failed for good (see `notifier --help`).",
        ("store", "sender", "arxiv", "mail", "slack", "render", "llm"),
    ),
    "check": (
        "validate the config; exit 1 with file:line:column errors",
        "Validate subscribers.yaml and the settings. An error is printed as file:line:column: message and exits 1;"
        " warnings (such as a lower-case 'or' between query terms) are printed and exit 0.",
        (),
    ),
    "preview": (
        "render a subscriber's next digest for each recipient without sending or recording anything",
        "Plan a subscriber's next digest from the stored papers as a real plan would, for each of its recipients,"
        " without sending or recording anything: each email's subject, address and text on standard output (the"
        " HTML to --html FILE; FILE-2, ... for further addresses), or each Slack payload's Block Kit JSON with"
        " --slack. A recipient that would get nothing (unsubscribed, nothing new) is named on standard error, and"
        " so is how many rich entries have a summary. The LLM is asked only with --summarise.",
        ("store", "render", "llm"),
    ),
    "status": (
        "show feeds, plan failures and pending, retrying and failed deliveries",
        "Show each feed's health (last announcement seen, next expected), the digests that could not be planned,"
        " and the pending, retrying and failed deliveries with their reasons.",
        ("store",),
    ),
    "retry": (
        "send failed deliveries again (all, or one subscriber's)",
        "Queue failed deliveries again (all, or one subscriber's) and send them; beside a running notifier, only"
        " queue them for it to send. Exits 4 when some fail again for good.",
        ("store", "sender", "mail", "slack"),
    ),
    "rename": (
        "move a subscriber's history to a new name, so nothing is sent again",
        "Move a subscriber's history (what it was sent) to its new name, so the rename sends nothing again. Rename"
        " it in subscribers.yaml first: NEW must be a subscriber there.",
        ("store", "sender"),
    ),
    "list": (
        "list the subscribers: rules, channels, schedule and next due time",
        "A table of the subscribers in subscribers.yaml: their rules, channels, categories, schedule, and when the"
        " next digest is due (from the store).",
        ("store",),
    ),
    "likes": (
        "show what a subscriber's like: and dislike: entries found on arXiv, and its readers' feedback",
        "For each like: and dislike: entry of a subscriber (an arXiv id, an author, a BibTeX entry), the papers it"
        " resolved to on arXiv and when it was last looked up (each is looked up again after a week), from the"
        " store; then each paper its readers asked for more or fewer like, through the links under ranked papers,"
        " and when.",
        ("store",),
    ),
    "send-test": (
        "send a short test message to each of a subscriber's channels now",
        "Send a short test message to each of a subscriber's email addresses and Slack targets now and report"
        " each result: a check of the SMTP and Slack settings and credentials. Records nothing. Exits 4 when one"
        " failed.",
        ("mail", "slack", "store"),
    ),
    "demo": (
        "run one cycle offline on a bundled day of arXiv, into a new folder",
        "Serve a captured day of arXiv bundled with the notifier (108 real papers of cs.SD and eess.AS) on a local"
        " port, run one cycle with demo subscribers into a new folder, print each file it produced, and write an"
        " index.html linking every email digest. Needs no network and reads no NOTIFIER_* setting.",
        (),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    verbosity.add_argument(
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
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    made: dict[str, argparse.ArgumentParser] = {}
    for name, (summary, description, groups) in _COMMANDS.items():
        command = subparsers.add_parser(name, parents=[verbosity], help=summary, description=description)
        if name != "demo":
            command.add_argument(
                "--subscribers", default=None, help=f"path of subscribers.yaml [{ENV_VARS['subscribers']}]"
            )
        if name == "demo":
            made[name] = command
            continue
        for group_name, options in _GROUPS.items():
            # Every command accepts every setting, as it always has; its help shows those that apply to it.
            shown = group_name in groups
            group = command.add_argument_group(f"{_TITLES[group_name]} settings (each overrides its variable)")
            for option, text in options.items():
                flag = "--" + option.replace("_", "-")
                help_text = f"{text} [{ENV_VARS[option]}]" if shown else argparse.SUPPRESS
                group.add_argument(flag, dest=option, default=None, help=help_text)
        made[name] = command
    made["once"].add_argument("--no-poll", action="store_true", help="skip polling; plan and send from stored papers")
    made["preview"].add_argument("name", help="the subscriber's name")
    made["preview"].add_argument("--html", type=Path, metavar="FILE", help="also write the HTML email to FILE")
    made["preview"].add_argument("--slack", action="store_true", help="print the Slack payloads' JSON instead")
    made["preview"].add_argument(
        "--summarise", action="store_true", help="first ask the LLM for the missing summaries (and store them)"
    )
    made["retry"].add_argument("name", nargs="?", help="only this subscriber's deliveries")
    made["rename"].add_argument("old", help="the name the store knows")
    made["rename"].add_argument("new", help="the new name, as written in subscribers.yaml")
    made["send-test"].add_argument("name", help="the subscriber's name")
    made["likes"].add_argument("name", help="the subscriber's name")
    made["demo"].add_argument(
        "--dir", type=Path, metavar="DIR", help="write into DIR (new or empty) instead of a new temporary folder"
    )
    subparsers.add_parser(
        "schema",
        help="print the JSON Schema of subscribers.yaml (for editors)",
        description="Print the JSON Schema of subscribers.yaml, for editors that validate YAML as it is typed.",
    )
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


def setup_logging(verbose: bool, fmt: str, *, quiet: bool = False) -> None:
    """Log to standard error: debug detail with ``verbose``; otherwise INFO, or only warnings when ``quiet``."""
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
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("aiosmtplib", "slack_sdk", "asyncio", "mail.log", "openai", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# The commands that log their progress; the others print what they found and log only warnings, unless -v.
_LOGGING = frozenset({"run", "once"})


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of standard output went away (`notifier preview NAME | head`): nothing is left to say to it,
        # and the interpreter must not complain when it flushes the rest at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(subscribers_schema(), indent=2))
        return ExitCode.OK
    setup_logging(args.verbose, args.log_format, quiet=args.command not in _LOGGING)
    try:
        if args.command == "demo":
            return _demo(args.dir)
        overrides = {name: getattr(args, name, None) for name in ("subscribers", *_OPTIONS)}
        settings = load_settings(overrides=overrides)
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    except DataDirBusyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BUSY
    except NotifierError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command: str = args.command
    if command == "check":
        return commands.check(settings)
    if command == "rename":
        with hold_data_dir(settings):
            return commands.rename(settings, args.old, args.new)
    rejected: ConfigError | None = None
    if command in ("run", "once"):  # they send: a broken edit leaves them the last good config (see last_good)
        config, rejected = load_or_last_good(settings.subscribers, settings.data_dir)
        if rejected is not None:
            log.error("config rejected, using the last good one: %s", rejected)
    else:
        config = load_config(settings.subscribers)
    for warning in config.warnings:
        log.warning("%s", warning)
    if command == "run":
        log.info("data directory: %s", settings.data_dir)
        if settings.database_url:
            log.info("database: %s", settings.redacted()["database_url"])
        with hold_data_dir(settings):
            asyncio.run(run_daemon(settings, config, rejected))
        return ExitCode.OK
    if command == "once":
        with hold_data_dir(settings):
            code = asyncio.run(commands.once(settings, config, poll=not args.no_poll))
        if rejected is not None:
            print(f"error: {rejected}", file=sys.stderr)
            print("the digests went out with the last subscribers.yaml that loaded; fix the file", file=sys.stderr)
            return ExitCode.CONFIG
        return code
    if command == "preview":
        return asyncio.run(
            commands.preview(settings, config, args.name, args.html, args.slack, summarise=args.summarise)
        )
    if command == "status":
        return asyncio.run(commands.status(settings, config))
    if command == "retry":
        return commands.retry(settings, config, args.name)
    if command == "list":
        return commands.list_subscribers(settings, config)
    if command == "likes":
        return commands.likes(settings, config, args.name)
    if command == "send-test":
        return asyncio.run(commands.send_test(settings, config, args.name))
    raise AssertionError(command)  # pragma: no cover


def _demo(folder: Path | None) -> int:
    from notifier.demo.run import run_demo

    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="arxiv-notifier-demo-"))
    elif folder.exists() and any(folder.iterdir()):
        print(f"error: {folder} is not empty; give a new or empty folder", file=sys.stderr)
        return ExitCode.FAILED
    print(
        "serving a captured day of arXiv (cs.SD and eess.AS, 2025-06-03) on 127.0.0.1;"
        " nothing is fetched from the internet"
    )
    result = asyncio.run(run_demo(folder))
    commands.print_cycle(result.report)
    print(f"files written to {result.folder}:")
    for path in (*result.files, *result.pages):
        print(f"  {path}")
    print(f"open {result.index} in a browser to read the email digests")
    return ExitCode.OK


_FIELD_HELP = {
    "name": "Unique name, used by `notifier preview NAME`, in logs and in the store",
    "email": "An email address or a list of them; each gets its own digest",
    "slack": "A Slack channel (#name or ID), an incoming-webhook https:// URL, or a list of them",
    "categories": "arXiv categories to follow, such as cs.DC",
    "schedule": '"daily HH:MM ZONE", "weekly mon HH:MM ZONE" (IANA zone) or "instant"',
    "announce_types": "Which announcements to send; add replace / replace-cross to get new versions",
    "send_empty": "Also send a short digest saying why there are no papers",
    "summaries": "Rich entries: each paper with an LLM summary and tags (needs NOTIFIER_LLM_URL); a rule may say"
    " otherwise for itself",
    "like": 'Your papers: arXiv ids (2401.01234), authors (au:"Tianyin Xu") or a BibTeX file (lab.bib); ranked'
    " rules and sort: relevance find papers like them",
    "dislike": "Papers you do not want more of, in the same forms as like",
    "sort": "announced (the default) or relevance: each section ordered by similarity to your liked papers",
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
        for name in ("email", "slack", "like", "dislike"):  # one string is read as a list of one
            many = properties[name]
            title, default = many.pop("title"), many.pop("default")
            properties[name] = {"title": title, "anyOf": [{"type": "string"}, many], "default": default}
        for name, text in _FIELD_HELP.items():
            if name in properties:
                properties[name]["description"] = text
    definitions["RuleModel"]["anyOf"] = [{"required": ["query"]}, {"required": ["similar"]}]
    definitions["RuleModel"]["properties"]["similar"]["description"] = (
        "Rank by similarity to your liked papers: alone, the top papers of your categories; with a query, only the"
        " matches that also look like your work"
    )
    definitions["RuleModel"]["properties"]["summaries"]["description"] = (
        "Rich entries for this rule's section (true) or one line per paper (false); unset: the subscriber's choice"
    )
    return schema


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
