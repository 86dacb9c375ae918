"""The commands that look at or act on the store: once, check, preview, status, retry, rename, list, send-test.

Each prints what a person reads and returns an :class:`~notifier.exit_codes.ExitCode`; errors are raised as
:class:`~notifier.errors.NotifierError` for :func:`notifier.cli.main` to print.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import sys
from collections.abc import Sequence
from datetime import datetime
from html import escape
from pathlib import Path

import aiohttp

from notifier.arxiv.likes import sources
from notifier.channels.files import FileChannel
from notifier.channels.router import Channels
from notifier.channels.webhooks import display_recipient, scrub
from notifier.config.settings import Settings
from notifier.config.subscribers import Config, Likes, Subscriber, load_config
from notifier.daemon import CycleReport, Notifier, until_signalled, utcnow
from notifier.errors import ConfigError, DeliveryError
from notifier.exit_codes import ExitCode
from notifier.lock import DataDirLock, data_dir_lock
from notifier.models import ChannelKind, Outgoing, RenderedEmail, SlackMessage
from notifier.render.mime import build_email, make_message_id
from notifier.render.slack import decode_payload, encode_payload, indented_payload
from notifier.store import Store, open_store
from notifier.store.rows import NewDelivery
from notifier.web.status_page import next_due_text

DEMO_HINT = "to try the notifier offline on a bundled day of arXiv, run `notifier demo`"


def check(settings: Settings) -> int:
    try:
        config = load_config(settings.subscribers)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return ExitCode.CONFIG
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    rich = [s.name for s in config.subscribers if any(rule.summaries for rule in s.rules)]
    if rich and not settings.summaries_enabled:
        names = ", ".join(rich[:3]) + (", ..." if len(rich) > 3 else "")
        print(
            f"warning: {len(rich)} subscribers ({names}) ask for summaries, but no LLM is set (NOTIFIER_LLM_URL and"
            " NOTIFIER_LLM_MODEL): their digests show every paper as usual, without summaries",
            file=sys.stderr,
        )
    rules = sum(len(s.rules) for s in config.subscribers)
    categories = ", ".join(config.categories)
    print(f"{settings.subscribers}: ok: {len(config.subscribers)} subscribers, {rules} rules, categories {categories}")
    return ExitCode.OK


async def once(settings: Settings, config: Config, *, poll: bool) -> int:
    async def cycle(stop: asyncio.Event) -> CycleReport:
        async with Notifier(settings, config, recover_interrupted=True) as app:
            return await app.cycle(force_send=True, poll=poll, stop=stop)

    report = await until_signalled(cycle)
    if report is None:
        print("stopped by signal; the deliveries still in flight are sent again at the next run")
        return ExitCode.OK
    print_cycle(report)
    if report.plan.failed:
        names = ", ".join(report.plan.failed[:10]) + (", ..." if len(report.plan.failed) > 10 else "")
        print(f"not planned: {len(report.plan.failed)} digests ({names}); `notifier status` says why")
    if not settings.smtp_host or not settings.slack_token:
        print(f"outbox: {settings.outbox}")
    print(f"time: {report.timing()}")
    if report.stopped:
        print("stopped by signal; what was not sent goes out at the next run")
    if report.polls and all(outcome.status == "error" for outcome in report.polls):
        feeds = "the feed" if len(report.polls) == 1 else f"any of the {len(report.polls)} feeds"
        print(f"error: arXiv could not be reached: could not fetch {feeds}; {DEMO_HINT}", file=sys.stderr)
        return ExitCode.ARXIV_UNREACHABLE
    if report.sent.failed:
        return ExitCode.DELIVERY_FAILED
    return ExitCode.OK


def print_cycle(report: CycleReport) -> None:
    """The feeds polled and what was planned and sent, a line each."""
    for outcome in report.polls:
        detail = f", {outcome.new_items} new items" if outcome.status in ("ok", "repeat") else ""
        error = f": {outcome.error}" if outcome.error else ""
        print(f"feed {outcome.feed_key}: {outcome.status}{detail}{error}")
    sent = report.sent
    print(
        f"digests: {report.plan.digests} ({report.plan.papers} papers); deliveries: {sent.sent} sent, "
        f"{sent.retry} to retry, {sent.failed} failed"
    )


async def preview(
    settings: Settings, config: Config, name: str, html: Path | None, slack: bool, *, summarise: bool = False
) -> int:
    """Show what the next plan would write for ``name`` (:meth:`~notifier.outbox.planner.Planner.preview`), read
    back from the payloads it would store, and say which recipients would get nothing and why. Rich entries show
    the summaries already stored; only with ``summarise`` are the missing ones asked of the LLM (and stored)."""
    subscriber = config.subscriber(name)
    if summarise and not settings.summaries_enabled:
        raise ConfigError("--summarise needs an LLM: set NOTIFIER_LLM_URL and NOTIFIER_LLM_MODEL")
    async with Notifier(settings, config) as app:
        if summarise:
            await app.summarise(force=True, only=subscriber)
        planned = app.planner.preview(config, subscriber, utcnow())
    deliveries = planned.record.deliveries
    if slack:
        _print_slack_payloads(deliveries)
        if not subscriber.slack:
            print(f"({name} has no Slack channel)", file=sys.stderr)
    else:
        _print_deliveries(deliveries)
        if html is not None:
            _write_html(deliveries, html)
    for skipped in planned.skipped:
        print(f"(no digest for {display_recipient(skipped.recipient)}: {skipped.reason})", file=sys.stderr)
    if not deliveries and any(skipped.reason == "nothing new" for skipped in planned.skipped):
        print(f"(nothing new for {name} in the stored papers; run 'notifier once' to poll)", file=sys.stderr)
    if planned.rich:
        missing = planned.rich - planned.summarised
        line = f"(summaries: {planned.summarised} of {planned.rich} rich entries have one"
        if missing and settings.summaries_enabled:
            line += f"; {missing} still missing: 'notifier preview {name} --summarise' makes them"
        elif missing:
            line += f"; {missing} missing, and no LLM is set (NOTIFIER_LLM_URL and NOTIFIER_LLM_MODEL)"
        print(line + ")", file=sys.stderr)
    return ExitCode.OK


def _print_deliveries(deliveries: Sequence[NewDelivery]) -> None:
    """Each delivery as its reader meets it: an email's subject, recipient and text part; a Slack one in a line."""
    for number, delivery in enumerate(deliveries):
        shown = display_recipient(delivery.recipient)
        if number:
            print()
        if delivery.channel == "email":
            subject, text, _html = _email_parts(delivery.payload)
            print(f"Subject: {subject}\nTo: {shown}\n")
            print(text, end="")
        else:
            count = len(decode_payload(delivery.payload))
            print(f"Slack {shown}: {count} message{'' if count == 1 else 's'} (--slack shows the Block Kit JSON)")


def _print_slack_payloads(deliveries: Sequence[NewDelivery]) -> None:
    """Each Slack delivery's payload as JSON, indented; which recipient it is for goes to standard error."""
    for delivery in deliveries:
        if delivery.channel == "slack":
            print(f"(Slack payload for {display_recipient(delivery.recipient)})", file=sys.stderr, flush=True)
            print(indented_payload(delivery.payload), flush=True)


def _write_html(deliveries: Sequence[NewDelivery], path: Path) -> None:
    """The HTML part of each email to ``path``; a second email's to ``path`` with ``-2`` before its suffix, ..."""
    for number, delivery in enumerate(d for d in deliveries if d.channel == "email"):
        target = path.with_name(f"{path.stem}-{number + 1}{path.suffix}") if number else path
        target.write_text(_email_parts(delivery.payload)[2], encoding="utf-8")
        print(f"HTML written to {target} (the email to {delivery.recipient})", file=sys.stderr)


def _email_parts(payload: bytes) -> tuple[str, str, str]:
    """The subject, text part and HTML part of an email, as a mail program shows them (line ends as ``\\n``)."""
    message = email.message_from_bytes(payload, policy=email.policy.default)
    parts = [message.get_body((kind,)) for kind in ("plain", "html")]
    text, html = (part.get_content().replace("\r\n", "\n") if part is not None else "" for part in parts)
    return str(message["Subject"]), text, html


async def status(settings: Settings, config: Config) -> int:
    async with Notifier(settings, config) as app:
        now = utcnow()
        print(f"data directory: {settings.data_dir}")
        print(f"papers stored: {app.store.paper_count()}")
        print("feeds (one per category):")
        for key in config.categories:
            health = app.feed_health(key, now)
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
        if settings.summaries_enabled:
            usage = app.store.llm_usage(now.date())
            print(
                f"summaries today (UTC): {usage.made} made and {usage.failed} failed of {usage.asked} papers asked,"
                f" daily limit {settings.llm_daily_limit}; {usage.prompt_tokens} prompt and"
                f" {usage.completion_tokens} completion tokens ({settings.llm_model})"
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
    return ExitCode.OK


def rename(settings: Settings, old: str, new: str) -> int:
    """Move ``old``'s history to ``new``, which subscribers.yaml must already name."""
    config = load_config(settings.subscribers)
    if new not in {subscriber.name for subscriber in config.subscribers}:
        known = ", ".join(subscriber.name for subscriber in config.subscribers) or "none"
        raise ConfigError(
            f"no subscriber named {new!r} in {settings.subscribers} (known: {known}); rename {old!r} to {new!r}"
            " there first, then run `notifier rename` again"
        )
    store = open_store(settings.database_url or settings.database)
    try:
        store.rename_subscriber(old, new)
    finally:
        store.close()
    print(f"history of {old!r} now belongs to {new!r}")
    return ExitCode.OK


def retry(settings: Settings, config: Config, name: str | None) -> int:
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
    store = open_store(settings.database_url or settings.database)
    try:
        count = store.retry_failed(utcnow(), name)
    finally:
        store.close()
    print(
        f"{count} deliveries queued again; the notifier sending from {settings.data_dir} ({lock.holder_text()})"
        " sends them, or the next run does"
    )
    return ExitCode.OK


async def _retry_now(settings: Settings, config: Config, name: str | None) -> int:
    async def retry(stop: asyncio.Event) -> int:
        async with Notifier(settings, config, recover_interrupted=True) as app:
            count = app.store.retry_failed(utcnow(), name)
            print(f"{count} deliveries queued again")
            report = await app.send(stop)
        print(f"deliveries: {report.sent} sent, {report.retry} to retry, {report.failed} failed")
        return report.failed

    failed = await until_signalled(retry)
    return ExitCode.DELIVERY_FAILED if failed else ExitCode.OK


def likes(settings: Settings, config: Config, name: str) -> int:
    """What a subscriber's ``like:`` and ``dislike:`` entries resolved to on arXiv, as the store has them, and the
    feedback its readers gave through the links under ranked papers."""
    subscriber = config.subscriber(name)
    store = open_store(settings.database_url or settings.database)
    try:
        for label, liked in (("likes", subscriber.likes), ("dislikes", subscriber.dislikes)):
            _print_likes(store, name, label, liked)
        _print_feedback(store, name)
    finally:
        store.close()
    return ExitCode.OK


def _print_likes(store: Store, name: str, label: str, liked: Likes) -> None:
    named = sources(liked)
    if not named:
        print(f"{name} {label}: none")
        return
    resolved = store.like_sources(named)
    papers = store.reference_papers(arxiv_id for ids, _at in resolved.values() for arxiv_id in ids)
    print(f"{name} {label} ({len(named)} entries, {len(papers)} papers known):")
    for source in named:
        found = resolved.get(source)
        if found is None:
            print(f"  {source}: not looked up yet (after the next poll)")
            continue
        ids, at = found
        count = "1 paper" if len(ids) == 1 else f"{len(ids)} papers"
        print(f"  {source}: {count}, looked up {at:%Y-%m-%d %H:%M} UTC")
        for arxiv_id in ids:
            paper = papers.get(arxiv_id)
            print(f"    {arxiv_id}  {paper.title if paper else '(not stored)'}")


def _print_feedback(store: Store, name: str) -> None:
    """What the subscriber's readers said through the links under ranked papers, the latest first."""
    given = store.feedback_of([name]).get(name, {})
    if not given:
        print(f"{name} feedback: none")
        return
    papers = store.reference_papers(given)
    print(f"{name} feedback ({len(given)} papers, the later click on a paper counts):")
    for arxiv_id, (kind, at) in sorted(given.items(), key=lambda item: (item[1][1], item[0]), reverse=True):
        paper = papers.get(arxiv_id)
        print(f"  {kind:<5}  {arxiv_id}  {at:%Y-%m-%d %H:%M} UTC  {paper.title if paper else '(not stored)'}")


def list_subscribers(settings: Settings, config: Config) -> int:
    """A table of the subscribers: rules, channels, categories, schedule and when the next digest is due."""
    store = open_store(settings.database_url or settings.database)
    try:
        rows = [_list_row(subscriber, store, utcnow()) for subscriber in config.subscribers]
    finally:
        store.close()
    header = ("SUBSCRIBER", "RULES", "CHANNELS", "CATEGORIES", "SCHEDULE", "NEXT DUE")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return ExitCode.OK


def _list_row(subscriber: Subscriber, store: Store, now: datetime) -> tuple[str, ...]:
    channels = [f"email ({len(subscriber.emails)})"] if subscriber.emails else []
    channels += [f"slack ({len(subscriber.slack)})"] if subscriber.slack else []
    rules = ", ".join(rule.name for rule in subscriber.rules)
    return (
        subscriber.name,
        f"{len(subscriber.rules)}: {rules}",
        ", ".join(channels),
        " ".join(subscriber.categories),
        str(subscriber.schedule),
        next_due_text(subscriber, store.subscriber_state(subscriber.name), now),
    )


async def send_test(settings: Settings, config: Config, name: str) -> int:
    """Send a short test message to each of ``name``'s channels now and print each outcome."""
    subscriber = config.subscriber(name)
    failed = 0
    now = utcnow()
    async with aiohttp.ClientSession() as session:
        channels = Channels(settings, session)
        try:
            for channel_name, recipient in subscriber.recipients():
                shown = f"{channel_name} {display_recipient(recipient)}"
                try:
                    message = _test_message(settings, subscriber, channel_name, recipient, now)
                    channel = channels.channel_for(message)
                    await channel.send(message)
                except (DeliveryError, ValueError) as exc:
                    failed += 1
                    print(f"{shown}: failed: {scrub(str(exc), recipient)}")
                    continue
                if isinstance(channel, FileChannel):
                    unset = "NOTIFIER_SMTP_HOST" if channel_name == "email" else "NOTIFIER_SLACK_TOKEN"
                    print(f"{shown}: written to {channel.path_for(message)} ({unset} is not set)")
                else:
                    print(f"{shown}: sent")
        finally:
            await channels.aclose()
    return ExitCode.DELIVERY_FAILED if failed else ExitCode.OK


def _test_message(
    settings: Settings, subscriber: Subscriber, channel: ChannelKind, recipient: str, now: datetime
) -> Outgoing:
    rules = ", ".join(rule.name for rule in subscriber.rules)
    text = (
        f"This is a test message from arxiv-notifier for the subscriber {subscriber.name}, sent by "
        f"`notifier send-test`. Its digests of new arXiv papers matching its rules ({rules}) come "
        f"{'as papers are announced' if subscriber.schedule.kind == 'instant' else str(subscriber.schedule)}."
    )
    key = f"send-test|{subscriber.name}|{channel}|{recipient}|{now.isoformat()}"
    message_id = make_message_id(key, settings.mail_domain)
    if channel == "email":
        rendered = RenderedEmail(
            subject=f"[arXiv] test message for {subscriber.name}", text=text + "\n", html=_test_html(text)
        )
        payload = build_email(
            rendered,
            sender=settings.mail_from,
            recipient=recipient,
            message_id=message_id,
            date=now,
            list_id=f"{subscriber.name}.{settings.mail_domain}",
            unsubscribe_url=None,
        )
    else:
        block: dict[str, object] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
        payload = encode_payload([SlackMessage(text=text, blocks=(block,))])
    return Outgoing(
        delivery_id=f"send-test-{message_id.strip('<>')}",
        subscriber=subscriber.name,
        channel=channel,
        recipient=recipient,
        message_id=message_id,
        payload=payload,
    )


def _test_html(text: str) -> str:
    head = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"></head>'
    return f"{head}<body><p>{escape(text)}</p></body></html>\n"
