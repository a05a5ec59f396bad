"""Families about the server as a whole: replication (role detected each run) and database vitals."""

from __future__ import annotations

from typing import Any

from watchdog.config.postgres import ReplicationThresholds, VitalsThresholds
from watchdog.core.durations import human_duration
from watchdog.core.results import Observation
from watchdog.probes.postgres._report import (
    Cycle,
    FamilyReport,
    Verdict,
    delta,
    fmt_bytes,
    privilege_note,
)

XID_WRAP = 2**31
"""Transaction IDs wrap around at 2^31 of age; PostgreSQL stops accepting writes a little before."""

# ------------------------------------------------------------------------------------------------
# Replication

_STANDBYS = """
SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text), client_addr::text,
       state, sync_state,
       extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8,
       extract(epoch FROM replay_lag)::float8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)::float8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::float8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8,
       extract(epoch FROM now() - reply_time)::float8
FROM pg_stat_replication
ORDER BY 1
"""
_SLOTS = """
SELECT slot_name::text, slot_type, active, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8
FROM pg_replication_slots ORDER BY 1
"""
_REPLICA = """
SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
       pg_is_wal_replay_paused(),
       {pause_state},
       pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       r.status, r.sender_host, r.sender_port, extract(epoch FROM now() - r.last_msg_receipt_time)::float8,
       r.pid IS NOT NULL
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver r ON true
"""


async def check_replication(cycle: Cycle, cfg: ReplicationThresholds) -> FamilyReport:
    if cycle.in_recovery:
        return await _replica(cycle, cfg)
    return await _primary(cycle, cfg)


async def _primary(cycle: Cycle, cfg: ReplicationThresholds) -> FamilyReport:
    v = Verdict()
    rows = await cycle.conn.fetch(_STANDBYS)
    slots = await cycle.conn.fetch(_SLOTS)
    obs = [Observation("pg_replication_is_replica", 0.0)]
    standbys: list[dict[str, Any]] = []
    streaming = 0
    hidden = 0
    for (
        name,
        addr,
        state,
        sync,
        write_lag,
        flush_lag,
        replay_lag,
        sent_b,
        flush_b,
        replay_b,
        reply_age,
    ) in rows:
        labels = {"standby": name}
        if state is None:
            hidden += 1
        is_streaming = state == "streaming"
        streaming += int(is_streaming)
        # The *_lag columns go NULL once a standby has caught up on an idle primary: zero bytes behind is
        # zero seconds behind.
        if replay_lag is None and replay_b == 0:
            replay_lag = 0.0
        if write_lag is None and replay_b == 0:
            write_lag = 0.0
        if flush_lag is None and replay_b == 0:
            flush_lag = 0.0
        obs.append(Observation("pg_replication_streaming", float(is_streaming), labels))
        if replay_lag is not None:
            obs.append(Observation("pg_replication_lag_seconds", replay_lag, labels))
        if write_lag is not None:
            obs.append(Observation("pg_replication_write_lag_seconds", write_lag, labels))
        if flush_lag is not None:
            obs.append(Observation("pg_replication_flush_lag_seconds", flush_lag, labels))
        if replay_b is not None:
            obs.append(Observation("pg_replication_lag_bytes", replay_b, labels))
        standbys.append(
            {
                "standby": name,
                "client_addr": addr,
                "state": state,
                "sync_state": sync,
                "write_lag_s": write_lag,
                "flush_lag_s": flush_lag,
                "replay_lag_s": replay_lag,
                "sent_bytes_behind": sent_b,
                "flush_bytes_behind": flush_b,
                "replay_bytes_behind": replay_b,
                "reply_age_s": reply_age,
            }
        )
        if state is not None and not is_streaming:
            v.degrade(f"standby {name} is {state}, not streaming")
        if replay_lag is not None:
            v.threshold(
                replay_lag,
                cfg.lag_warn,
                cfg.lag_fail,
                f"standby {name} replay lag {human_duration(replay_lag)}",
            )
        if replay_b is not None and cfg.bytes_warn is not None and replay_b >= cfg.bytes_warn:
            v.degrade(f"standby {name} is {fmt_bytes(replay_b)} of WAL behind in replay")
    obs.append(Observation("pg_replication_standbys", float(streaming)))
    if cfg.expected_standbys is not None and streaming < cfg.expected_standbys:
        v.fail(f"{streaming} streaming standbys, expected {cfg.expected_standbys}")
    if hidden:
        v.degrade(privilege_note(cycle.session, f"the state and lag of {hidden} standbys"))

    slot_details: list[dict[str, Any]] = []
    for slot_name, slot_type, active, wal_status, retained in slots:
        labels = {"slot": slot_name}
        obs.append(Observation("pg_replication_slot_active", float(bool(active)), labels))
        if retained is not None:
            obs.append(Observation("pg_replication_slot_retained_bytes", retained, labels))
        slot_details.append(
            {
                "slot": slot_name,
                "type": slot_type,
                "active": active,
                "wal_status": wal_status,
                "retained_bytes": retained,
            }
        )
        if wal_status == "lost":
            v.degrade(f"replication slot {slot_name} has lost required WAL (its consumer must be rebuilt)")
        elif not active and retained is not None and retained >= cfg.slot_retained_warn:
            v.degrade(
                f"inactive replication slot {slot_name} retains {fmt_bytes(retained)} of WAL (disk fills up)"
            )
    summary = f"primary with {streaming} streaming standby{'s' if streaming != 1 else ''}" + (
        f", {len(slots)} slot{'s' if len(slots) != 1 else ''}" if slots else ""
    )
    return v.report(
        "replication", summary, obs, {"role": "primary", "standbys": standbys, "slots": slot_details}
    )


async def _replica(cycle: Cycle, cfg: ReplicationThresholds) -> FamilyReport:
    v = Verdict()
    pause_state = (
        "pg_get_wal_replay_pause_state()" if cycle.session.server_version_num >= 140000 else "NULL::text"
    )
    row = await cycle.conn.fetchrow(_REPLICA.format(pause_state=pause_state))
    (
        gap_b,
        since_replay,
        paused,
        pause_state_v,
        recv_lsn,
        replay_lsn,
        status,
        sender,
        sender_port,
        msg_age,
        wr,
    ) = row
    # Replay delay: when everything received has been replayed the replica is current, however long ago the
    # last transaction was (an idle primary writes nothing). Otherwise, time since the last replayed commit.
    delay = 0.0 if gap_b is not None and gap_b <= 0 else since_replay
    receiver_up = status == "streaming"
    obs = [
        Observation("pg_replication_is_replica", 1.0),
        Observation("pg_replica_replay_paused", float(bool(paused))),
        Observation("pg_replica_wal_receiver_up", float(receiver_up)),
    ]
    if delay is not None:
        obs.append(Observation("pg_replication_lag_seconds", delay, {"standby": "self"}))
    if gap_b is not None:
        obs.append(Observation("pg_replication_lag_bytes", gap_b, {"standby": "self"}))
    if since_replay is not None:
        obs.append(Observation("pg_replica_last_replay_age_seconds", since_replay))
    if delay is not None:
        v.threshold(delay, cfg.lag_warn, cfg.lag_fail, f"replica replay delay {human_duration(delay)}")
    if gap_b is not None and cfg.bytes_warn is not None and gap_b >= cfg.bytes_warn:
        v.degrade(f"received WAL not yet replayed: {fmt_bytes(gap_b)}")
    if paused and cfg.replay_paused_degrade:
        v.degrade(
            f"WAL replay is paused ({pause_state_v or 'paused'}): run pg_wal_replay_resume() when intended"
        )
    if not receiver_up:
        if wr and status is None and not cycle.session.read_all_stats:
            v.degrade(privilege_note(cycle.session, "the WAL receiver status"))
        else:
            v.degrade(
                f"WAL receiver is {status or 'not running'}: the replica is not streaming from its primary"
            )
    summary = (
        f"replica streaming from {sender or '?'}:{sender_port or '?'}, "
        f"replay delay {human_duration(delay or 0.0)}"
    )
    details = {
        "role": "replica",
        "replay_delay_s": delay,
        "last_replay_age_s": since_replay,
        "receive_lsn": recv_lsn,
        "replay_lsn": replay_lsn,
        "replay_gap_bytes": gap_b,
        "replay_paused": bool(paused),
        "pause_state": pause_state_v,
        "wal_receiver": {
            "status": status,
            "sender_host": sender,
            "sender_port": sender_port,
            "last_message_age_s": msg_age,
        },
    }
    return v.report("replication", summary, obs, details)


# ------------------------------------------------------------------------------------------------
# Vitals

_VITALS = """
SELECT current_database()::text, pg_database_size(current_database())::float8,
       (SELECT max(age(datfrozenxid)) FROM pg_database)::int8,
       (SELECT datname::text FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1),
       (SELECT max(mxid_age(datminmxid)) FROM pg_database)::int8,
       current_setting('archive_mode'),
       a.archived_count::float8, a.failed_count::float8,
       extract(epoch FROM now() - a.last_archived_time)::float8,
       extract(epoch FROM now() - a.last_failed_time)::float8,
       a.last_failed_wal, a.last_archived_time < a.last_failed_time
         OR (a.last_archived_time IS NULL AND a.last_failed_time IS NOT NULL)
FROM pg_stat_archiver a
"""


async def check_vitals(cycle: Cycle, cfg: VitalsThresholds) -> FamilyReport:
    v = Verdict()
    (
        database,
        size,
        xid_age,
        oldest_db,
        mxid_age,
        archive_mode,
        archived,
        failed,
        archived_age,
        failed_age,
        failed_wal,
        failing,
    ) = await cycle.conn.fetchrow(_VITALS)
    current, previous = await cycle.stat_database()
    d_hit = delta(current, previous, "blks_hit")
    d_read = delta(current, previous, "blks_read")
    if d_hit is None or d_read is None:  # first run: since statistics reset
        d_hit, d_read = current["blks_hit"], current["blks_read"]
    blocks = d_hit + d_read
    hit_ratio = d_hit / blocks if blocks else None
    obs = [
        Observation("pg_database_size_bytes", size, {"database": database}),
        Observation("pg_xid_age", float(xid_age)),
        Observation("pg_xid_wraparound_ratio", xid_age / XID_WRAP),
        Observation("pg_mxid_age", float(mxid_age or 0)),
    ]
    if hit_ratio is not None:
        obs.append(Observation("pg_cache_hit_ratio", hit_ratio))
        if blocks >= cfg.min_blocks and hit_ratio < cfg.cache_hit_warn:
            v.degrade(
                f"cache hit ratio {hit_ratio:.1%} over {blocks:.0f} block reads (shared_buffers too small?)"
            )
    v.threshold(
        float(xid_age),
        cfg.xid_age_warn,
        cfg.xid_age_fail,
        f"transaction-ID age {xid_age:,} in database {oldest_db} ({xid_age / XID_WRAP:.0%} of the way to "
        "wraparound): VACUUM FREEZE needed",
    )
    archiving = archive_mode == "always" or (archive_mode == "on" and not cycle.in_recovery)
    details: dict[str, Any] = {
        "database": database,
        "size_bytes": size,
        "cache_hit_ratio": None if hit_ratio is None else round(hit_ratio, 5),
        "xid_age": xid_age,
        "xid_oldest_database": oldest_db,
        "mxid_age": mxid_age,
        "archive_mode": archive_mode,
    }
    if archiving:
        failed_prev = cycle.memory.archiver_failed
        cycle.memory.archiver_failed = failed
        new_failures = None if failed_prev is None or failed < failed_prev else failed - failed_prev
        obs.append(Observation("pg_archiver_failing", float(bool(failing))))
        obs.append(Observation("pg_archiver_failed_total", failed))
        if new_failures is not None:
            obs.append(Observation("pg_archiver_failed_delta", new_failures))
        if archived_age is not None:
            obs.append(Observation("pg_archiver_last_archived_age_seconds", archived_age))
        if failing:
            v.degrade(
                f"WAL archiving is failing (last failure {human_duration(failed_age or 0.0)} ago "
                f"on {failed_wal}, "
                + (
                    f"last success {human_duration(archived_age)} ago"
                    if archived_age is not None
                    else "never succeeded"
                )
                + "): backups are getting stale and pg_wal grows"
            )
        elif new_failures:
            v.degrade(f"{new_failures:.0f} WAL archiving failures since the previous run")
        if cfg.archive_max_age is not None and (archived_age is None or archived_age > cfg.archive_max_age):
            v.degrade(
                "no WAL archived for "
                + (human_duration(archived_age) if archived_age is not None else "ever")
                + f" (limit {human_duration(cfg.archive_max_age)}): backup freshness at risk"
            )
        details["archiver"] = {
            "archived_count": archived,
            "failed_count": failed,
            "failing": bool(failing),
            "last_archived_age_s": archived_age,
            "last_failed_age_s": failed_age,
            "last_failed_wal": failed_wal,
        }
    summary = (
        f"{database} {fmt_bytes(size)}, cache hit "
        + (f"{hit_ratio:.1%}" if hit_ratio is not None else "n/a")
        + f", xid age {xid_age:,}"
    )
    return v.report("vitals", summary, obs, details)
