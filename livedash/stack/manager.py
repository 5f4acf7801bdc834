"""`livedash up`, `down` and `status`: start what is missing, reuse what runs, stop only what we started."""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from livedash.config import Settings
from livedash.errors import LivedashError
from livedash.output import Say
from livedash.stack import jars, process
from livedash.stack.services import Dashboard, Dataflow, Health, Pinot, Service, all_services
from livedash.stack.toolchain import require_java
from livedash.wait import poll


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    health: Health
    log: str


def _pids(svc: Service) -> list[int]:
    pid = process.running_pid(svc.pid_file, svc.name, svc.state_dir)
    others = process.find_ours(svc.name, svc.state_dir)
    return sorted({*others, *([pid] if pid else [])})


def _env_var(key: str) -> str:
    return "LIVEDASH_" + key.upper().replace(".", "__")


def _free_near(host: str, port: int) -> int:
    """A free port to suggest instead: 10,000 above (or below, past the top), else the next free one after it,
    within the range config accepts (1024-65535)."""
    first = port + 10_000 if port + 10_000 <= 65_535 else max(1024, port - 10_000)
    for candidate in range(first, min(first + 100, 65_536)):
        if candidate != port and not process.port_in_use(host, candidate):
            return candidate
    return first


def check_ports(services: list[Service], host: str) -> None:
    for svc in services:
        for key, port in svc.ports.items():
            if process.port_in_use(host, port):
                owner = process.port_owner(port)
                by = f" by {owner}" if owner else ""
                raise LivedashError(
                    f"port {port} ({key}, needed by {svc.name}) is already in use{by}: stop that process "
                    f"or choose another port, for example {_env_var(key)}={_free_near(host, port)}"
                )


def up(settings: Settings, say: Say = print, dataflow: bool = False, dashboard: bool = False) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    services = all_services(settings) + ([Dataflow(settings)] if dataflow else [])
    services += [Dashboard(settings)] if dashboard else []
    running = {svc.name: _pids(svc) for svc in services}
    to_start = [svc for svc in services if not running[svc.name]]
    # Every port is checked before anything starts, so a conflict leaves nothing half-started.
    check_ports(to_start, settings.kafka.host)
    java = require_java() if to_start else None
    classpaths: dict[str, str] = {"": ""}
    for svc in to_start:
        if svc.artifact not in classpaths:
            artifact = jars.artifacts()[svc.artifact]
            if not jars.cached_classpath(artifact, settings.state_dir):
                say(f"{artifact.name} {artifact.version}: resolving jars from Maven Central (first run only)...")
            t0 = time.monotonic()
            maven_log = settings.state_dir / "logs" / "maven.log"
            classpaths[svc.artifact] = jars.resolve(artifact, settings.state_dir, maven_log)
            if time.monotonic() - t0 > 1:
                say(f"{artifact.name} {artifact.version}: jars ready in {time.monotonic() - t0:.0f}s")
    for svc in services:
        if running[svc.name]:
            pid = running[svc.name][0]
            _wait_healthy(svc, pid, proc=None)
            say(f"{svc.name}: already running (pid {pid}), healthy; reused")
            continue
        assert java is not None
        t0 = time.monotonic()
        cmd = svc.command(java, classpaths[svc.artifact])
        proc = process.start(cmd, svc.out_file, svc.pid_file, svc.dir, env=svc.environment())
        _wait_healthy(svc, proc.pid, proc)
        say(f"{svc.name}: started (pid {proc.pid}), healthy in {time.monotonic() - t0:.1f}s; log {svc.log_file}")
    _wait_segments(services[2], say)


def _wait_segments(pinot: Service, say: Say, timeout_s: float = 120.0) -> None:
    """Wait until Pinot serves every segment it holds, so data ingested before a restart is queryable."""
    assert isinstance(pinot, Pinot)
    health = poll(pinot.segments, timeout_s, done=lambda h: h.ok)
    if health.ok:
        say(f"pinot: {health.detail}")
    else:
        say(f"pinot: warning: {health.detail} after {timeout_s:.0f}s; see `livedash status` and {pinot.log_file}")


def _wait_healthy(svc: Service, pid: int, proc: subprocess.Popen[bytes] | None) -> None:

    def check() -> Health:
        # Our child: poll() (its cmdline may not show the exec'd java yet). Reused: the marker check.
        alive = proc.poll() is None if proc is not None else process.is_ours(pid, svc.name, svc.state_dir)
        if not alive:
            logs = f"last lines of {svc.out_file}:\n{process.tail(svc.out_file)}"
            if svc.log_file != svc.out_file:  # the Python processes log to their output: show it once
                logs += f"\nand of {svc.log_file}:\n{process.tail(svc.log_file)}"
            raise LivedashError(f"{svc.name} exited during start-up; {logs}")
        return svc.health()

    health = poll(check, svc.timeout_s, done=lambda h: h.ok)
    if health.ok:
        return
    if proc is not None:  # ours and broken: do not leave it half-up
        process.stop(pid, 15, lambda: process.is_ours(pid, svc.name, svc.state_dir))
        svc.pid_file.unlink(missing_ok=True)
    raise LivedashError(
        f"{svc.name} was not healthy within {svc.timeout_s:.0f}s ({health.detail}); "
        f"last lines of {svc.log_file}:\n{process.tail(svc.log_file)}"
    )


SERVICE_NAMES = ("kafka", "zookeeper", "pinot", "dataflow", "dashboard")


def running(settings: Settings) -> set[str]:
    """Names of the services of ours that run now."""
    services = [*all_services(settings), Dataflow(settings), Dashboard(settings)]
    return {svc.name for svc in services if _pids(svc)}


def down(settings: Settings, say: Say = print, timeout_s: float = 30.0, only: Sequence[str] = ()) -> None:
    """Stop every service we started, or only the named ones (`up` then restarts what is missing)."""
    unknown = set(only) - set(SERVICE_NAMES)
    if unknown:
        raise LivedashError(f"unknown service {sorted(unknown)[0]!r}: choose from {', '.join(SERVICE_NAMES)}")
    for svc in reversed([*all_services(settings), Dataflow(settings), Dashboard(settings)]):
        if only and svc.name not in only:
            continue
        pids = _pids(svc)
        if not pids:
            say(f"{svc.name}: not running")
        for pid in pids:
            alive = functools.partial(process.is_ours, pid, svc.name, svc.state_dir)
            graceful = process.stop(pid, timeout_s, alive)
            how = "stopped" if graceful else f"killed (did not stop within {timeout_s:.0f}s of SIGTERM)"
            say(f"{svc.name}: {how} (pid {pid})")
        svc.pid_file.unlink(missing_ok=True)


def status(settings: Settings) -> list[ServiceStatus]:
    out = []
    # The dataflow and the dashboard are listed when running; the stack is healthy without them.
    extra = [svc for svc in (Dataflow(settings), Dashboard(settings)) if _pids(svc)]
    for svc in [*all_services(settings), *extra]:
        pids = _pids(svc)
        health = svc.health() if pids else Health(False, "not running")
        if pids and health.ok and isinstance(svc, Pinot):
            segments = svc.segments()
            health = Health(segments.ok, f"{health.detail}; {segments.detail}")
        out.append(ServiceStatus(svc.name, pids[0] if pids else None, health, f"{svc.log_file} ({svc.out_file.name})"))
    return out
