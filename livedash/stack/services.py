"""What each server of the local stack is: its config files, its command line and its health check."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import requests

from livedash import prometheus
from livedash.config import PROJECT_ROOT, Settings
from livedash.dataflow.source import recovery_name
from livedash.errors import LivedashError
from livedash.pinot.client import PinotClient, PinotError
from livedash.stack.jars import DEPLOY
from livedash.stack.process import marker, marker_env, tail

CONF = DEPLOY / "conf"

# The module opens Pinot's own launch script adds on Java 9+; without them netty and the off-heap memory code
# fail reflectively on Java 17.
JAVA17_OPENS = [
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.grpc.netty.shaded.io.netty.tryReflectionSetAccessible=true",
]


def render(template: str, dest: Path, values: dict[str, object]) -> Path:
    """Fill ${key} placeholders of deploy/conf/<template>; an unknown placeholder is a bug, so it raises."""
    text = Template((CONF / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def new_cluster_id() -> str:
    """A random KRaft cluster id (16 bytes, URL-safe base64), never starting with "-" as Kafka's own never do."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


class Service:
    """One JVM of the stack. Subclasses name its ports and say how to start and probe it."""

    name: str
    artifact: str  # the classpath it runs on: "kafka" or "pinot"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir

    @property
    def ports(self) -> dict[str, int]:  # config key -> port
        raise NotImplementedError

    @property
    def timeout_s(self) -> float:
        raise NotImplementedError

    def command(self, java: Path, classpath: str) -> list[str]:
        """The command line; writes the service's config files first."""
        raise NotImplementedError

    def health(self) -> Health:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The process environment (None: inherit ours)."""
        return None

    @property
    def dir(self) -> Path:
        return self.state_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    @property
    def out_file(self) -> Path:
        """stdout/stderr of the JVM (a crash before logging starts lands here)."""
        return self.state_dir / "logs" / f"{self.name}.out"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    def jvm(self, java: Path, heap: str, min_heap: str) -> list[str]:
        return [
            str(java),
            f"-Xmx{heap}",
            f"-Xms{min_heap}",
            "-XX:+UseG1GC",
            "-XX:+ExitOnOutOfMemoryError",
            *marker(self.name, self.state_dir),
            f"-Dlog4j2.configurationFile={CONF / 'log4j2.properties'}",
            f"-Dlivedash.logfile={self.log_file}",
        ]


class Kafka(Service):
    name = "kafka"
    artifact = "kafka"

    @property
    def ports(self) -> dict[str, int]:
        k = self.settings.kafka
        return {"kafka.port": k.port, "kafka.controller_port": k.controller_port}

    @property
    def timeout_s(self) -> float:
        return self.settings.kafka.start_timeout_s

    def command(self, java: Path, classpath: str) -> list[str]:
        k = self.settings.kafka
        data = self.dir / "data"
        props = render(
            "kafka-server.properties",
            self.state_dir / "conf" / "kafka-server.properties",
            {
                "host": k.host,
                "advertised_host": k.host,
                "port": k.port,
                "controller_port": k.controller_port,
                "data_dir": data,
            },
        )
        if not (data / "meta.properties").exists():
            self._format(java, classpath, props)
        return [
            *self.jvm(java, k.heap, k.heap),
            f"-Dkafka.logs.dir={self.dir / 'logs'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ]

    def _format(self, java: Path, classpath: str, props: Path) -> None:
        """Format KRaft storage once, with a cluster id kept beside the data."""
        id_file = self.dir / "cluster.id"
        if not id_file.exists():
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(new_cluster_id() + "\n")
        cmd = [
            str(java),
            # A fixed small heap: the JVM's default (a quarter of RAM) can fail to reserve on a crowded machine.
            "-Xmx256m",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            # One argument with "=": an id starting with "-" (1 in 64 of them) would otherwise read as an option.
            f"--cluster-id={id_file.read_text().strip()}",
            "--config",
            str(props),
            "--standalone",
            "--ignore-formatted",
        ]
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        with self.out_file.open("ab") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120)
        if proc.returncode != 0:
            raise LivedashError(
                f"formatting Kafka storage in {self.dir / 'data'} failed (exit {proc.returncode}); "
                f"last lines of {self.out_file}:\n{tail(self.out_file)}"
            )

    def health(self) -> Health:
        # A real metadata request: the broker must answer with its cluster id and list itself.
        from confluent_kafka.admin import AdminClient

        bootstrap = self.settings.kafka.bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000, "log_level": 0})
        try:
            meta = admin.list_topics(timeout=4)
        except Exception as exc:  # KafkaException carries librdkafka's reason
            return Health(False, f"{bootstrap}: metadata request failed ({exc})")
        return Health(bool(meta.brokers), f"{bootstrap}: cluster {meta.cluster_id}, {len(meta.topics)} topics")


class ZooKeeper(Service):
    name = "zookeeper"
    artifact = "pinot"  # ZooKeeper's jars come with Pinot's classpath

    @property
    def ports(self) -> dict[str, int]:
        return {"pinot.zookeeper_port": self.settings.pinot.zookeeper_port}

    @property
    def timeout_s(self) -> float:
        return 60.0

    def command(self, java: Path, classpath: str) -> list[str]:
        p = self.settings.pinot
        cfg = render(
            "zoo.cfg",
            self.state_dir / "conf" / "zoo.cfg",
            {"data_dir": self.dir / "data", "port": p.zookeeper_port, "host": p.host},
        )
        # ZooKeeper's own main, not PinotAdministrator StartZookeeper, which binds every interface.
        return [
            *self.jvm(java, p.zookeeper_heap, "128m"),
            "-cp",
            classpath,
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            str(cfg),
        ]

    def health(self) -> Health:
        host, port = self.settings.pinot.host, self.settings.pinot.zookeeper_port
        try:
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.sendall(b"ruok")
                reply = sock.recv(16)
        except OSError as exc:
            return Health(False, f"{host}:{port}: {exc.strerror or exc}")
        return Health(reply == b"imok", f"{host}:{port}: ruok -> {reply.decode(errors='replace') or 'no answer'}")


class Pinot(Service):
    """Controller, broker and server in one JVM (Pinot's service manager)."""

    name = "pinot"
    artifact = "pinot"

    @property
    def ports(self) -> dict[str, int]:
        p = self.settings.pinot
        return {
            "pinot.controller_port": p.controller_port,
            "pinot.broker_port": p.broker_port,
            "pinot.server_netty_port": p.server_netty_port,
            "pinot.server_admin_port": p.server_admin_port,
        }

    @property
    def timeout_s(self) -> float:
        return self.settings.pinot.start_timeout_s

    def command(self, java: Path, classpath: str) -> list[str]:
        p = self.settings.pinot
        values = {
            "cluster": p.cluster,
            "zookeeper": p.zookeeper,
            "host": p.host,
            "data_dir": self.dir,
            "data_uri": self.dir.absolute().as_uri(),
            "controller_port": p.controller_port,
            "broker_port": p.broker_port,
            "server_netty_port": p.server_netty_port,
            "server_admin_port": p.server_admin_port,
        }
        confs = [
            render(f"pinot-{role}.conf", self.state_dir / "conf" / f"pinot-{role}.conf", values)
            for role in ("controller", "broker", "server")
        ]
        return [
            *self.jvm(java, p.heap, "512m"),
            "-XX:MaxDirectMemorySize=2g",
            *JAVA17_OPENS,
            "-Dpinot.admin.system.exit=true",
            "-cp",
            classpath,
            "org.apache.pinot.tools.admin.PinotAdministrator",
            "StartServiceManager",
            "-zkAddress",
            p.zookeeper,
            "-clusterName",
            p.cluster,
            "-bootstrapConfigPaths",
            *map(str, confs),
        ]

    def health(self) -> Health:
        p = self.settings.pinot
        checks = {
            "controller": _http_ok(f"{p.controller_url}/health"),
            "broker": _http_ok(f"{p.broker_url}/health"),
            "server": _http_ok(f"http://{p.host}:{p.server_admin_port}/health"),
        }
        ok = all(h.ok for h in checks.values())
        return Health(ok, "; ".join(f"{role} {'OK' if h.ok else h.detail}" for role, h in checks.items()))

    def segments(self) -> Health:
        """Whether every segment of every table is served as the controller intends (external view = ideal
        state). The JVM answers /health seconds before a restarted server has loaded its segments."""
        pinot = PinotClient.of(self.settings.pinot, timeout_s=10.0, slack_s=0.0)
        try:
            tables = pinot.tables(timeout_s=5)
            pending: list[str] = []
            total = 0
            for table in tables:
                ideal = pinot.ideal_state(table, timeout_s=5)
                view = pinot.external_view(table, timeout_s=5)
                for kind, segs in ideal.items():
                    served = (view or {}).get(kind) or {}
                    for seg, replicas in (segs or {}).items():
                        total += 1
                        if served.get(seg) != replicas:
                            pending.append(seg)
        except PinotError as exc:
            return Health(False, f"segment states unavailable ({exc.reason})")
        if pending:
            return Health(False, f"{len(pending)} of {total} segments not yet served, e.g. {pending[0]}")
        # The broker learns of served segments a moment later: ask it, as a user would.
        for table in tables:
            try:
                pinot.query(f"SELECT COUNT(*) FROM {table}")
            except PinotError as exc:
                if exc.query_exception:
                    return Health(False, f"broker cannot yet query {table}: {exc.detail[:160]}")
                return Health(False, f"broker query on {table} failed ({exc.reason})")
        return Health(True, f"{len(tables)} tables, {total} segments served and queryable")


def _http_ok(url: str) -> Health:
    try:
        resp = requests.get(url, timeout=3)
    except requests.RequestException as exc:
        return Health(False, f"{url}: {type(exc).__name__}")
    return Health(resp.status_code == 200, f"{url}: {resp.status_code} {resp.text.strip()[:80]}")


def child_environment(settings: Settings, name: str) -> dict[str, str]:
    """Our environment for a Python process `up` starts, with the config file and exactly the LIVEDASH_*
    overrides these settings were loaded with, so the child loads the very same settings (ports, state dir,
    topics). Before, only LIVEDASH_CONFIG went along: a port override gave a dataflow on the file's port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDASH_")}
    env.update(settings.env_overrides)
    env.update(marker_env(name, settings.state_dir))
    env["LIVEDASH_CONFIG"] = str(settings.config_file or "")
    return env


class Dataflow(Service):
    """The aggregation dataflow (`python -m bytewax.run dataflows.aggregate:flow`) with recovery snapshots."""

    name = "dataflow"
    artifact = ""  # a Python process: no jars

    @property
    def ports(self) -> dict[str, int]:
        return {"dataflow.metrics_port": self.settings.dataflow.metrics_port}

    @property
    def timeout_s(self) -> float:
        return 60.0

    @property
    def log_file(self) -> Path:
        return self.out_file  # Python logging goes to stderr

    @property
    def recovery_dir(self) -> Path:
        # Named after the state format: a release that changes it starts a fresh store (and re-reads the raw
        # topic from its start, which the versioned upserts make harmless) instead of failing on the old one.
        return self.state_dir / "recovery" / recovery_name(self.settings.pipeline)

    def command(self, java: Path, classpath: str) -> list[str]:
        if not any(self.recovery_dir.glob("part-*.sqlite3")):  # created once; kept across restarts
            self.recovery_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(self.recovery_dir), "1"], check=True,
                           capture_output=True)  # fmt: skip
        s = self.settings.dataflow
        return [sys.executable, "-m", "bytewax.run", "dataflows.aggregate:flow", "-r", str(self.recovery_dir),
                "-s", str(s.snapshot_s), "-b", "0"]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = child_environment(self.settings, self.name)
        env["BYTEWAX_DATAFLOW_API_ENABLED"] = "1"
        env["BYTEWAX_DATAFLOW_API_PORT"] = str(self.settings.dataflow.metrics_port)
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        return env

    def health(self) -> Health:
        url = f"http://127.0.0.1:{self.settings.dataflow.metrics_port}/metrics"
        try:
            samples = prometheus.scrape(url, timeout_s=3)
        except prometheus.ScrapeError as exc:
            return Health(False, f"{url}: {exc.reason}")
        lag = prometheus.total(samples, "livedash_consumer_lag_events")
        return Health(True, f"metrics {url}, consumer lag {lag:.0f} events")


class Dashboard(Service):
    """The Streamlit dashboard (`streamlit run dashboard/app.py`)."""

    name = "dashboard"
    artifact = ""  # a Python process: no jars

    @property
    def ports(self) -> dict[str, int]:
        return {"dashboard.port": self.settings.dashboard.port}

    @property
    def timeout_s(self) -> float:
        return 60.0

    @property
    def log_file(self) -> Path:
        return self.out_file

    def command(self, java: Path, classpath: str) -> list[str]:
        d = self.settings.dashboard
        return [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "dashboard" / "app.py"),
                "--server.address", d.host, "--server.port", str(d.port), "--server.headless", "true",
                "--browser.gatherUsageStats", "false"]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = child_environment(self.settings, self.name)
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        return env

    def health(self) -> Health:
        health = _http_ok(f"{self.settings.dashboard.url}/_stcore/health")
        return Health(health.ok, f"{self.settings.dashboard.url} ({health.detail})")


def all_services(settings: Settings) -> list[Service]:
    """In start order; stop in reverse."""
    return [Kafka(settings), ZooKeeper(settings), Pinot(settings)]
