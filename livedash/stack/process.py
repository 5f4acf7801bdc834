"""Our own server processes: started detached, found again by pid file, stopped gracefully then forcefully.

A pid file alone is not trusted: the process must also carry our marker (-Dlivedash.service=NAME and
-Dlivedash.state=DIR) in its command line, so a recycled pid never makes us reuse or kill a stranger.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

MARKER_ENV = "LIVEDASH_MARKER"  # for processes that take no -D flags (the Python dataflow)


def marker(name: str, state_dir: Path) -> list[str]:
    return [f"-Dlivedash.service={name}", f"-Dlivedash.state={state_dir}"]


def marker_env(name: str, state_dir: Path) -> dict[str, str]:
    return {MARKER_ENV: f"{name}@{state_dir}"}


def _environ_has(pid: int, entry: str) -> bool:
    try:
        return entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_ours(pid: int, name: str, state_dir: Path) -> bool:
    """True when pid is alive (not a zombie) and carries our marker for this service and state dir."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}:
        return False
    args = _cmdline(pid)
    if all(m in args for m in marker(name, state_dir)):
        return True
    return _environ_has(pid, f"{MARKER_ENV}={name}@{state_dir}")


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
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and is_ours(int(entry.name), name, state_dir):
            pids.append(int(entry.name))
    return pids


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
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive():
            return True
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        _reap(pid)
        if not is_alive():
            break
        time.sleep(0.1)
    return False


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
    """'pid 123 (java)' for a listening port when ss can tell, else ''."""
    if not shutil.which("ss"):
        return ""
    try:
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    # users:(("java",pid=3494,fd=333))
    if "pid=" in out:
        users = out.split("users:((", 1)[-1]
        prog = users.split(",", 1)[0].strip('"')
        pid = users.split("pid=", 1)[1].split(",", 1)[0]
        return f"pid {pid} ({prog})"
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
