"""Typed configuration: config/livedash.yaml plus LIVEDASH_* environment overrides.

`load()` returns a frozen `Settings`; any bad value raises `ConfigError` naming the key (as a dotted path)
and, when it came from the environment, the variable that set it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from livedash.errors import ConfigError
from livedash.pipeline.settings import FrozenModel, PipelineSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "livedash.yaml"
ENV_PREFIX = "LIVEDASH_"
ENV_CONFIG = "LIVEDASH_CONFIG"

Port = int
_HEAP = re.compile(r"^[1-9][0-9]*[mMgG]$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _check_port(value: int) -> int:
    if not 1024 <= value <= 65535:
        raise ValueError(f"must be a TCP port between 1024 and 65535, got {value}")
    return value


def _check_heap(value: str) -> str:
    if not _HEAP.match(value):
        raise ValueError(f"must be a JVM heap size such as 512m or 2g, got {value!r}")
    return value


class TopicSettings(FrozenModel):
    name: str
    partitions: int = Field(ge=1, le=10_000)
    retention_hours: float | None = Field(default=None, gt=0)  # None: the broker's default (7 days)
    compact: bool = False  # keep the newest message per key (upsert topics), not every version

    def configs(self) -> dict[str, str]:
        """The topic-level settings `apply` creates the topic with and keeps it at."""
        out = {}
        if self.retention_hours is not None:
            out["retention.ms"] = str(int(self.retention_hours * 3_600_000))
        if self.compact:
            # Closed log segments every 10 minutes become compactable: older versions of a key go away.
            # With a retention as well, keys older than it go too (an upsert tier's rows expire in Pinot anyway).
            policy = "compact,delete" if self.retention_hours is not None else "compact"
            out.update({"cleanup.policy": policy, "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.2"})
        return out

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOPIC.match(value) or value in {".", ".."}:
            raise ValueError(f"must be a Kafka topic name (letters, digits, '.', '_', '-'), got {value!r}")
        return value


class KafkaSettings(FrozenModel):
    host: str = "127.0.0.1"
    port: Port = 9092
    controller_port: Port = 9093
    heap: str = "1g"
    start_timeout_s: float = Field(default=60, gt=0)
    topics: tuple[TopicSettings, ...] = ()

    _port = field_validator("port", "controller_port")(_check_port)
    _heap = field_validator("heap")(_check_heap)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def topic(self, name: str) -> TopicSettings:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise ConfigError(f"config error: kafka.topics: no topic named {name!r} is declared")


class PinotSettings(FrozenModel):
    host: str = "127.0.0.1"
    cluster: str = Field(default="livedash", pattern=r"^[A-Za-z0-9_-]+$")
    zookeeper_port: Port = 2181
    controller_port: Port = 9000
    broker_port: Port = 8099
    server_netty_port: Port = 8098
    server_admin_port: Port = 8097
    heap: str = "2g"
    zookeeper_heap: str = "512m"
    start_timeout_s: float = Field(default=180, gt=0)
    tables: tuple[str, ...] = ()

    _port = field_validator(
        "zookeeper_port", "controller_port", "broker_port", "server_netty_port", "server_admin_port"
    )(_check_port)
    _heap = field_validator("heap", "zookeeper_heap")(_check_heap)

    @property
    def controller_url(self) -> str:
        return f"http://{self.host}:{self.controller_port}"

    @property
    def broker_url(self) -> str:
        return f"http://{self.host}:{self.broker_port}"

    @property
    def server_url(self) -> str:
        return f"http://{self.host}:{self.server_admin_port}"

    @property
    def zookeeper(self) -> str:
        return f"{self.host}:{self.zookeeper_port}"


class DataflowSettings(FrozenModel):
    metrics_port: Port = 3030  # Bytewax's API server: /metrics (Prometheus)
    snapshot_s: int = Field(default=1, ge=1, le=600)  # recovery snapshot interval (whole seconds)

    _port = field_validator("metrics_port")(_check_port)


class DashboardSettings(FrozenModel):
    host: str = "127.0.0.1"
    port: Port = 8501  # Streamlit
    stale_after_s: float = Field(default=30, gt=0)  # the health strip turns red past this
    refresh_floor_s: int = Field(default=1, ge=1, le=30)  # no viewer refreshes faster than this
    default_refresh_s: int = Field(default=5, ge=0, le=30)
    query_timeout_s: float = Field(default=5, gt=0, le=120)
    page_size: int = Field(default=50, ge=1, le=1000)  # raw events per page
    conversion: tuple[str, str] = ("purchase", "page_view")  # KPI: events of the first type per the second
    click_through: tuple[str, str] = ("click", "page_view")

    _port = field_validator("port")(_check_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Settings(FrozenModel):
    state_dir: Path = Path(".livedash")
    config_file: Path | None = None  # set by load(): handed to the processes `up` starts
    # set by load(): the LIVEDASH_* variables it applied (name, raw value), handed to those processes too
    env_overrides: tuple[tuple[str, str], ...] = ()
    kafka: KafkaSettings = KafkaSettings()
    pinot: PinotSettings = PinotSettings()
    dataflow: DataflowSettings = DataflowSettings()
    dashboard: DashboardSettings = DashboardSettings()
    pipeline_file: str = "pipeline.yaml"  # relative to this config file's folder
    pipeline: PipelineSettings

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        return (value if value.is_absolute() else PROJECT_ROOT / value).resolve()

    def state_dir_warning(self) -> str | None:
        """Why the state directory may not keep its data (a clone under /tmp), and what to set; None if fine.
        A warning, not a refusal: the quick start must work from any folder a user clones into."""
        tmp = Path("/tmp").resolve()
        if self.state_dir != tmp and tmp not in self.state_dir.parents:
            return None
        where = f"state_dir in {self.config_file}" if self.config_file else "state_dir in the config file"
        return (f"warning: the state directory {self.state_dir} is under /tmp, which the system may clear (at "
                f"reboot or after some days), and Kafka's and Pinot's data with it; to keep them, set "
                f"LIVEDASH_STATE_DIR=/a/lasting/path (or {where})")  # fmt: skip

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        seen: dict[int, str] = {}
        for key, port in self.ports().items():
            if port in seen:
                raise ValueError(f"{key} and {seen[port]} are both {port}; every service needs its own port")
            seen[port] = key
        names = [t.name for t in self.kafka.topics]
        if len(names) != len(set(names)):
            raise ValueError("kafka.topics names a topic twice")
        for role, topic in self.pipeline.topics.model_dump().items():
            if topic is not None and topic not in names:
                raise ValueError(f"pipeline topic {topic!r} ({role}) is not declared in kafka.topics")
        topics = self.pipeline.topics
        if topics.valid is not None:
            raw, valid = self.kafka.topic(topics.raw).partitions, self.kafka.topic(topics.valid).partitions
            if raw != valid:  # each raw partition's valid events go to the partition of the same number
                raise ValueError(f"kafka topic {topics.valid!r} ({valid} partitions) needs as many partitions as "
                                 f"{topics.raw!r} ({raw})")  # fmt: skip
        if len({topics.aggregates, topics.history, topics.live}) == 3:  # (tests and benchmarks may share topics)
            retention = self.pipeline.retention
            for topic, hours in ((topics.aggregates, retention.recent_h), (topics.history, retention.history_h),
                                 (topics.live, retention.live_min / 60)):  # fmt: skip
                declared = self.kafka.topic(topic).retention_hours
                if declared is not None and declared != hours:
                    raise ValueError(f"kafka topic {topic!r} keeps {declared:g} h but its tier keeps {hours:g} h "
                                     "(pipeline retention): make them agree")  # fmt: skip
        return self

    def ports(self) -> dict[str, int]:
        """Every listening port, keyed by its config path, for the preflight check."""
        return {
            "kafka.port": self.kafka.port,
            "kafka.controller_port": self.kafka.controller_port,
            "pinot.zookeeper_port": self.pinot.zookeeper_port,
            "pinot.controller_port": self.pinot.controller_port,
            "pinot.broker_port": self.pinot.broker_port,
            "pinot.server_netty_port": self.pinot.server_netty_port,
            "pinot.server_admin_port": self.pinot.server_admin_port,
            "dataflow.metrics_port": self.dataflow.metrics_port,
            "dashboard.port": self.dashboard.port,
        }


def _env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """LIVEDASH_KAFKA__PORT=19092 -> {("kafka", "port"): ("LIVEDASH_KAFKA__PORT", 19092)}.

    Not pydantic-settings (tried for issue 15): it ignores a misspelt LIVEDASH_ variable where this refuses it
    (an unknown key), and its errors cannot name the variable that set a bad value; both are tested."""
    out: dict[tuple[str, ...], tuple[str, Any]] = {}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var in (ENV_CONFIG, "LIVEDASH_MARKER"):
            continue
        path = tuple(part.lower() for part in var[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            raise ConfigError(f"config error: {var}: malformed variable name (use LIVEDASH_SECTION__KEY)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        out[path] = (var, value)
    return out


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def load(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file, apply environment overrides, validate. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    file = Path(path or environ.get(ENV_CONFIG) or DEFAULT_CONFIG)
    if not file.is_absolute():
        file = (Path.cwd() / file) if (Path.cwd() / file).exists() else PROJECT_ROOT / file
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config error: {file}: file not found (set {ENV_CONFIG} or create it)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config error: {file}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {file}: the top level must be a mapping")
    overrides = _env_overrides(environ)
    pipeline_override = overrides.get(("pipeline_file",))
    if "pipeline" not in data:
        name = pipeline_override[1] if pipeline_override else data.get("pipeline_file", "pipeline.yaml")
        pipeline_file = file.parent / str(name)
        try:
            data["pipeline"] = yaml.safe_load(pipeline_file.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config error: pipeline_file: {pipeline_file} not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config error: {pipeline_file}: not valid YAML: {exc}".replace("\n", " ")) from None
    for key_path, (_, value) in overrides.items():  # after the pipeline file, so LIVEDASH_PIPELINE__... apply
        _apply(data, key_path, value)
    data["config_file"] = str(file.resolve())
    data["env_overrides"] = [(var, environ[var]) for var, _ in overrides.values()]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file, overrides)) from None


def _describe(exc: ValidationError, file: Path, overrides: dict[tuple[str, ...], tuple[str, Any]]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against config/livedash.yaml)"
        source = next((var for p, (var, _) in overrides.items() if p == loc[: len(p)]), None)
        origin = f" (set by {source})" if source else f" (in {file.name})"
        got = err.get("input")
        shown = "" if err["type"] in {"value_error", "extra_forbidden"} or isinstance(got, dict) else f", got {got!r}"
        lines.append(f"config error: {key}: {msg}{shown}{origin}")
    return "\n".join(lines)
