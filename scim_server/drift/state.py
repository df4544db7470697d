"""The drift round's rows: its lease and delta links (`drift_state`, one row per target) and
the counts of drift found and repaired (`drift_counts`).

The lease is one conditional UPDATE (free, expired, or already ours; and the round due),
whose row count says who won: on PostgreSQL the row lock makes two workers' UPDATEs take
turns and the second sees the first's lease, on SQLite the write lock does the same. So
two workers never run a round at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models import DriftCount, DriftState, utcnow
from scim_server.db import begin


def _insert_ignore(conn: Connection, table: Any, **values: Any) -> Insert:
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return cast(Insert, module.insert(table).values(**values).on_conflict_do_nothing())


@dataclass(frozen=True)
class Links:
    users: str | None
    groups: str | None


def ensure(conn: Connection, target: str, first_due: float) -> None:
    """The target's row, unless it is there already (one statement, no race). A new row
    is due at `first_due`: a worker that starts runs no round at once."""
    conn.execute(_insert_ignore(conn, DriftState, target=target, next_round_at=first_due))


def try_lease(
    engine: Engine,
    target: str,
    holder: str,
    now: float,
    seconds: float,
    *,
    first_due: float,
    force: bool = False,
) -> bool:
    """Take the round's lease for `seconds` if it is free (or ours) and, unless `force`,
    the round is due. True when taken."""
    with begin(write=True, engine=engine) as conn:
        ensure(conn, target, first_due)
        free = or_(
            DriftState.locked_until.is_(None),
            DriftState.locked_until < now,
            DriftState.locked_by == holder,
        )
        query = update(DriftState).where(DriftState.target == target, free)
        if not force:
            query = query.where(
                or_(DriftState.next_round_at.is_(None), DriftState.next_round_at <= now)
            )
        taken = conn.execute(query.values(locked_by=holder, locked_until=now + seconds))
        return bool(taken.rowcount)


def renew(engine: Engine, target: str, holder: str, until: float) -> bool:
    """Keep the lease; False if it was lost (it ran out and another worker took it)."""
    with begin(write=True, engine=engine) as conn:
        kept = conn.execute(
            update(DriftState)
            .where(DriftState.target == target, DriftState.locked_by == holder)
            .values(locked_until=until)
        )
        return bool(kept.rowcount)


def release(
    engine: Engine,
    target: str,
    holder: str,
    *,
    next_round_at: float | None = None,
    links: Links | None = None,
    summary: dict[str, Any] | None = None,
    started_at: datetime | None = None,
) -> None:
    """Give the lease back; with `links`, the round finished: its delta links are kept."""
    values: dict[str, Any] = {"locked_by": None, "locked_until": None}
    if next_round_at is not None:
        values["next_round_at"] = next_round_at
    if links is not None:
        values.update(
            users_delta_link=links.users,
            groups_delta_link=links.groups,
            last_finished_at=utcnow(),
            last_started_at=started_at,
            last_round=summary,
        )
    with begin(write=True, engine=engine) as conn:
        conn.execute(
            update(DriftState)
            .where(DriftState.target == target, DriftState.locked_by == holder)
            .values(**values)
        )


def links(engine: Engine, target: str) -> Links:
    with begin(write=False, engine=engine) as conn:
        row = conn.execute(
            select(DriftState.users_delta_link, DriftState.groups_delta_link).where(
                DriftState.target == target
            )
        ).first()
        return Links(row[0], row[1]) if row else Links(None, None)


def count(conn: Connection, column: str, kinds: Mapping[str, int]) -> None:
    """Add to the `detected` or `repaired` count of each kind, in the caller's transaction.
    An UPDATE of `x = x + n`: two processes adding at once both count."""
    for kind, n in sorted(kinds.items()):
        if not n:
            continue
        conn.execute(_insert_ignore(conn, DriftCount, kind=kind, detected=0, repaired=0))
        conn.execute(
            update(DriftCount)
            .where(DriftCount.kind == kind)
            .values({column: getattr(DriftCount, column) + n})
        )


def counts(conn: Connection) -> dict[str, dict[str, int]]:
    """{"detected": {kind: n}, "repaired": {kind: n}}."""
    out: dict[str, dict[str, int]] = {"detected": {}, "repaired": {}}
    for kind, detected, repaired in conn.execute(
        select(DriftCount.kind, DriftCount.detected, DriftCount.repaired).order_by(DriftCount.kind)
    ):
        if detected:
            out["detected"][kind] = int(detected)
        if repaired:
            out["repaired"][kind] = int(repaired)
    return out


def rounds(conn: Connection) -> list[dict[str, Any]]:
    """The targets' last rounds, for `sync status`."""
    out = []
    for row in conn.execute(
        select(
            DriftState.target,
            DriftState.last_finished_at,
            DriftState.locked_by,
            DriftState.last_round,
        ).order_by(DriftState.target)
    ):
        out.append(
            {
                "target": row.target,
                "last_finished_at": row.last_finished_at.isoformat() + "Z"
                if row.last_finished_at
                else None,
                "running": row.locked_by is not None,
                "last_round": row.last_round,
            }
        )
    return out
