"""One contract for every StateStore: memory (the fake), SQLite and PostgreSQL.

The postgres parameters need the server at 127.0.0.1:5432 (trust auth); they fail, never skip, when it is
unreachable, because CI guarantees it. Each postgres test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from watchdog.core.results import Observation, Outcome, ProbeResult, series_key
from watchdog.store import (
    LATENCY_BUCKETS_S,
    MemoryStore,
    OutboxEntry,
    PostgresStore,
    SqliteStore,
    StateStore,
    StoreUnavailable,
    open_store,
)

PG_DSN = os.environ.get("WATCHDOG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SESSION_PREFIX = f"wdtest_{uuid.uuid4().hex[:8]}"
_schema_seq = itertools.count()

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a minute boundary
M0 = int(T0 // 60)
DAY = 86_400.0
PASSWORD = "s3cr3t@:/x"
PASSWORD_ENCODED = "s3cr3t%40%3A%2Fx"

MakeStore = Callable[..., Awaitable[StateStore]]


def result(
    probe: str = "api",
    latency: float = 0.1,
    at: float = T0,
    outcome: Outcome = Outcome.OK,
    labels: dict[str, str] | None = None,
    observations: tuple[Observation, ...] = (),
    reason: str = "",
) -> ProbeResult:
    return ProbeResult(
        probe=probe,
        kind="http",
        target=f"https://example.test/{probe}",
        outcome=outcome,
        latency_s=latency,
        started_at=at,
        reason=reason,
        labels=labels or {},
        observations=observations,
    )


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[list[str]]:
    """Schemas created this session; whatever a test left behind is dropped at the end."""
    created: list[str] = []
    yield created
    if created:
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
            for schema in created:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: list[str]
) -> AsyncIterator[MakeStore]:
    """Opens stores over one shared backend: each call is another "replica" (a sibling MemoryStore, another
    connection to the same SQLite file, another connection to the same PostgreSQL schema)."""
    backend: str = request.param
    stores: list[StateStore] = []
    schema = f"{SESSION_PREFIX}_{next(_schema_seq)}"
    if backend == "postgres":
        pg_schemas.append(schema)

    async def make(**kwargs: Any) -> StateStore:
        store: StateStore
        if backend == "memory":
            first = stores[0] if stores else None
            store = first.sibling() if isinstance(first, MemoryStore) else MemoryStore(**kwargs)
        elif backend == "sqlite":
            store = SqliteStore(tmp_path / "state.db", **kwargs)
        else:
            store = PostgresStore(PG_DSN, schema=schema, **kwargs)
        await store.open()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
    if backend == "postgres":
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
async def store(make_store: MakeStore) -> StateStore:
    return await make_store()


# -- results: minutes -------------------------------------------------------------------------------


async def test_record_and_minutes(store: StateStore) -> None:
    canary = {"cohort": "canary", "lang": "en"}
    baseline = {"cohort": "baseline", "lang": "en"}
    await store.record(
        [
            result(latency=0.2, at=T0 + 1, labels=canary),  # exactly on the 0.2 s edge
            result(latency=0.5, at=T0 + 2, labels=canary, outcome=Outcome.FAILED, reason="HTTP 500"),
            result(latency=0.05, at=T0 + 3, labels=canary, outcome=Outcome.DEGRADED),
            result(latency=0.2000001, at=T0 + 4, labels=canary),  # just over the edge
            result(latency=45.0, at=T0 + 5, labels=canary),  # overflow bucket
            result(latency=0.01, at=T0 + 59.999, labels=baseline),
            result(latency=0.01, at=T0 + 60, labels=baseline),  # next minute
            result(probe="db", latency=0.003, at=T0 + 10),
        ]
    )
    await store.record([])  # an empty batch is a no-op

    rows = await store.minutes(M0, M0 + 1)
    assert [(r.minute, r.series) for r in rows] == sorted((r.minute, r.series) for r in rows)
    assert {r.series for r in rows} == {
        series_key("api", canary), series_key("api", baseline), series_key("db", {})
    }
    by_series = {r.series: r for r in rows}
    c = by_series[series_key("api", canary)]
    assert (c.probe, dict(c.labels), c.minute) == ("api", canary, M0)
    assert (c.count, c.failures, c.degraded) == (5, 1, 1)
    assert c.latency_sum_s == pytest.approx(0.2 + 0.5 + 0.05 + 0.2000001 + 45.0)
    # Sparse, ascending: only non-empty buckets; 0.2 is exactly on an edge, 0.2000001 is in the next one.
    assert list(c.buckets.items()) == [(0.05, 1), (0.2, 1), (0.25, 1), (0.5, 1), (math.inf, 1)]
    assert c.count_at_or_under(0.2) == 2  # exact at an edge: 0.05 and 0.2
    assert c.count_at_or_under(0.05) == 1
    assert sum(c.buckets.values()) == c.count
    assert set(c.buckets) <= {*LATENCY_BUCKETS_S, math.inf}

    # Half-open ranges: [M0, M0+1) holds one baseline result, [M0+1, M0+2) the other.
    b0 = by_series[series_key("api", baseline)]
    assert b0.count == 1
    later = await store.minutes(M0 + 1, M0 + 2)
    assert [(r.minute, r.series, r.count) for r in later] == [(M0 + 1, series_key("api", baseline), 1)]
    both = await store.minutes(M0, M0 + 2, probe="api", labels={"cohort": "baseline"})
    assert [(r.minute, r.count) for r in both] == [(M0, 1), (M0 + 1, 1)]
    assert await store.minutes(M0 + 2, M0 + 10) == []
    assert await store.minutes(M0, M0) == []

    # Label filter is a subset match, combined with the probe filter.
    en = await store.minutes(M0, M0 + 2, labels={"lang": "en"})
    assert {r.series for r in en} == {series_key("api", canary), series_key("api", baseline)}
    assert [r.series for r in await store.minutes(M0, M0 + 2, labels={"cohort": "canary", "lang": "en"})] == [
        series_key("api", canary)
    ]
    assert await store.minutes(M0, M0 + 2, labels={"cohort": "canary", "lang": "de"}) == []
    assert await store.minutes(M0, M0 + 2, probe="nope") == []
    db = await store.minutes(M0, M0 + 2, probe="db")
    assert [(r.series, r.count, r.buckets[0.005]) for r in db] == [(series_key("db", {}), 1, 1)]


async def test_minutes_accumulate_across_batches(store: StateStore) -> None:
    for i in range(3):
        await store.record([result(latency=0.1, at=T0 + i), result(latency=0.3, at=T0 + i + 0.5)])
    [row] = await store.minutes(M0, M0 + 1)
    assert row.count == 6
    assert row.buckets[0.1] == 3
    assert row.buckets[0.3] == 3
    assert row.latency_sum_s == pytest.approx(1.2)


async def test_custom_bucket_edges(make_store: MakeStore) -> None:
    store = await make_store(latency_buckets=(0.123, 1.0))
    await store.record([result(latency=0.123), result(latency=0.124), result(latency=2.0)])
    [row] = await store.minutes(M0, M0 + 1)
    assert dict(row.buckets) == {0.123: 1, 1.0: 1, math.inf: 1}
    assert row.count_at_or_under(0.123) == 1


async def test_two_writers_merge_the_same_minute(make_store: MakeStore) -> None:
    a = await make_store()
    b = await make_store()
    g = Observation("connections", 10.0)
    await a.record([result(latency=0.1, at=T0 + 30, observations=(g,))])
    await b.record(
        [
            result(
                latency=0.3,
                at=T0 + 10,
                outcome=Outcome.FAILED,
                observations=(Observation("connections", 50.0),),
            ),
            result(latency=0.1, at=T0 + 20, observations=(Observation("connections", 1.0),)),
        ]
    )
    await asyncio.gather(*(w.record([result(latency=0.2, at=T0 + 40 + i)]) for i, w in enumerate([a, b] * 5)))
    for reader in (a, b):
        [row] = await reader.minutes(M0, M0 + 1)
        assert (row.count, row.failures) == (13, 1)
        assert (row.buckets[0.1], row.buckets[0.2], row.buckets[0.3]) == (2, 10, 1)
        assert row.latency_sum_s == pytest.approx(0.1 + 0.3 + 0.1 + 10 * 0.2)
        [obs] = await reader.observation_minutes(M0, M0 + 1)
        # b wrote after a, but a's value is the newest one (T0+30), so it stays "last".
        assert (obs.count, obs.min, obs.max, obs.last, obs.last_at) == (3, 1.0, 50.0, 10.0, T0 + 30)
        assert obs.sum == pytest.approx(61.0)
        q = await reader.latency_quantiles(M0, M0 + 1, [0.0, 1.0])
        assert q[0.0] == pytest.approx(0.1, rel=0.01)
        assert q[1.0] == pytest.approx(0.3, rel=0.01)


# -- results: quantiles -----------------------------------------------------------------------------


async def test_latency_quantiles(store: StateStore) -> None:
    assert await store.latency_quantiles(M0, M0 + 60, [0.5, 0.99]) == {0.5: None, 0.99: None}
    # 1..1000 ms, spread over 10 minutes and two cohorts.
    await store.record(
        [
            result(
                latency=ms / 1000,
                at=T0 + (ms % 10) * 60 + 1,
                labels={"cohort": "canary" if ms % 2 else "baseline"},
            )
            for ms in range(1, 1001)
        ]
    )
    q = await store.latency_quantiles(M0, M0 + 10, [0.0, 0.5, 0.95, 0.99, 1.0])
    for quantile, expected in [(0.0, 0.001), (0.5, 0.5), (0.95, 0.95), (0.99, 0.99), (1.0, 1.0)]:
        value = q[quantile]
        assert value is not None
        assert value == pytest.approx(expected, rel=0.011), quantile
    # Restricting the range or the series changes the answer; an empty selection gives None.
    odd = await store.latency_quantiles(M0, M0 + 10, [1.0], labels={"cohort": "canary"})
    assert odd[1.0] == pytest.approx(0.999, rel=0.011)
    first_minute = await store.latency_quantiles(M0, M0 + 1, [1.0])  # ms ending in 0: 10..1000
    assert first_minute[1.0] == pytest.approx(1.0, rel=0.011)
    assert await store.latency_quantiles(M0 + 10, M0 + 20, [0.5]) == {0.5: None}
    assert await store.latency_quantiles(M0, M0 + 10, [0.5], probe="nope") == {0.5: None}


async def test_quantiles_of_zero_latency(store: StateStore) -> None:
    await store.record([result(latency=0.0, at=T0 + i) for i in range(9)] + [result(latency=2.0, at=T0 + 9)])
    q = await store.latency_quantiles(M0, M0 + 1, [0.5, 1.0])
    assert q[0.5] == 0.0
    assert q[1.0] == pytest.approx(2.0, rel=0.01)
    [row] = await store.minutes(M0, M0 + 1)
    assert row.buckets[0.005] == 9


async def test_invalid_batch_is_rejected_whole(store: StateStore) -> None:
    with pytest.raises(ValueError):
        await store.record([result(latency=0.1), result(latency=math.nan)])
    with pytest.raises(ValueError):
        await store.latency_quantiles(M0, M0 + 1, [1.5])
    assert await store.minutes(M0, M0 + 1) == []
    assert await store.recent() == []


# -- results: observations, latest, recent ----------------------------------------------------------


async def test_observation_minutes(store: StateStore) -> None:
    def obs(at: float, conns: float, lag: float) -> ProbeResult:
        return result(
            probe="pg",
            at=at,
            observations=(
                Observation("connections", conns, {"db": "main"}),
                Observation("replication_lag_s", lag, {"db": "main", "replica": "r1"}),
            ),
        )

    # Recorded out of order: "last" follows the timestamp, not the write order.
    await store.record([obs(T0 + 50, 7.0, 0.5), obs(T0 + 10, 3.0, 1.5)])
    await store.record([obs(T0 + 30, 12.0, 0.1), obs(T0 + 70, 1.0, 0.0)])

    rows = await store.observation_minutes(M0, M0 + 2)
    assert [(r.minute, r.name) for r in rows] == [
        (M0, "connections"), (M0, "replication_lag_s"), (M0 + 1, "connections"), (M0 + 1, "replication_lag_s")
    ]
    conns = rows[0]
    assert conns.series == series_key("pg", {"__name__": "connections", "db": "main"})
    assert (conns.probe, dict(conns.labels)) == ("pg", {"db": "main"})
    assert (conns.count, conns.min, conns.max, conns.last, conns.last_at) == (3, 3.0, 12.0, 7.0, T0 + 50)
    assert conns.sum == pytest.approx(22.0)

    lag = await store.observation_minutes(M0, M0 + 1, name="replication_lag_s")
    assert [(r.last, r.max) for r in lag] == [(0.5, 1.5)]
    assert len(await store.observation_minutes(M0, M0 + 2, labels={"replica": "r1"})) == 2
    assert len(await store.observation_minutes(M0, M0 + 2, probe="pg", labels={"db": "main"})) == 4
    assert await store.observation_minutes(M0, M0 + 2, probe="api") == []
    assert await store.observation_minutes(M0, M0 + 2, labels={"db": "other"}) == []
    assert await store.observation_minutes(M0 + 1, M0 + 1) == []


async def test_latest_and_recent_round_trip(store: StateStore) -> None:
    rich = result(
        probe="journey",
        latency=1.234567891,
        at=T0 + 5.125,
        outcome=Outcome.DEGRADED,
        labels={"cohort": "canary", "step": "login", "lang": "fr"},
        observations=(Observation("bytes", 1024.0), Observation("ttfb_s", 0.25, {"phase": "é"})),
        reason="slow: 1.23 s > 1 s — ünïcode",
    )
    older = result(probe="journey", at=T0 + 1, labels={"cohort": "canary", "step": "login", "lang": "fr"})
    other = result(probe="db", at=T0 + 3, outcome=Outcome.FAILED, reason="connection refused")
    await store.record([rich, other])
    await store.record([older])  # older than what latest holds: does not replace it

    latest = await store.latest()
    assert sorted(latest, key=lambda r: r.probe) == [other, rich]
    assert await store.latest("journey") == [rich]
    assert await store.latest("nope") == []

    assert await store.recent() == [rich, other, older]
    assert await store.recent(limit=2) == [rich, other]
    assert await store.recent("journey") == [rich, older]
    assert await store.recent(limit=0) == []
    got = (await store.recent("journey", limit=1))[0]
    assert got.outcome is Outcome.DEGRADED
    assert got.observations[1].labels == {"phase": "é"}


async def test_prune(make_store: MakeStore) -> None:
    store = await make_store()
    old = [
        result(latency=0.1, at=T0, observations=(Observation("q", 1.0),)),
        result(latency=0.1, at=T0 + 1),
    ]
    await store.record(old)  # raw 2 + aggregate 1 + bucket 1 + sketch bin 1 + observation minute 1
    await store.record([result(at=T0 + 3 * DAY)])
    assert await store.prune(T0 + 3 * DAY) == 2  # raw results older than 2 days
    assert len(await store.minutes(M0, M0 + 1)) == 1  # minutes are kept 35 days
    assert await store.prune(T0 + 36 * DAY) == 5  # the old minute's 4 rows + the newer raw result
    assert await store.minutes(M0, M0 + 1) == []
    assert await store.observation_minutes(M0, M0 + 1) == []
    assert await store.latency_quantiles(M0, M0 + 1, [0.5]) == {0.5: None}
    assert len(await store.minutes(M0, M0 + 5 * 1440)) == 1  # the recent one survives
    assert await store.prune(T0 + 36 * DAY) == 0
    assert len(await store.latest()) == 1  # latest is one row per series, never pruned


# -- outbox -----------------------------------------------------------------------------------------


async def test_outbox_lifecycle(store: StateStore) -> None:
    payload = {"channel": "#ops", "text": "API down", "nested": {"n": [1, 2.5, None, True]}}
    assert await store.enqueue("notify", payload, "page:api:1", now=T0) is True
    assert await store.enqueue("notify", {"other": 1}, "page:api:1", now=T0 + 1) is False  # dedup
    assert await store.enqueue("notify", {"later": True}, "page:api:2", now=T0, delay_s=30) is True
    assert await store.enqueue("flag", {"flag": "content-data-source"}, "flag:1", now=T0) is True

    [item] = await store.claim("notify", "w1", limit=10, lease_s=60, now=T0)
    assert (item.topic, dict(item.payload), item.dedup_key) == ("notify", payload, "page:api:1")
    assert item.attempts == 1
    assert (item.created_at, item.available_at) == (T0, T0)
    assert await store.claim("notify", "w2", limit=10, lease_s=60, now=T0 + 10) == []  # claimed; delayed

    # The delayed one becomes available; the first is still under w1's claim.
    [delayed] = await store.claim("notify", "w2", limit=10, lease_s=60, now=T0 + 30)
    assert delayed.dedup_key == "page:api:2"
    assert delayed.available_at == T0 + 30

    # w1's claim expires: w3 takes it over, and w1 can no longer complete it.
    [again] = await store.claim("notify", "w3", limit=10, lease_s=60, now=T0 + 60)
    assert (again.id, again.attempts) == (item.id, 2)
    await store.complete(item.id, "w1", now=T0 + 61)  # not w1's any more: ignored
    await store.complete(delayed.id, "w2", now=T0 + 61)
    # w3's claim ran out at T0+120 (a claim is valid for [now, now + lease_s)).
    assert [i.id for i in await store.claim("notify", "w4", limit=10, lease_s=60, now=T0 + 120)] == [item.id]
    await store.complete(item.id, "w4", now=T0 + 121)
    assert await store.claim("notify", "w5", limit=10, lease_s=60, now=T0 + 1000) == []  # all done
    # Done items still dedup.
    assert await store.enqueue("notify", payload, "page:api:1", now=T0 + 2000) is False

    # retry_later: released, not claimable before retry_at, then claimable with attempts + 1.
    [flag] = await store.claim("flag", "w1", limit=1, lease_s=60, now=T0 + 5)
    await store.retry_later(flag.id, "w2", "not mine", retry_at=T0 + 7)  # wrong worker: ignored
    await store.retry_later(flag.id, "w1", "HTTP 503", retry_at=T0 + 300)
    assert await store.claim("flag", "w1", limit=1, lease_s=60, now=T0 + 299) == []
    [retried] = await store.claim("flag", "w1", limit=1, lease_s=60, now=T0 + 300)
    assert (retried.id, retried.attempts, retried.available_at) == (flag.id, 2, T0 + 300)
    await store.complete(retried.id, "w1", now=T0 + 301)
    assert await store.claim("flag", "w1", limit=1, lease_s=60, now=T0 + 10_000) == []


async def test_release_claims_gives_back_a_dead_workers_items(store: StateStore) -> None:
    for i in range(3):
        await store.enqueue("notify", {"i": i}, f"r{i}", now=T0)
    mine = await store.claim("notify", "replica-a", limit=2, lease_s=60, now=T0)
    [theirs] = await store.claim("notify", "replica-b", limit=5, lease_s=60, now=T0)
    await store.complete(mine[0].id, "replica-a", now=T0 + 1)
    assert await store.release_claims("replica-a") == 1  # the done one stays done
    [back] = await store.claim("notify", "replica-a", limit=5, lease_s=60, now=T0 + 2)
    assert back.id == mine[1].id, "released at once, not after the 60 s lease"
    assert theirs.id not in {back.id}, "another worker's claim is left alone"
    assert await store.release_claims("nobody") == 0


async def test_transition_enqueues_its_outbox_items_atomically(store: StateStore) -> None:
    page = OutboxEntry("notify", {"key": "alert:x", "level": "L1"}, "alert:x:v1:L1:fired")
    won = await store.transition_incident("alert:x", None, "firing", {"a": 1}, T0, [page])
    assert won is not None
    lost = await store.transition_incident(
        "alert:x", None, "firing", {"a": 2}, T0, [OutboxEntry("notify", {}, "lost-page")]
    )
    assert lost is None
    items = await store.claim("notify", "w", limit=10, lease_s=60, now=T0)
    assert [i.dedup_key for i in items] == ["alert:x:v1:L1:fired"], "the losing writer enqueued nothing"
    delayed = OutboxEntry("notify", {"k": 1}, "alert:x:v2:timer", delay_s=30)
    assert await store.transition_incident("alert:x", 1, "acknowledged", {}, T0, [delayed, page]) is not None
    assert await store.claim("notify", "w", limit=10, lease_s=60, now=T0 + 29) == []
    [later] = await store.claim("notify", "w", limit=10, lease_s=60, now=T0 + 30)
    assert later.dedup_key == "alert:x:v2:timer", "a duplicate dedup key in the batch is skipped"


async def test_records_put_get_list_delete(store: StateStore) -> None:
    assert await store.get_record("silence", "a") is None
    await store.put_record("silence", "b", {"n": 1, "nested": {"x": [1, 2]}}, T0)
    await store.put_record("silence", "a", {"n": 2}, T0)
    await store.put_record("thread", "a", {"ts": "1.0"}, T0)
    await store.put_record("silence", "b", {"n": 3}, T0 + 1)  # last write wins
    assert await store.get_record("silence", "b") == {"n": 3}
    assert await store.list_records("silence") == [("a", {"n": 2}), ("b", {"n": 3})]
    assert await store.delete_record("silence", "a") is True
    assert await store.delete_record("silence", "a") is False
    assert await store.list_records("silence") == [("b", {"n": 3})]
    assert await store.get_record("thread", "a") == {"ts": "1.0"}


async def test_outbox_claim_order_and_limit(store: StateStore) -> None:
    for i in range(5):
        await store.enqueue("notify", {"i": i}, f"k{i}", now=T0 + 10 - i)  # later ids are older
    first = await store.claim("notify", "w", limit=2, lease_s=60, now=T0 + 20)
    assert [i.payload["i"] for i in first] == [4, 3]  # oldest available first
    rest = await store.claim("notify", "w", limit=10, lease_s=60, now=T0 + 20)
    assert [i.payload["i"] for i in rest] == [2, 1, 0]
    assert await store.claim("notify", "w", limit=0, lease_s=60, now=T0 + 20) == []


async def test_concurrent_claims_never_share_an_item(make_store: MakeStore) -> None:
    a = await make_store()
    b = await make_store()
    n = 60
    for i in range(n):
        await a.enqueue("notify", {"i": i}, f"item-{i}", now=T0)
    claims = await asyncio.gather(
        *(s.claim("notify", f"{name}-{k}", limit=4, lease_s=60, now=T0 + 1)
          for k in range(12) for name, s in (("a", a), ("b", b)))
    )
    ids = [item.id for batch in claims for item in batch]
    assert len(ids) == len(set(ids))
    # SKIP LOCKED may let a claim come back short; whatever is left is still claimable exactly once.
    ids += [item.id for item in await b.claim("notify", "b-final", limit=n, lease_s=60, now=T0 + 1)]
    assert sorted(ids) == sorted(set(ids))
    assert len(ids) == n


# -- incidents --------------------------------------------------------------------------------------


async def test_incident_compare_and_set(store: StateStore) -> None:
    key = 'ApiErrorBudgetBurn{service="api"}'
    data = {"severity": "critical", "level": 1, "labels": {"service": "api"}, "fired_at": T0}
    created = await store.transition_incident(key, None, "triggered", data, now=T0)
    assert created is not None
    assert (created.key, created.state, created.version, dict(created.data), created.updated_at) == (
        key, "triggered", 1, data, T0
    )
    assert await store.transition_incident(key, None, "triggered", {}, now=T0 + 1) is None  # exists
    assert await store.get_incident(key) == created

    acked = await store.transition_incident(key, 1, "acknowledged", {**data, "by": "alice"}, now=T0 + 5)
    assert acked is not None
    assert (acked.version, acked.state, acked.data["by"]) == (2, "acknowledged", "alice")
    assert await store.transition_incident(key, 1, "resolved", {}, now=T0 + 6) is None  # stale version
    assert await store.transition_incident("missing", 1, "resolved", {}, now=T0 + 6) is None
    assert await store.get_incident(key) == acked
    assert await store.get_incident("missing") is None

    other = await store.transition_incident("DbDown", None, "triggered", {}, now=T0 + 7)
    assert await store.list_incidents() == [acked, other]
    assert await store.list_incidents(["triggered"]) == [other]
    assert await store.list_incidents(["acknowledged", "resolved"]) == [acked]
    assert await store.list_incidents([]) == []


async def test_incident_race_has_one_winner(make_store: MakeStore) -> None:
    a = await make_store()
    b = await make_store()
    created = await asyncio.gather(
        *(s.transition_incident("k", None, "triggered", {"by": i}, now=T0) for i, s in enumerate([a, b] * 4))
    )
    assert sum(x is not None for x in created) == 1
    moved = await asyncio.gather(
        *(s.transition_incident("k", 1, "resolved", {"by": i}, now=T0 + 1) for i, s in enumerate([a, b] * 4))
    )
    winners = [x for x in moved if x is not None]
    assert len(winners) == 1
    assert await b.get_incident("k") == winners[0]


# -- lease ------------------------------------------------------------------------------------------


async def test_lease(store: StateStore) -> None:
    lease = await store.acquire_lease("leader", "a", ttl_s=15, now=T0)
    assert lease is not None
    assert (lease.name, lease.holder, lease.expires_at) == ("leader", "a", T0 + 15)
    assert await store.acquire_lease("leader", "b", ttl_s=15, now=T0 + 5) is None
    renewed = await store.acquire_lease("leader", "a", ttl_s=15, now=T0 + 10)
    assert renewed is not None
    assert renewed.expires_at == T0 + 25
    assert await store.acquire_lease("leader", "b", ttl_s=15, now=T0 + 24.9) is None
    stolen = await store.acquire_lease("leader", "b", ttl_s=15, now=T0 + 25)  # expired
    assert stolen is not None
    assert stolen.holder == "b"
    assert await store.acquire_lease("leader", "a", ttl_s=15, now=T0 + 26) is None
    assert await store.acquire_lease("other", "a", ttl_s=15, now=T0 + 26) is not None  # leases are per name

    await store.release_lease("leader", "a")  # not the holder: no effect
    assert await store.acquire_lease("leader", "a", ttl_s=15, now=T0 + 27) is None
    await store.release_lease("leader", "b")
    again = await store.acquire_lease("leader", "a", ttl_s=15, now=T0 + 28)
    assert again is not None
    assert again.holder == "a"


async def test_lease_race_has_one_winner(make_store: MakeStore) -> None:
    a = await make_store()
    b = await make_store()
    got = await asyncio.gather(
        *(s.acquire_lease("leader", f"h{i}", ttl_s=15, now=T0) for i, s in enumerate([a, b] * 4))
    )
    assert sum(x is not None for x in got) == 1


# -- availability -----------------------------------------------------------------------------------


async def test_ping_and_closed_store(make_store: MakeStore) -> None:
    store = await make_store()
    await store.ping()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.minutes(M0, M0 + 1)
    await store.open()  # reopens
    await store.ping()


async def test_memory_store_can_be_made_unavailable() -> None:
    store = MemoryStore()
    await store.record([result()])
    store.set_unavailable("database on fire")
    with pytest.raises(StoreUnavailable, match="on fire"):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.record([result()])
    store.set_unavailable(None)
    assert len(await store.recent()) == 1


@pytest.mark.postgres
@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://postgres:{PASSWORD_ENCODED}@127.0.0.1:1/postgres?connect_timeout=2",
        f"postgres://postgres@127.0.0.1:1/postgres?password={PASSWORD_ENCODED}",
        f"host=127.0.0.1 port=1 user=postgres password='{PASSWORD}' dbname=postgres",
        f"host=127.0.0.1 port=1 password={PASSWORD} dbname",  # malformed: libpq quotes the conninfo back
    ],
)
async def test_postgres_unreachable_is_unavailable_without_password(dsn: str) -> None:
    store = PostgresStore(dsn, connect_timeout_s=2)
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    message = str(info.value)
    assert "s3cr3t" not in message
    assert PASSWORD_ENCODED not in message
    assert "s3cr3t" not in repr(store)
    with pytest.raises(StoreUnavailable) as info:  # every call, not only open(), and fast (backoff)
        await store.ping()
    assert "s3cr3t" not in str(info.value)
    await store.close()


@pytest.mark.postgres
async def test_postgres_reconnects_after_losing_its_connection(pg_schemas: list[str]) -> None:
    schema = f"{SESSION_PREFIX}_{next(_schema_seq)}"
    pg_schemas.append(schema)
    store = PostgresStore(PG_DSN, schema=schema)
    await store.open()
    try:
        await store.record([result()])
        assert store._conn is not None
        pid = store._conn.info.backend_pid
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable):
            await store.ping()
        await store.ping()  # the next call connects afresh
        assert len(await store.recent()) == 1
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["missing-dir/state.db", "a-file/state.db"])
async def test_sqlite_unwritable_location(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    path = tmp_path / where
    store = SqliteStore(path)
    with pytest.raises(StoreUnavailable, match=r"state\.db"):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()


# -- factory and DSN redaction ----------------------------------------------------------------------


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    pg = open_store(f"postgresql://u:{PASSWORD_ENCODED}@db.internal:5432/watchdog", schema="wd")
    assert isinstance(pg, PostgresStore)
    assert pg.schema == "wd"
    assert isinstance(open_store("postgres://db/watchdog"), PostgresStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store(":memory:"), MemoryStore)
    sq = open_store(f"sqlite:///{tmp_path}/state.db", raw_retention_s=3600)
    assert isinstance(sq, SqliteStore)
    assert sq.path == f"{tmp_path}/state.db"
    rel = open_store("sqlite:///state.db")
    assert isinstance(rel, SqliteStore)
    assert rel.path == "state.db"
    plain = open_store(str(tmp_path / "x.db"))
    assert isinstance(plain, SqliteStore)
    with pytest.raises(ValueError) as info:
        open_store(f"mysql://u:{PASSWORD_ENCODED}@h/db")
    assert PASSWORD_ENCODED not in str(info.value)
    with pytest.raises(ValueError):
        open_store("sqlite://")
