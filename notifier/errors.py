"""The one error base of arxiv-notifier.

Every error the package raises on purpose derives from :class:`NotifierError`; where it helps callers, an
error also derives from the built-in it resembles, so ``except ConnectionError`` keeps working::

    NotifierError
    ├── ConfigError (ValueError)            a setting or subscribers.yaml is wrong; carries file:line:column
    │   └── QuerySyntaxError                a rule's query does not parse; carries the column in the query
    ├── FeedError (ConnectionError)         arXiv could not be fetched or its answer could not be read
    │   ├── FeedHTTPError                   an HTTP status we do not accept (carries status and Retry-After)
    │   ├── TimeBudgetError (TimeoutError)  the time allowed for a round of requests (a poll) ran out
    │   └── FeedParseError (ValueError)     the body is not a feed we can trust (malformed, HTML, too large, bomb)
    ├── DeliveryError                       a channel refused or failed a message
    │   ├── TemporaryDeliveryError          worth retrying later (4xx SMTP, 429/5xx Slack, dropped connection)
    │   └── PermanentDeliveryError          retrying cannot help (5xx SMTP for a recipient, channel_not_found)
    │       └── AddressError (ValueError)   an address that no message can carry (unparsable, control characters)
    ├── PlanError                           a digest could not be planned (papers unreadable, a template broken)
    ├── StoreError                          the database could not be read or written
    ├── SummaryError                        an LLM did not summarise a paper (``retryable``: asking again may help)
    │   ├── LlmRateLimitError               429 Too Many Requests (carries Retry-After seconds)
    │   ├── LlmServerError                  a 5xx (or 408/409): the server failed this time
    │   ├── LlmConnectionError (ConnectionError)  the server could not be reached
    │   │   └── LlmTimeoutError (TimeoutError)    no answer within NOTIFIER_LLM_TIMEOUT
    │   ├── InvalidSummaryError (ValueError)      the answer is not a JSON object of the expected fields
    │   └── LlmRefusedError                 retrying cannot help (401, 403, 404, a 400 for this request)
    ├── EmbeddingError                      papers could not be embedded (``llm_error``: the server's failure, typed)
    │   └── InvalidEmbeddingError (ValueError)  the answer is not one vector of numbers per text, all one length
    └── DataDirBusyError                    another notifier holds the data directory's lock (exit code 5)
"""

from __future__ import annotations

import traceback
from pathlib import Path

MAX_REASON = 500  # characters of a failure's reason kept (the store keeps a failed digest's reason)


class NotifierError(Exception):
    """Base of every error raised on purpose by arxiv-notifier."""


class ConfigError(NotifierError, ValueError):
    """A setting or the subscribers file is invalid.

    ``str(error)`` is ``file:line:column: message`` when the place is known, so editors and CI can jump to it.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, column: int | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        super().__init__(self.location_prefix() + message)

    def location_prefix(self) -> str:
        parts = [str(p) for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(parts) + ": " if parts else ""


class QuerySyntaxError(ConfigError):
    """A rule query does not parse. ``column`` is 1-based within the query text."""

    def __init__(self, message: str, *, query: str, column: int, key: str | None = None):
        self.query = query
        self.query_column = column
        self.key = key  # the rule's key, when raised while compiling a RuleSet
        super().__init__(message, column=column)


class FeedError(NotifierError, ConnectionError):
    """arXiv could not be fetched, or what it sent could not be used."""


class FeedHTTPError(FeedError):
    """arXiv answered with a status we do not accept."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None):
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class TimeBudgetError(FeedError, TimeoutError):
    """The time allowed for a round of requests to arXiv (a poll) ran out before this request could be answered.

    ``reached`` is False when the request was never sent: the budget was spent before its turn came.
    """

    def __init__(self, message: str, *, reached: bool):
        self.reached = reached
        super().__init__(message)


class FeedParseError(FeedError, ValueError):
    """The body is not a feed we can trust: malformed XML, an HTML error page, too large, or an entity bomb."""


class DeliveryError(NotifierError):
    """A channel failed to deliver a message."""

    def __init__(self, message: str, *, hint: str | None = None):
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class TemporaryDeliveryError(DeliveryError):
    """Delivery failed for a reason that may pass; the message is retried later.

    ``retry_after`` (seconds) is set when the server said how long to wait.
    """

    def __init__(self, message: str, *, hint: str | None = None, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message, hint=hint)


class PermanentDeliveryError(DeliveryError):
    """Delivery failed for a reason retrying cannot fix; the delivery is marked failed."""


class AddressError(PermanentDeliveryError, ValueError):
    """A recipient or sender address cannot be written into a message: it does not parse, or it holds characters
    a mail header cannot carry. Permanent (only a config change helps), and a ``ValueError`` like any bad value."""


class PlanError(NotifierError):
    """A subscriber's digest could not be planned: its papers could not be read or matched, or it could not be
    rendered (a template error)."""


class StoreError(NotifierError):
    """The database could not be read or written."""


class DataDirBusyError(NotifierError):
    """Another notifier process holds the data directory's lock (it is sending from the same SQLite database)."""

    def __init__(self, message: str, *, pid: int | None):
        self.pid = pid
        super().__init__(message)


class SummaryError(NotifierError):
    """An LLM did not summarise a paper. ``retryable`` tells whether asking again may give a summary.

    ``prompt_tokens`` and ``completion_tokens`` are what the failed request cost (an invalid answer is paid for).
    """

    retryable = True

    def __init__(self, message: str, *, prompt_tokens: int = 0, completion_tokens: int = 0):
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        super().__init__(message)


class EmbeddingError(NotifierError):
    """An embedding model did not embed a batch of papers. ``llm_error`` is the server's failure as the summaries
    see it (:class:`LlmTimeoutError`, :class:`LlmServerError`, :class:`LlmRefusedError`, ...), when it was one."""

    def __init__(self, message: str, *, llm_error: SummaryError | None = None):
        self.llm_error = llm_error
        super().__init__(message)


class InvalidEmbeddingError(EmbeddingError, ValueError):
    """The embeddings server answered, but not with one vector of finite numbers per text, all of one length."""


class LlmRateLimitError(SummaryError):
    """The LLM server answered 429 Too Many Requests; ``retry_after`` (seconds) is set when it said how long to
    wait."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class LlmServerError(SummaryError):
    """The LLM server failed this request (5xx, 408, 409); it may work a moment later."""

    def __init__(self, message: str, *, status: int):
        self.status = status
        super().__init__(message)


class LlmConnectionError(SummaryError, ConnectionError):
    """The LLM server could not be reached, or dropped the connection."""


class LlmTimeoutError(LlmConnectionError, TimeoutError):
    """The LLM server did not answer within the request timeout (NOTIFIER_LLM_TIMEOUT)."""


class InvalidSummaryError(SummaryError, ValueError):
    """The LLM answered, but not with a JSON object of the expected fields (or with no summary)."""


class LlmRefusedError(SummaryError):
    """The LLM server refused the request for a reason that asking again cannot fix: a wrong key (401), no access
    (403), an unknown model or URL (404), or a request it will not take (another 4xx). ``status`` is the HTTP
    status."""

    retryable = False

    def __init__(self, message: str, *, status: int):
        self.status = status
        super().__init__(message)

    @property
    def affects_all(self) -> bool:
        """Whether every request would be refused alike (a key, access or model problem), not just this one."""
        return self.status in (401, 403, 404)


def describe_failure(exc: BaseException) -> str:
    """One line saying what went wrong, and where in a template when a template raised it."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f for f in frames if f.filename and not f.filename.endswith(".py") and not f.filename.startswith("<")]
    if where:
        text += f" (at {Path(where[-1].filename).name}:{where[-1].lineno})"
    return " ".join(text.split())[:MAX_REASON]
