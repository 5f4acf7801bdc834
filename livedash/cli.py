"""The operator's entry point: `livedash up | down | status | apply | sample | generate | verify | demo`."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from confluent_kafka import KafkaError, KafkaException

from livedash import config
from livedash.errors import LivedashError
from livedash.wait import poll


def _warn_about_state_dir(settings: config.Settings) -> None:
    warning = settings.state_dir_warning()
    if warning:
        print(f"livedash: {warning}", file=sys.stderr)


def _cmd_up(args: argparse.Namespace, settings: config.Settings) -> int:
    from livedash.stack import manager

    _warn_about_state_dir(settings)
    manager.up(settings)
    p = settings.pinot
    print(f"stack up: Kafka {settings.kafka.bootstrap}, Pinot console {p.controller_url}/#/query")
    if args.apply:
        from livedash import apply

        apply.apply_all(settings)
    if args.dataflow:  # after apply: it reads topics apply creates
        _start_dataflow(settings)
    if args.dashboard:
        _start_dashboard(settings)
    return 0


def _start_dataflow(settings: config.Settings) -> None:
    from livedash.stack import manager

    manager.up(settings, dataflow=True, say=lambda line: print(line) if line.startswith("dataflow") else None)
    print(f"dataflow metrics: http://127.0.0.1:{settings.dataflow.metrics_port}/metrics")


def _start_dashboard(settings: config.Settings) -> None:
    from livedash.stack import manager

    manager.up(settings, dashboard=True, say=lambda line: print(line) if line.startswith("dashboard") else None)
    print(f"dashboard: {settings.dashboard.url}")


def _cmd_down(args: argparse.Namespace, settings: config.Settings) -> int:
    from livedash.stack import manager

    manager.down(settings, timeout_s=args.timeout, only=args.services)
    return 0


def _cmd_status(args: argparse.Namespace, settings: config.Settings) -> int:
    from livedash.stack import manager

    rows = manager.status(settings)
    for row in rows:
        state = "healthy" if row.health.ok else ("UNHEALTHY" if row.pid else "stopped")
        pid = f"pid {row.pid}" if row.pid else "-"
        print(f"{row.name:<10} {state:<9} {pid:<10} {row.health.detail}")
        print(f"{'':<10} log: {row.log}")
    return 0 if all(r.health.ok for r in rows) else 1


def _cmd_apply(args: argparse.Namespace, settings: config.Settings) -> int:
    from livedash import apply

    apply.apply_all(settings)
    return 0


def _cmd_sample(args: argparse.Namespace, settings: config.Settings) -> int:
    from livedash import sample

    sample.produce(settings, count=args.count, rate=args.rate)
    return 0


def _stop_on_sigterm() -> None:
    """`kill PID` (a supervisor, a script, `timeout`) stops a long-running command as Ctrl-C does: the events
    already handed to the producer are still delivered and the summary printed, where SIGTERM's default action
    ended the process at once and dropped the producer's queue."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _cmd_generate(args: argparse.Namespace, settings: config.Settings) -> int:
    from pathlib import Path

    from livedash.generator import GeneratorOptions, rate_now, run

    if args.count is None and args.duration is None and args.rate <= 0:
        print("livedash: generate needs --count or --duration (or a --rate to run until Ctrl-C)", file=sys.stderr)
        return 2
    opts = GeneratorOptions(
        seed=args.seed, out_of_order_fraction=args.out_of_order, late_fraction=args.late,
        malformed_fraction=args.malformed, users=args.users,
    )  # fmt: skip
    topic = args.topic or settings.pipeline.topics.raw
    if args.rate > 0:
        print(f"generate: {rate_now(args.rate, time.time())}")
    _stop_on_sigterm()
    try:
        summary = run(settings.kafka.bootstrap, topic, args.count, args.duration, args.rate, opts,
                      truth=Path(args.truth) if args.truth else None, progress=not args.quiet)  # fmt: skip
    except KeyboardInterrupt:
        print("generate: interrupted", file=sys.stderr)
        return 130
    print(f"generate: {summary.sent} events to {topic} in {summary.seconds:.1f}s ({summary.rate:,.0f}/s), "
          f"{summary.malformed} malformed")  # fmt: skip
    return 0


def _cmd_demo(args: argparse.Namespace, settings: config.Settings) -> int:
    """The quick start: the stack, its tables, and live events you can query in the Pinot console."""
    from livedash import apply, sample
    from livedash.generator import GeneratorOptions, rate_now, run
    from livedash.stack import manager

    _warn_about_state_dir(settings)
    before = manager.running(settings)
    try:
        manager.up(settings)
        apply.apply_all(settings)
        _start_dataflow(settings)
        _start_dashboard(settings)
    except (LivedashError, KeyboardInterrupt):
        # Nothing half-started: what this demo started goes down again (what was running before stays).
        started = sorted(manager.running(settings) - before)
        if started:
            print(f"demo: start-up failed; stopping what it started ({', '.join(started)})", file=sys.stderr)
            manager.down(settings, say=lambda line: print(f"demo: {line}", file=sys.stderr), only=started)
        raise
    p = settings.pinot
    print(f"demo: open the dashboard at {settings.dashboard.url}")
    print(f"demo: or the Pinot query console at {p.controller_url}/#/query and try")
    print("        SELECT type, COUNT(*) FROM events_raw GROUP BY type")
    print("        SELECT window_start, type, SUM(event_count), DISTINCTCOUNTTHETASKETCH(distinct_theta)")
    print("          FROM aggregates_live WHERE rollup_name = 'geo_10s' GROUP BY window_start, type")
    print("          ORDER BY window_start DESC LIMIT 20")
    forever = args.count <= 0
    _stop_on_sigterm()
    print(f"demo: generating {rate_now(args.rate, time.time())}" + (" until Ctrl-C" if forever else ""))
    held_before = sample.count_in_pinot(settings)
    summary = run(settings.kafka.bootstrap, settings.pipeline.topics.raw, None if forever else args.count, None,
                  args.rate, GeneratorOptions(seed=int(time.time())), progress=True)  # fmt: skip
    valid = summary.sent - summary.malformed
    print(f"demo: {summary.sent:,} events sent in {summary.seconds:.0f}s ({summary.rate:,.0f}/s): {valid:,} valid, "
          f"{summary.malformed:,} malformed on purpose (the dataflow dead-letters those)")  # fmt: skip
    print(f"demo: {_counted(settings, held_before, valid)}")
    print(f"demo: the stack, the dataflow and the dashboard ({settings.dashboard.url}) keep running; "
          "stop them with `bin/livedash down`")  # fmt: skip
    return 0


def _counted(settings: config.Settings, before: int | str, valid: int, wait_s: float = 60.0) -> str:
    """How many of the valid events sent events_raw holds (it holds exactly what the roll-ups count), once
    the dataflow and Pinot have caught up (or after wait_s)."""
    from livedash import sample

    if not isinstance(before, int):
        return f"events_raw could not be counted before the demo ({before})"
    now = poll(
        lambda: sample.count_in_pinot(settings), wait_s, done=lambda n: isinstance(n, int) and n - before >= valid
    )
    gained = now - before if isinstance(now, int) else None
    if gained is not None and gained >= valid:
        return f"all {valid:,} valid events are counted (events_raw gained {gained:,} rows)"
    seen = f"{gained:,}" if gained is not None else f"an unknown number ({now})"
    return (f"events_raw shows {seen} of the {valid:,} valid events after {wait_s:.0f}s (still catching "
            "up? see `livedash status`)")  # fmt: skip


def _cmd_verify(args: argparse.Namespace, settings: config.Settings) -> int:
    """Recount [--from, --to) from Kafka and compare every roll-up with Pinot; exit 0 only when exact."""
    from livedash.times import parse_time
    from livedash.verify import run as verify_run

    now = int(time.time() * 1000)
    start, end = parse_time(args.from_, now), parse_time(args.to, now)
    warmup = None if args.from_beginning else int(args.warmup * 3_600_000)
    report = verify_run.verify(settings, start, end, warmup_ms=warmup, quantile_groups=args.quantile_groups,
                               progress=not args.quiet, now_ms=now, settle_s=args.settle)  # fmt: skip
    print(f"verify: {report.summary()}")
    for problem in report.problems[: args.show]:
        print(f"  {problem}")
    if len(report.problems) > args.show:
        print(f"  ... and {len(report.problems) - args.show} more")
    if report.compared == 0:
        print(f"verify: nothing to compare in that range (no final windows; {report.open_windows} still open)")
    print("verify: " + ("exact" if report.ok else "NOT exact"))
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livedash", description=__doc__)
    parser.add_argument("--config", help="config file (default: $LIVEDASH_CONFIG or config/livedash.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="fetch (first time) and start Kafka, ZooKeeper and Pinot; reuse what runs")
    p_up.add_argument("--apply", action="store_true", help="also create or update topics and Pinot tables")
    p_up.add_argument("--dataflow", action="store_true", help="also start the aggregation dataflow (after --apply)")
    p_up.add_argument("--dashboard", action="store_true", help="also start the Streamlit dashboard")
    p_up.set_defaults(func=_cmd_up)
    p_down = sub.add_parser("down", help="stop the servers `up` started (data is kept)")
    p_down.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help="only these (kafka, zookeeper, pinot, dataflow, dashboard); `up` restarts them",
    )
    p_down.add_argument("--timeout", type=float, default=30.0, help="seconds to wait after SIGTERM before SIGKILL")
    p_down.set_defaults(func=_cmd_down)
    sub.add_parser("status", help="health of each server; exit 1 when any is unhealthy").set_defaults(func=_cmd_status)
    sub.add_parser("apply", help="create or update topics, Pinot schemas and tables").set_defaults(func=_cmd_apply)
    p_sample = sub.add_parser("sample", help="produce a few sample events to the raw-events topic")
    p_sample.add_argument("--count", type=int, default=10_000)
    p_sample.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p_sample.set_defaults(func=_cmd_sample)
    p_gen = sub.add_parser("generate", help="realistic clickstream (out-of-order, late, malformed) to Kafka")
    p_gen.add_argument("--count", type=int, help="events to send")
    p_gen.add_argument("--duration", type=float, help="seconds to run")
    p_gen.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p_gen.add_argument("--seed", type=int, default=1)
    p_gen.add_argument("--users", type=int, default=200_000)
    p_gen.add_argument("--out-of-order", type=float, default=0.05, help="fraction seconds behind")
    p_gen.add_argument("--late", type=float, default=0.01, help="fraction minutes behind")
    p_gen.add_argument("--malformed", type=float, default=0.01, help="fraction of broken messages")
    p_gen.add_argument("--topic", help="default: pipeline.topics.raw")
    p_gen.add_argument("--truth", help="write the valid events sent (JSON lines) to this file")
    p_gen.add_argument("--quiet", action="store_true", help="no progress line")
    p_gen.set_defaults(func=_cmd_generate)
    p_verify = sub.add_parser("verify", help="recount a time range from Kafka and compare with Pinot (exit 0: exact)")
    p_verify.add_argument("--from", dest="from_", required=True, help="start: epoch ms, ISO 8601, now-30m, ...")
    p_verify.add_argument("--to", default="now", help="end (exclusive), same forms (default: now)")
    p_verify.add_argument("--warmup", type=float, default=2.0,
                          help="hours of the raw topic read before --from, to replay the watermark")  # fmt: skip
    p_verify.add_argument("--from-beginning", action="store_true", help="read the raw topic from its start")
    p_verify.add_argument("--quantile-groups", type=int, default=10, help="busiest groups whose p50/p95 are checked")
    p_verify.add_argument("--show", type=int, default=20, help="differences to print")
    p_verify.add_argument("--settle", type=float, default=30.0,
                          help="seconds to look again at differences while the dataflow catches up (live)")  # fmt: skip
    p_verify.add_argument("--quiet", action="store_true", help="no progress lines")
    p_verify.set_defaults(func=_cmd_verify)
    p_demo = sub.add_parser("demo", help="quick start: up, apply, then live sample events (Ctrl-C to stop)")
    p_demo.add_argument("--rate", type=float, default=1000.0, help="events per second")
    p_demo.add_argument("--count", type=int, default=0, help="stop after this many events (0: until Ctrl-C)")
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
        return int(args.func(args, settings))
    except LivedashError as exc:
        print(f"livedash: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, config.ConfigError) else 1
    except KafkaException as exc:  # a fatal client error (librdkafka's): one line, not a traceback
        error = exc.args[0] if exc.args else None
        print(f"livedash: Kafka: {error.str() if isinstance(error, KafkaError) else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livedash: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
