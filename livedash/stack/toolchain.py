"""Java and Maven: found, version-checked, and explained in one line when missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from livedash.errors import LivedashError

MIN_JAVA = 17


def find_java(environ: dict[str, str] | None = None) -> Path:
    """The java binary: $JAVA_HOME/bin/java when set, else the first on PATH."""
    env = os.environ if environ is None else environ
    home = env.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return Path(home) / "bin" / "java"
    found = shutil.which("java", path=env.get("PATH"))
    if not found:
        raise LivedashError(
            f"Java not found: install a JDK {MIN_JAVA}+ (Debian: apt-get install openjdk-17-jdk-headless) "
            "or set JAVA_HOME"
        )
    return Path(found)


def java_major(java: Path) -> int:
    """The major version `java -version` reports (1.8 -> 8, 17.0.15 -> 17)."""
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise LivedashError(f"Java at {java} cannot run ({exc}): install a JDK {MIN_JAVA}+ or fix JAVA_HOME") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise LivedashError(f"cannot read the version of {java}: install a JDK {MIN_JAVA}+ or fix JAVA_HOME")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java(environ: dict[str, str] | None = None) -> Path:
    java = find_java(environ)
    major = java_major(java)
    if major < MIN_JAVA:
        raise LivedashError(
            f"Java {major} found at {java}, but Kafka 4 and Pinot need Java {MIN_JAVA}+: "
            "install openjdk-17-jdk-headless (or newer) and put it first on PATH or in JAVA_HOME"
        )
    return java


def require_maven(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    found = shutil.which("mvn", path=env.get("PATH"))
    if not found:
        raise LivedashError(
            "Maven not found, and it is needed once to download the Kafka and Pinot jars: "
            "install it (Debian: apt-get install maven) and run `livedash up` again"
        )
    return Path(found)
