"""Kafka and Pinot classpaths, resolved from Maven Central once and cached.

Maven writes the resolved classpath to <state>/classpath/<name>-<version>.txt; later runs read that file and
call Maven only when a listed jar has gone (for example after the Maven cache was wiped).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from livedash.config import PROJECT_ROOT
from livedash.errors import LivedashError
from livedash.stack.toolchain import require_maven

DEPLOY = PROJECT_ROOT / "deploy"
VERSIONS_FILE = DEPLOY / ".env"


def versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KAFKA_VERSION and PINOT_VERSION from deploy/.env, the single source shared with docker compose."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Artifact:
    name: str  # "kafka" or "pinot": deploy/local/<name>/pom.xml
    version: str

    @property
    def pom(self) -> Path:
        return DEPLOY / "local" / self.name / "pom.xml"

    def cache_file(self, state_dir: Path) -> Path:
        """Named by version and pom content, so editing the pom resolves again."""
        digest = hashlib.sha256(self.pom.read_bytes()).hexdigest()[:12]
        return state_dir / "classpath" / f"{self.name}-{self.version}-{digest}.txt"


def artifacts() -> dict[str, Artifact]:
    v = versions()
    return {"kafka": Artifact("kafka", v["KAFKA_VERSION"]), "pinot": Artifact("pinot", v["PINOT_VERSION"])}


def cached_classpath(artifact: Artifact, state_dir: Path) -> str | None:
    cp_file = artifact.cache_file(state_dir)
    if not cp_file.exists():
        return None
    classpath = cp_file.read_text().strip()
    if classpath and all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
        return classpath
    return None


def resolve(artifact: Artifact, state_dir: Path, log: Path) -> str:
    """The artifact's classpath, downloading through Maven only when not cached."""
    classpath = cached_classpath(artifact, state_dir)
    if classpath:
        return classpath
    mvn = require_maven()
    cp_file = artifact.cache_file(state_dir)
    cp_file.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(mvn),
        "-B",
        "-f",
        str(artifact.pom),
        "dependency:build-classpath",
        f"-D{artifact.name}.version={artifact.version}",
        f"-Dmdep.outputFile={cp_file}",
    ]
    with log.open("ab") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not cp_file.exists():
        reason = _maven_error(log)
        raise LivedashError(
            f"download of {artifact.name} {artifact.version} from Maven Central failed ({reason}); "
            f"check the network or proxy, then run `livedash up` again (full log: {log})"
        )
    return cp_file.read_text().strip()


def _maven_error(log: Path) -> str:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("[ERROR]") and len(line) > 10 and "Help 1" not in line and "-e switch" not in line:
            text = line.removeprefix("[ERROR]").strip()
            return text[:300]
    return "see the log"
