"""`livedash verify --from T1 --to T2`: the I/O around livedash/verify/recount.py (Kafka scan, Pinot queries, output).

Reads every partition of the raw topic from `--warmup` before T1 (by message timestamp, so the replayed
watermark has seen what came before the range; events can be at most `events.max_future_s` ahead of their
message) up to the end offsets at start, recounts, then asks Pinot for every roll-up's groups in the range and
compares. Exit 0 only when every compared group is exact (sketches within bounds) and something was compared.

On a live system the dataflow and Pinot may be a little behind the recount: differences are looked at again
for up to `settle_s`, and only then reported (a correct pipeline converges; a wrong count stays wrong).
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from livedash.config import Settings
from livedash.errors import LivedashError
from livedash.output import Say
from livedash.pinot.client import PinotClient
from livedash.pipeline.rows import DISTINCT, EVENT_COUNT, QUANTILE_TDIGEST, SOURCES, metric_columns, version
from livedash.pipeline.settings import Rollup
from livedash.verify.recount import Found, GroupKey, Recount, Report, Tally, check_quantiles, compare_rollup

GROUPS_PER_QUERY = 50_000  # below Pinot's default numGroupsLimit (100,000): a query never truncates silently


def scan(settings: Settings, recount: Recount, from_ms: int | None, say: Say, progress: bool = True) -> int:
    """Feed the raw topic, from message time from_ms (None: the beginning) to the end offsets seen now."""
    topic = settings.pipeline.topics.raw
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "livedash-verify",
                         "enable.auto.commit": False, "enable.partition.eof": False})  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise LivedashError(f"Kafka topic {topic!r} does not exist")
        parts = sorted(meta.partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        if from_ms is None:
            starts = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0] for p in parts}
        else:
            found = consumer.offsets_for_times([TopicPartition(topic, p, from_ms) for p in parts], timeout=10)
            starts = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition]) for tp in found}
        total = sum(max(0, ends[p] - starts[p]) for p in parts)
        recount.expect(ends)
        todo = {p for p in parts if starts[p] < ends[p]}
        consumer.assign([TopicPartition(topic, p, starts[p] if starts[p] >= 0 else OFFSET_BEGINNING) for p in todo])
        done, last_say = 0, time.monotonic()
        say(f"recounting {total:,} messages of {topic} ({len(parts)} partitions)")
        while todo:
            msgs = consumer.consume(10_000, 1.0)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                p, offset = msg.partition(), msg.offset()
                assert p is not None and offset is not None  # a consumed message has both
                if p not in todo or offset >= ends[p]:
                    continue
                recount.feed(p, msg.key(), msg.value(), msg.timestamp()[1])
                done += 1
                if offset + 1 >= ends[p]:
                    todo.discard(p)
            if progress and time.monotonic() - last_say > 5:
                say(f"  {done:,} / {total:,} messages ({done / max(total, 1):.0%})")
                last_say = time.monotonic()
        return done
    except KafkaException as exc:  # Kafka down or refusing: one line, not a traceback
        raise LivedashError(
            f"Kafka at {settings.kafka.bootstrap}: {exc.args[0].str()} (is it up? see `livedash status`)"
        ) from None
    finally:
        consumer.close()


def pinot_client(settings: Settings) -> PinotClient:
    """The client of one verify run (its queries share a connection); Pinot's own timeout 120 s."""
    return PinotClient.of(settings.pinot, timeout_s=120.0, slack_s=10.0)


class _Truncated(Exception):
    pass


def _rows(pinot: PinotClient, sql: str, limit: int) -> list[list[Any]]:
    result = pinot.query(sql)
    if result.groups_limit_reached or len(result.rows) >= limit:
        raise _Truncated
    return [list(row) for row in result.rows]


def read_so_far(ends: dict[int, int]) -> str:
    """SQL: window rows, and the late corrections of events the recount read (a correction's version is
    2 * its event's offset + 1): those of later events are not in the recount."""
    if not ends:
        return "TRUE"
    # The correction of the event at offset o has version(o, final=True) = 2o + 1: below version(end, False) =
    # 2 * end exactly when o < end.
    late = " OR ".join(f'("source_partition" = {int(p)} AND "version" < {version(int(end), False)})'
                       for p, end in ends.items())  # fmt: skip
    return f"(\"kind\" = 'window' OR {late})"


def overrun_where(ends: dict[int, int]) -> str | None:
    """SQL: the correction rows read_so_far leaves out (their highest offset is at or past the recount's end:
    version >= 2 * end), which may hold late events the recount read too. None when the recount has no ends."""
    if not ends:
        return None
    rows = " OR ".join(f'("source_partition" = {int(p)} AND "version" >= {version(int(end), False)})'
                       for p, end in ends.items())  # fmt: skip
    return f"\"kind\" = 'late' AND ({rows})"


def fetch(settings: Settings, pinot: PinotClient, rollup: Rollup, start: int, end: int,
          ends: dict[int, int] | None = None, groups: bool = True, table: str | None = None) -> tuple[
    list[tuple[int, int, tuple[str, ...]]], dict[GroupKey, Found], set[str]
]:  # fmt: skip
    """(window rows' start, partition and values for the caps, groups summed over partitions and kinds, the
    keys of corrections left out as holding offsets past the recount's end: overrun_where).
    Asks for up to an hour of windows at once, and halves the span whenever Pinot would truncate. ends: the
    recount's end offsets (corrections of later events left out). groups=False: the window rows only. A derived
    roll-up's own window rows are not asked for: its caps are those of the roll-up it is built from. table: another
    than the roll-up's tier's (the live one)."""
    table = table or settings.pipeline.table_of(rollup)
    read = read_so_far(ends or {})
    overran = overrun_where(ends or {})
    overrun: set[str] = set()
    pane = rollup.window.pane_s * 1000
    dims = ", ".join(f'"{d}"' for d in rollup.dimensions)
    n = len(rollup.dimensions)
    metrics = list(settings.pipeline.events.metrics)
    aggs = ", ".join(
        f'SUM("{s}"), SUM("{c}"), MIN("{lo}"), MAX("{hi}")' for s, c, lo, hi in map(metric_columns, metrics)
    )
    window_rows: list[tuple[int, int, tuple[str, ...]]] = []
    found: dict[GroupKey, Found] = {}
    limit = GROUPS_PER_QUERY

    def one(a: int, b: int) -> None:
        where = f'"rollup_name" = \'{rollup.name}\' AND "window_start" >= {a} AND "window_start" < {b} AND {read}'
        rows_w: list[list[Any]] = []
        if rollup.window.every_s is None and rollup.derived_from is None:
            # source_partitions is multi-valued: Pinot groups by each of its values, one group per partition
            # whose events a row holds (a merged row holds several).
            sql = (f'SELECT "window_start", "{SOURCES}", {dims}, COUNT(*) FROM {table} '
                   f"WHERE {where} AND \"kind\" = 'window' GROUP BY \"window_start\", \"{SOURCES}\", {dims} "
                   f"LIMIT {limit}")  # fmt: skip
            rows_w = _rows(pinot, sql, limit)
        window_rows.extend((int(r[0]), int(r[1]), tuple(str(v) for v in r[2 : 2 + n])) for r in rows_w)
        if not groups:
            return
        sql = (f'SELECT "window_start", {dims}, SUM("{EVENT_COUNT}"), {aggs}, '
               f'DISTINCTCOUNTTHETASKETCH("{DISTINCT}"), MIN("is_final") FROM {table} WHERE {where} '
               f'GROUP BY "window_start", {dims} LIMIT {limit}')  # fmt: skip
        rows_g = _rows(pinot, sql, limit)
        for row in rows_g:
            v = row[1 + n :]
            per = {m: (float(v[1 + 4 * i]), int(v[2 + 4 * i]), float(v[3 + 4 * i]), float(v[4 + 4 * i]))
                   for i, m in enumerate(metrics)}  # fmt: skip
            key = (rollup.name, int(row[0]), tuple(str(x) for x in row[1 : 1 + n]))
            found[key] = Found(int(v[0]), per, float(v[1 + 4 * len(metrics)]), int(v[2 + 4 * len(metrics)]) == 1)
        if overran is not None:
            base = f'"rollup_name" = \'{rollup.name}\' AND "window_start" >= {a} AND "window_start" < {b}'
            sql = f'SELECT "pk" FROM {table} WHERE {base} AND {overran} LIMIT {limit}'
            overrun.update(str(r[0]) for r in _rows(pinot, sql, limit))

    def span(a: int, b: int) -> None:
        try:
            one(a, b)
        except _Truncated:
            if b - a <= pane:
                raise LivedashError(f"{rollup.name}: one window holds more than {limit:,} groups") from None
            mid = a + ((b - a) // 2 // pane) * pane or a + pane
            span(a, mid)
            span(mid, b)

    first = start - start % pane
    step = max(pane, 3_600_000 - 3_600_000 % pane)
    for a in range(first, end, step):
        span(a, min(a + step, end))
    return window_rows, found, overrun


def quantile_rows(
    settings: Settings,
    pinot: PinotClient,
    rollup: Rollup,
    key: GroupKey,
    ends: dict[int, int] | None = None,
    table: str | None = None,
) -> list[str]:
    table = table or settings.pipeline.table_of(rollup)
    conds = " AND ".join(f"\"{d}\" = '{v.replace(chr(39), chr(39) * 2)}'" for d, v in zip(rollup.dimensions, key[2],
                                                                                          strict=True))  # fmt: skip
    sql = (f"SELECT \"{QUANTILE_TDIGEST}\" FROM {table} WHERE \"rollup_name\" = '{rollup.name}' AND "
           f'"window_start" = {key[1]} AND {conds} AND {read_so_far(ends or {})} LIMIT 100000')  # fmt: skip
    return [row[0] for row in pinot.query(sql).rows]


def verify(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    say: Say = print,
    warmup_ms: int | None = 7_200_000,
    quantile_groups: int = 10,
    progress: bool = True,
    now_ms: int | None = None,
    settle_s: float = 30.0,
) -> Report:
    """Recount [start_ms, end_ms) from Kafka and compare every roll-up with Pinot. warmup_ms None: the scan
    starts at the beginning of the topic. settle_s: how long differences are looked at again before they
    count (the dataflow and Pinot catching up with the recount on a live system)."""
    if end_ms <= start_ms:
        raise LivedashError("--to must be after --from")
    pipeline = settings.pipeline
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    recount = Recount(pipeline)
    scan_from = None if warmup_ms is None else start_ms - warmup_ms - int(pipeline.events.max_future_s * 1000)
    scanned = scan(settings, recount, scan_from, say, progress)
    say(f"recounted {scanned:,} messages: {recount.valid:,} valid events ({recount.late_events:,} late), "
        f"{recount.duplicates:,} duplicates, {recount.invalid:,} invalid")  # fmt: skip
    report = Report()
    pinot = pinot_client(settings)
    deadline = time.monotonic() + settle_s
    for rollup in pipeline.rollups:
        size = rollup.window.size_s * 1000
        kept_from = now - pipeline.retention_ms(rollup) + size  # older windows are not published (tiers)
        start = max(start_ms, kept_from - kept_from % (rollup.window.pane_s * 1000))
        if start >= end_ms:
            report.skipped_rollups.append(rollup.name)
            say(f"{rollup.name}: skipped, its tier keeps {pipeline.retention_ms(rollup) // 3_600_000} h only")
            continue
        while True:
            part = Report()
            window_rows, found, overrun = fetch(settings, pinot, rollup, start, end_ms, recount.ends)
            live: set[GroupKey] = set()  # groups of windows not final yet: in the live table only
            live_from = max(start, now - pipeline.retention_ms_of("live") + size)
            if pipeline.copies_to_live(rollup) and live_from < end_ms:
                live_from -= live_from % (rollup.window.pane_s * 1000)
                rows_l, found_l, overrun_l = fetch(settings, pinot, rollup, live_from, end_ms, recount.ends,
                                                   table=pipeline.topics.live)  # fmt: skip
                window_rows += rows_l
                overrun |= overrun_l
                live = found_l.keys() - found.keys()
                found = {**found_l, **found}
            if rollup.derived_from is not None:  # caps: the finer windows' rows its windows were built from
                window_rows = fetch(settings, pinot, pipeline.root_of(rollup), start, end_ms + size, recount.ends,
                                    groups=False)[0]  # fmt: skip
            want = compare_rollup(part, recount, rollup, start, end_ms, window_rows, found, overrun)
            busiest: list[tuple[GroupKey, Tally]] = sorted(
                ((k, t) for k, t in want.items() if t.quantiles and k in found and "*" not in k[2]),
                key=lambda kt: -kt[1].count,
            )[:quantile_groups]
            for key, tally in busiest:
                rows = quantile_rows(settings, pinot, rollup, key, recount.ends,
                                     pipeline.topics.live if key in live else None)  # fmt: skip
                problems = check_quantiles(key, tally, rows, pipeline.sketches.kll_k)
                if problems:
                    part.different += 1
                    for problem in problems:
                        part.note(problem)
            if part.ok or part.compared == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)  # behind the recount, or wrong: look again until the deadline
        report.add(part)
        say(f"{rollup.name}: {part.compared} groups compared, {part.equal} equal, {part.open_windows} windows open")
    return report
