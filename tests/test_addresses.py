"""Email addresses: the quick check for plain addresses answers exactly as email-validator does."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.addresses import validate_address

ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
ODD_LOCAL = st.text(st.sampled_from(ATEXT + "."), min_size=0, max_size=70)
PLAIN_LOCAL = st.from_regex(r"[A-Za-z0-9+_=?-]{1,12}(\.[a-z0-9]{1,8})?", fullmatch=True)
ODD_LABEL = st.one_of(
    st.text(st.sampled_from("abz09-"), min_size=0, max_size=66),
    st.sampled_from(["xn--bcher-kva", "ab--cd", "LAB", "a" * 63, "a" * 64]),
)
PLAIN_LABEL = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,8})?", fullmatch=True)
TLD = st.one_of(
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
    st.sampled_from(["localhost", "local", "test", "invalid", "onion", "arpa", "x" * 64, "c0m"]),
)
DOMAIN = st.one_of(
    st.lists(ODD_LABEL, min_size=1, max_size=5).map(".".join),
    st.tuples(st.lists(PLAIN_LABEL, min_size=1, max_size=3), TLD).map(lambda parts: ".".join([*parts[0], parts[1]])),
)
LOCAL = st.one_of(ODD_LOCAL, PLAIN_LOCAL)


def reference(address: str) -> str | None:
    """What email-validator makes of ``address`` with the options the notifier uses, None if it refuses it."""
    try:
        result = validate_email(
            address,
            check_deliverability=False,
            allow_domain_literal=True,
            allow_quoted_local=True,
            test_environment=True,
        )
    except EmailNotValidError:
        return None
    return str(result.normalized)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(local=LOCAL, domain=DOMAIN)
@pytest.mark.slow
def test_the_quick_check_agrees_with_email_validator(local, domain):
    address = f"{local}@{domain}"
    expected = reference(address)
    try:
        found: str | None = validate_address(address)
    except ValueError:
        found = None
    if "=?" in address:
        assert found is None
    else:
        assert found == expected, address


@pytest.mark.parametrize(
    ("address", "normal"),
    [
        ("ann.lee@lab.example", "ann.lee@lab.example"),
        ("  Ann@LAB.Example ", "Ann@lab.example"),
        ("ann@xn--bcher-kva.example", "ann@bücher.example"),
        ("ann@lab.test", "ann@lab.test"),
        ("ann@[127.0.0.1]", "ann@[127.0.0.1]"),
    ],
)
def test_addresses_come_back_in_their_normal_form(address, normal):
    assert validate_address(address) == normal


@pytest.mark.parametrize(
    "address",
    ["ann@[lab.example", "ann\0@lab.example", "ann\x85@lab.example", "ann@lab.example\r\nBcc: x@evil.example",
     "=?utf-8?q?ann?=@lab.example", "ann@localhost", "ann@lab.local", "ann@-lab.example"],
)  # fmt: skip
def test_addresses_a_mail_system_would_refuse_are_refused(address):
    with pytest.raises(ValueError, match="is not an email address"):
        validate_address(address)
