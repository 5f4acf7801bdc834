"""A page's panels fetched at once through the shared QueryService: the raw totals' and listings' statements as
they are, the other panels stitched from pieces (dashboard/stitch.py), each piece kept in the service while it
can still be right, so a refresh of an open page reads only what changed. The dashboard and bench.dashboard fetch
the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dashboard.query import Sql
from dashboard.stitch import Piece, Stitch, probe_text, probed, ttl_of
from livedash.pinot.client import PinotError, QueryService, Result

Outcomes = dict[str, Result | PinotError]  # by each panel's Sql.text (and a raw p95's Quantile.text)
# How long the probe's answer (how far each derived roll-up is published) is kept: it only grows, so an older
# answer reads a little more from the finer roll-ups, never a window not yet published.
PROBE_TTL_S = 30.0


@dataclass
class _Plan:
    sql: Sql
    stitch: Stitch
    panel: str  # the panel's key across time, for its last good rows
    have: dict[Piece, Result]
    missing: list[Piece]
    texts: tuple[str, ...]  # the statements reading the missing pieces (one per table)


def role(name: str) -> str:
    """A panel named "... previous period" keeps its last good rows apart from the current period's."""
    return "previous:" if "previous" in name else ""


def fetch(service: QueryService, panels: Mapping[str, Sql], ttl_s: float, fresh: bool = False) -> Outcomes:
    """Every panel's outcome by its Sql.text (raw totals' p95 statements by theirs): the statements run
    concurrently through the service's cache; a stitched panel's result merges its kept pieces with those
    its one statement read. fresh: nothing kept is reused."""
    statements: list[tuple[str, str | None]] = []
    plans: list[_Plan] = []
    complete = published(service, [sql.stitch for sql in panels.values() if sql.stitch is not None], fresh)
    for name, sql in panels.items():
        panel = role(name) + sql.key
        if sql.stitch is None:
            statements.append((sql.text, panel))
            if sql.quantile is not None:
                statements.append((sql.quantile.text, sql.quantile.key(panel)))
            continue
        have: dict[Piece, Result] = {}
        if not fresh:
            for piece in sql.stitch.pieces:
                found = service.kept(sql.stitch.piece_key(piece))
                if found is not None:
                    have[piece] = found
        missing = [p for p in sql.stitch.pieces if p not in have]
        texts = sql.stitch.texts(missing, complete) if missing else ()
        statements.extend((text, None) for text in texts)
        plans.append(_Plan(sql, sql.stitch, panel, have, missing, texts))
    outcomes = service.query_many(statements, ttl_s=ttl_s, fresh=fresh)
    for plan in plans:
        outcomes[plan.sql.text] = _stitched(service, plan, outcomes, ttl_s)
    return outcomes


def published(service: QueryService, stitches: list[Stitch], fresh: bool = False) -> dict[str, int]:
    """How far each final-only roll-up of these panels is published in Pinot (stitch.probe_text), one statement
    per table over its last few windows, and for those not found there (a stopped or backfilled pipeline) one
    over the panels' ranges, each kept PROBE_TTL_S; Pinot failing: none (the panels then read the finer
    roll-ups, and fail likewise)."""
    out: dict[str, int] = {}
    for table in sorted({lv.table for s in stitches for lv in s.derived}):
        mine = [s for s in stitches if any(lv.table == table for lv in s.derived)]
        levels = {lv for s in mine for lv in s.derived if lv.table == table}
        now = max(s.published for s in mine)
        since = min(s.pieces[0].lo for s in mine)
        for text in (probe_text(table, levels, now), probe_text(table, levels, now, since)):
            if not levels:
                break
            try:
                found = probed(service.query(text, PROBE_TTL_S, fresh).rows)
            except PinotError:
                break
            out.update(found)
            levels = {lv for lv in levels if lv.name not in found}
    return out


def _stitched(service: QueryService, plan: _Plan, outcomes: Outcomes, ttl_s: float) -> Result | PinotError:
    answers = [outcomes.get(text) for text in plan.texts]
    failed = [a if a is not None else PinotError("no data") for a in answers if not isinstance(a, Result) or a.stale]
    if failed:
        bad = failed[0]
        good = service.last_good(plan.panel)
        if good is None:
            return bad if isinstance(bad, PinotError) else PinotError(bad.error)
        return replace(good, stale=True, error=str(bad) if isinstance(bad, PinotError) else bad.error)
    got = _joined([a for a in answers if isinstance(a, Result)])
    if got is not None and any(isinstance(a, Result) and plan.stitch.cut(a.rows) for a in answers):
        got = replace(got, groups_limit_reached=True)
    if got is not None:
        for piece, found in plan.stitch.split(got.rows, plan.missing).items():
            kept = replace(got, rows=tuple(found))
            plan.have[piece] = kept
            service.keep(plan.stitch.piece_key(piece), kept, ttl_of(piece, ttl_s))
    parts = [plan.have[p] for p in plan.stitch.pieces]
    rows: tuple[tuple[Any, ...], ...] = plan.stitch.merge(r.rows for r in parts)
    fresh_ms = [r.freshness_ms for r in parts if r.freshness_ms]
    merged = Result(
        columns=_columns(plan.stitch, parts[0].columns if parts else ()),
        rows=rows,
        fetched_at=max((r.fetched_at for r in parts), default=0.0),
        freshness_ms=max(fresh_ms) if fresh_ms else None,
        time_used_ms=got.time_used_ms if got is not None else 0,  # this refresh's: the kept pieces cost nothing
        partial=any(r.partial for r in parts),
        groups_limit_reached=any(r.groups_limit_reached for r in parts),
    )
    service.remember(plan.panel, merged)
    return merged


def _joined(answers: list[Result]) -> Result | None:
    """The answers of a panel's statements (one per table) as one: their rows together."""
    if not answers:
        return None
    fresh = [a.freshness_ms for a in answers if a.freshness_ms]
    return replace(answers[0], rows=tuple(row for a in answers for row in a.rows),
                   fetched_at=min(a.fetched_at for a in answers), freshness_ms=min(fresh) if fresh else None,
                   time_used_ms=sum(a.time_used_ms for a in answers), partial=any(a.partial for a in answers),
                   groups_limit_reached=any(a.groups_limit_reached for a in answers))  # fmt: skip


def _columns(stitch: Stitch, fetched: tuple[str, ...]) -> tuple[str, ...]:
    """The merged rows' columns: a series keeps its time (the bucket), the others drop the piece."""
    return fetched if stitch.shape == "series" else fetched[1:]
