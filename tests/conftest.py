"""Shared fixtures. Unit tests need no server; integration tests share one real stack for the session.

The stack runs from config/test.yaml (other ports, state in .livedash-test/), so a developer's own stack on
the default ports is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def test_settings() -> config.Settings:
    return config.load(TEST_CONFIG, environ={})


@pytest.fixture(scope="session")
def stack(test_settings: config.Settings) -> Iterator[config.Settings]:
    """The real Kafka + ZooKeeper + Pinot, up and with tables applied; stopped at the end of the session."""
    from livedash import apply
    from livedash.stack import manager

    manager.up(test_settings, say=lambda line: print(f"[stack] {line}"))
    apply.apply_all(test_settings, say=lambda line: print(f"[apply] {line}"))
    yield test_settings
    if os.environ.get("LIVEDASH_KEEP_TEST_STACK") != "1":
        manager.down(test_settings, say=lambda line: print(f"[stack] {line}"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)
