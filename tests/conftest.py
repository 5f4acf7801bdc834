"""Shared fixtures. Unit tests need no server; integration tests share one real stack for the session.

The stack runs from config/test.yaml (other ports, state in .livedash-test/), so a developer's own stack on
the default ports is never touched.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from livedash import config

ROOT = Path(__file__).resolve().parent.parent
TEST_CONFIG = ROOT / "config" / "test.yaml"
ARTIFACTS = ROOT / "test-artifacts"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `livedash ARGS` as an operator would, in a child process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDASH_")}
    full_env["LIVEDASH_CONFIG"] = str(TEST_CONFIG)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "livedash.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


PORT_KEYS = (
    "KAFKA__PORT", "KAFKA__CONTROLLER_PORT", "PINOT__ZOOKEEPER_PORT", "PINOT__CONTROLLER_PORT",
    "PINOT__BROKER_PORT", "PINOT__SERVER_NETTY_PORT", "PINOT__SERVER_ADMIN_PORT", "DATAFLOW__METRICS_PORT",
    "DASHBOARD__PORT",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_env() -> dict[str, str]:
    """A distinct free port for every service: all sockets are held open until each has one, so no two
    services (nor a port a test binds later on purpose) can be handed the same number."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in PORT_KEYS]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {f"LIVEDASH_{key}": str(sock.getsockname()[1]) for key, sock in zip(PORT_KEYS, socks, strict=True)}


def isolated_env(name: str) -> tuple[Path, dict[str, str]]:
    """A throwaway state dir and free ports for every service."""
    state = ROOT / ".livedash-test" / f"{name}-{uuid.uuid4().hex[:6]}"
    env = port_env()
    env["LIVEDASH_STATE_DIR"] = str(state)
    return state, env


@pytest.fixture(scope="session")
def test_settings() -> config.Settings:
    return config.load(TEST_CONFIG, environ={})


@pytest.fixture(scope="session")
def stack(test_settings: config.Settings) -> Iterator[config.Settings]:
    """The real Kafka + ZooKeeper + Pinot, up and with tables applied, and the aggregation dataflow on the
    shipped topics (it feeds the roll-ups and events_raw); stopped at the end of the session."""
    from livedash import apply
    from livedash.stack import manager

    manager.up(test_settings, say=lambda line: print(f"[stack] {line}"))
    apply.apply_all(test_settings, say=lambda line: print(f"[apply] {line}"))
    manager.up(test_settings, say=lambda line: print(f"[stack] {line}"), dataflow=True)
    yield test_settings
    if os.environ.get("LIVEDASH_KEEP_TEST_STACK") != "1":
        manager.down(test_settings, say=lambda line: print(f"[stack] {line}"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)
