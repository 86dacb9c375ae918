"""The read-only status page served at ``/`` when ``NOTIFIER_HTTP_ADDR`` is set.

:func:`gather` reads what ``notifier status`` shows into plain rows; :func:`render` writes them as one HTML page,
autoescaped, with no JavaScript. Recipients are shown by channel only ("email", "slack") unless
``NOTIFIER_STATUS_SHOW_ADDRESSES`` is true; webhook URLs never, and a delivery's reason never quotes a hidden
address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import jinja2

from notifier.channels.webhooks import display_recipient, scrub
from notifier.config.subscribers import Subscriber
from notifier.models import DeliveryState
from notifier.outbox.planner import Planner
from notifier.store.rows import SubscriberState
from notifier.web.service import Service

HIDDEN = "[hidden]"  # a recipient, in a reason, while addresses are not shown
MAX_ROWS = 200  # deliveries listed per state; the rest are counted
_STATES: tuple[tuple[DeliveryState, str], ...] = (
    ("pending", "pending"),
    ("sending", "sending"),
    ("retry", "retrying"),
    ("failed", "failed"),
)


@dataclass(frozen=True, slots=True)
class FeedRow:
    category: str
    state: str
    last_announcement: str
    next_expected: str
    error: str


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    state: str
    subscriber: str
    channel: str
    recipient: str  # empty when addresses are hidden
    attempts: int
    next_attempt: str
    reason: str


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    name: str
    schedule: str
    last_digest: str
    next_due: str
    problem: str


@dataclass(frozen=True, slots=True)
class StatusView:
    now: str
    config: str
    feeds: tuple[FeedRow, ...]
    counts: tuple[tuple[str, int], ...]  # (state as shown, count) for pending, sending, retrying, failed
    deliveries: tuple[DeliveryRow, ...]
    more: int  # deliveries not listed
    subscribers: tuple[SubscriberRow, ...]
    show_addresses: bool


def _time(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else "never"


def next_due_text(subscriber: Subscriber, state: SubscriberState | None, now: datetime) -> str:
    """When ``subscriber``'s next digest is due, for people: a UTC time, or why it has none."""
    if state is None:
        return "at the first run"
    if subscriber.schedule.kind == "instant":
        return "each announcement"
    due = subscriber.schedule.next_due(state.last_digest_at or state.created_at)
    if Planner.is_due(subscriber, now, state):
        return f"now (since {_time(due)})"
    return _time(due)


def gather(app: Service) -> StatusView:
    """What the page shows, read from ``app``'s store and config now."""
    now = app.clock()
    store, config = app.store, app.config
    feeds = []
    for category in config.categories:
        health = app.feed_health(category, now)
        feeds.append(
            FeedRow(
                category,
                health.state,
                health.last_announced.isoformat() if health.last_announced else "none seen",
                _time(health.next_expected),
                health.last_error or "",
            )
        )
    show = app.settings.status_show_addresses
    counts = store.delivery_counts()
    rows: list[DeliveryRow] = []
    listed = {state: 0 for state, _ in _STATES}
    for row in store.deliveries(tuple(state for state, _ in _STATES)):
        if listed[row.state] >= MAX_ROWS:
            continue
        listed[row.state] += 1
        reason = scrub(row.last_error, row.recipient) if row.last_error else ""
        if not show:
            reason = reason.replace(row.recipient, HIDDEN).replace(display_recipient(row.recipient), HIDDEN)
        rows.append(
            DeliveryRow(
                dict(_STATES)[row.state],
                row.subscriber,
                row.channel,
                display_recipient(row.recipient) if show else "",
                row.attempts,
                _time(row.next_attempt_at) if row.state == "retry" else "",
                reason,
            )
        )
    states = store.subscriber_states()
    failures = store.plan_failures()
    subscribers = tuple(
        SubscriberRow(
            subscriber.name,
            str(subscriber.schedule),
            _time(states[subscriber.name].last_digest_at) if subscriber.name in states else "never",
            next_due_text(subscriber, states.get(subscriber.name), now),
            f"not planned: {failures[subscriber.name].reason}" if subscriber.name in failures else "",
        )
        for subscriber in config.subscribers
    )
    total = sum(counts.get(state, 0) for state, _ in _STATES)
    return StatusView(
        now=_time(now),
        config=f"rejected: {app.config_error}" if app.config_error else f"{len(config.subscribers)} subscribers",
        feeds=tuple(feeds),
        counts=tuple((shown, counts.get(state, 0)) for state, shown in _STATES),
        deliveries=tuple(rows),
        more=total - len(rows),
        subscribers=subscribers,
        show_addresses=show,
    )


_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">
<title>arxiv-notifier status</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#1d1d1f}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.8em 0 .5em}
p.lead{color:#555;margin:0}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .6em;vertical-align:top}
th{border-bottom:2px solid #ccc;font-weight:600}td{border-bottom:1px solid #e5e5e5}
td.reason{overflow-wrap:anywhere}
.ok{color:#0a6b2d}.late,.retrying,.pending,.sending{color:#8a5a00}.stale,.failed,.never{color:#b3261e}
.counts span{display:inline-block;margin-right:1.2em}.none{color:#666;font-style:italic}
</style></head>
<body>
<h1>arxiv-notifier status</h1>
<p class="lead">As of {{ view.now }} · config: {{ view.config }}</p>

<h2>Feeds</h2>
{% if view.feeds %}
<table><thead><tr><th>Category</th><th>State</th><th>Last announcement</th><th>Next expected</th><th>Last error</th>
</tr></thead><tbody>
{% for feed in view.feeds %}
<tr><td>{{ feed.category }}</td><td class="{{ feed.state.split()[0] }}">{{ feed.state }}</td>
<td>{{ feed.last_announcement }}</td><td>{{ feed.next_expected }}</td><td class="reason">{{ feed.error }}</td></tr>
{% endfor %}
</tbody></table>
{% else %}<p class="none">No subscriber follows a category.</p>{% endif %}

<h2>Deliveries</h2>
<p class="counts">{% for state, count in view.counts %}<span class="{{ state if count else '' }}">{{ state }}:
<strong>{{ count }}</strong></span>{% endfor %}</p>
{% if view.deliveries %}
<table><thead><tr><th>State</th><th>Subscriber</th><th>Channel</th>{% if view.show_addresses %}<th>Recipient</th>
{% endif %}<th>Attempts</th><th>Next attempt</th><th>Reason</th></tr></thead><tbody>
{% for row in view.deliveries %}
<tr><td class="{{ row.state }}">{{ row.state }}</td><td>{{ row.subscriber }}</td><td>{{ row.channel }}</td>
{% if view.show_addresses %}<td>{{ row.recipient }}</td>{% endif %}<td>{{ row.attempts }}</td>
<td>{{ row.next_attempt }}</td><td class="reason">{{ row.reason }}</td></tr>
{% endfor %}
</tbody></table>
{% if view.more %}<p class="none">and {{ view.more }} more not listed (notifier status lists them all).</p>{% endif %}
{% else %}<p class="none">Nothing is waiting to be sent, and nothing has failed.</p>{% endif %}

<h2>Subscribers</h2>
<table><thead><tr><th>Subscriber</th><th>Schedule</th><th>Last digest</th><th>Next due</th><th>Problem</th></tr>
</thead><tbody>
{% for subscriber in view.subscribers %}
<tr><td>{{ subscriber.name }}</td><td>{{ subscriber.schedule }}</td>
<td class="{{ 'never' if subscriber.last_digest == 'never' else '' }}">{{ subscriber.last_digest }}</td>
<td>{{ subscriber.next_due }}</td><td class="reason failed">{{ subscriber.problem }}</td></tr>
{% endfor %}
</tbody></table>
</body></html>
"""
_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
_PAGE = _ENVIRONMENT.from_string(_TEMPLATE)


def render(view: StatusView) -> str:
    return _PAGE.render(view=view)
