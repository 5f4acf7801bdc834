"""Our own server processes: started detached, found again by pid file, stopped gracefully then forcefully.

A pid file alone is not trusted: the process must also carry our marker (-Dlivedash.service=NAME and
-Dlivedash.state=DIR) in its command line, so a recycled pid never makes us reuse or kill a stranger.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from livedash.wait import poll

MARKER_ENV = "LIVEDASH_MARKER"  # for processes that take no -D flags (the Python dataflow)


def marker(name: str, state_dir: Path) -> list[str]:
    return [f"-Dlivedash.service={name}", f"-Dlivedash.state={state_dir}"]


def marker_env(name: str, state_dir: Path) -> dict[str, str]:
    return {MARKER_ENV: f"{name}@{state_dir}"}


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except (psutil.Error, ValueError):
        return None


def is_ours(pid: int, name: str, state_dir: Path) -> bool:
    """True when pid is alive (not a zombie) and carries our marker for this service and state dir."""
    proc = _process(pid)
    if proc is None:
        return False
    try:
        if proc.status() in {psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD}:
            return False
        if all(m in proc.cmdline() for m in marker(name, state_dir)):
            return True
        return proc.environ().get(MARKER_ENV) == f"{name}@{state_dir}"
    except psutil.Error:  # gone meanwhile, or another user's
        return False


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(pid_file: Path, name: str, state_dir: Path) -> int | None:
    pid = read_pid(pid_file)
    if pid is not None and is_ours(pid, name, state_dir):
        return pid
    return None


def find_ours(name: str, state_dir: Path) -> list[int]:
    """Every live process carrying our marker, pid file or not (a crash can lose the file)."""
    return [pid for pid in psutil.pids() if is_ours(pid, name, state_dir)]


def start(
    cmd: Sequence[str], log_file: Path, pid_file: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {cmd[0]} ... {cmd[-1]}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,  # survives the CLI; a Ctrl-C in the shell does not reach it
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def stop(pid: int, timeout_s: float, is_alive: Callable[[], bool]) -> bool:
    """SIGTERM, wait up to timeout_s, then SIGKILL. True when it ended gracefully."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if poll(lambda: _gone(pid, is_alive), timeout_s, every_s=0.2):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    poll(lambda: _gone(pid, is_alive), 5.0, every_s=0.1)
    return False


def _gone(pid: int, is_alive: Callable[[], bool]) -> bool:
    _reap(pid)
    return not is_alive()


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our child (tests start and stop in one process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in {errno.EADDRINUSE, errno.EACCES}
    return False


def port_owner(port: int) -> str:
    """'pid 123 (java)' for a listening TCP port when the system tells us its process, else ''."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return ""
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid is not None:
            proc = _process(conn.pid)
            try:
                return f"pid {conn.pid} ({proc.name() if proc else '?'})"
            except psutil.Error:
                return f"pid {conn.pid} (?)"
    return ""


def tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])
