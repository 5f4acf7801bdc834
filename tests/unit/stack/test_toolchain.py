import os
from pathlib import Path

import pytest

from livedash.errors import LivedashError
from livedash.stack import toolchain


def fake_java(folder: Path, version_line: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return java


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
    ],
)
def test_java_major_version(tmp_path: Path, line: str, major: int) -> None:
    assert toolchain.java_major(fake_java(tmp_path, line)) == major


def test_old_java_is_refused_with_what_to_do(tmp_path: Path) -> None:
    fake_java(tmp_path / "bin", 'openjdk version "11.0.2" 2019-01-15')
    with pytest.raises(LivedashError) as exc:
        toolchain.require_java({"PATH": str(tmp_path / "bin")})
    assert "Java 11 found" in str(exc.value)
    assert "Java 17+" in str(exc.value)


def test_java_home_wins_over_path(tmp_path: Path) -> None:
    fake_java(tmp_path / "home" / "bin", 'openjdk version "21.0.1"')
    fake_java(tmp_path / "path", 'openjdk version "11.0.2"')
    java = toolchain.require_java({"JAVA_HOME": str(tmp_path / "home"), "PATH": str(tmp_path / "path")})
    assert java == tmp_path / "home" / "bin" / "java"


def test_missing_java_and_maven_say_how_to_install(tmp_path: Path) -> None:
    empty = str(tmp_path)
    with pytest.raises(LivedashError, match="Java not found: install a JDK 17"):
        toolchain.require_java({"PATH": empty})
    with pytest.raises(LivedashError, match=r"Maven not found.*apt-get install maven"):
        toolchain.require_maven({"PATH": empty})


def test_real_java_on_this_machine_is_new_enough() -> None:
    java = toolchain.require_java(dict(os.environ))
    assert toolchain.java_major(java) >= 17
