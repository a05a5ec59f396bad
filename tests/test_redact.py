"""The one redactor (watchdog.core.redact) for HTTP URLs, DSNs and libpq strings: every case the four
earlier redactors covered, plus the ones where two of them disagreed (an ``@`` in a password, an ``@`` in a
query string)."""

from __future__ import annotations

import pytest

from watchdog.core.redact import redact_url, scrub, secret_spellings

PASSWORD = "s3cr3t@:/x"
PASSWORD_ENCODED = "s3cr3t%40%3A%2Fx"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:hunter2@example.com/api/health", "https://***@example.com/api/health"),
        ("https://ghp_tokenAsUser@example.com/x", "https://***@example.com/x"),
        (
            "https://example.com/x?lang=en&token=abc&api_key=k1",
            "https://example.com/x?lang=en&token=***&api_key=***",
        ),
        (
            "https://example.com/x?Password=p&secret=s&sig=z&q=1",
            "https://example.com/x?Password=***&secret=***&sig=***&q=1",
        ),
        (
            "http://127.0.0.1:8080/api/pbl/scenarios?lang=zhTW&source=db",
            "http://127.0.0.1:8080/api/pbl/scenarios?lang=zhTW&source=db",
        ),
        # "@" in the password, unencoded: the last "@" of the authority ends the userinfo.
        ("http://u:p@ss@prom.internal:9090/", "http://***@prom.internal:9090/"),
        # "@" only in the query string is not userinfo: the host stays visible.
        ("http://prom.internal:9090/api?email=a@b.example", "http://prom.internal:9090/api?email=a@b.example"),
        ("http://prom.internal:9090?email=a@b.example", "http://prom.internal:9090?email=a@b.example"),
        # both at once
        (
            "https://u:p@ss@example.com/x?email=a@b&token=t",
            "https://***@example.com/x?email=a@b&token=***",
        ),
        ("https://example.com/x?token=t#frag", "https://example.com/x?token=***#frag"),
        # no scheme at all: still userinfo, still masked; a plain path is left alone
        ("user:secret@127.0.0.1:9090", "***@127.0.0.1:9090"),
        ("prom.internal:9090/api", "prom.internal:9090/api"),
        ("/srv/state/a@b.db", "/srv/state/a@b.db"),
    ],
)
def test_redact_http_urls(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (f"postgresql://app:{PASSWORD_ENCODED}@db:5432/x", "postgresql://app:***@db:5432/x"),
        (f"postgresql://app:{PASSWORD}@db:5432/x", "postgresql://app:***@db:5432/x"),  # unencoded
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        ("postgresql://db/x?password=s3cr3t&sslmode=require", "postgresql://db/x?password=***&sslmode=require"),
        (f"host=db user=app password='{PASSWORD}' dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=db password=s3cr3t", "host=db password=***"),
        ("/var/lib/watchdog/state.db", "/var/lib/watchdog/state.db"),
        # Our DSN parser takes the LAST "@" as the end of the userinfo (passwords may hold "?" and "@"),
        # so the redactor reads it the same way: nothing of such a password shows.
        ("postgresql://app:pa?ss@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app:p@ss?w@db/x", "postgresql://app:***@db/x"),
    ],
)
def test_redact_dsns(dsn: str, expected: str) -> None:
    assert redact_url(dsn) == expected


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:{PASSWORD}@db/x",
        f"postgresql://app:{PASSWORD_ENCODED}@db/x",
        f"postgresql://app@db/x?password={PASSWORD_ENCODED}",
        f"host=db password='{PASSWORD}'",
        "http://u:hunter2@prom:9090/?token=t0ken",
    ],
)
def test_no_spelling_of_the_secret_survives(dsn: str) -> None:
    shown = redact_url(dsn)
    secrets = secret_spellings(dsn)
    assert secrets, "the password was found"
    for secret in secrets:
        assert secret not in shown
    error = f"connection to {dsn} failed: FATAL password {next(iter(secrets))} rejected"
    scrubbed = scrub(error, secrets)
    assert all(s not in scrubbed for s in secrets)
    assert "***" in scrubbed
