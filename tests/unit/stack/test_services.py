"""The rendered server configs bind to the configured host only and keep data under the state dir."""

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from livedash import config
from livedash.stack import services

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def settings() -> Iterator[config.Settings]:
    state = ROOT / ".livedash-test" / f"render-{uuid.uuid4().hex[:8]}"  # state dirs may not live under /tmp
    yield config.load(ROOT / "config" / "test.yaml", environ={"LIVEDASH_STATE_DIR": str(state)})
    shutil.rmtree(state, ignore_errors=True)


def props(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_kafka_properties(settings: config.Settings) -> None:
    kafka = services.Kafka(settings)
    # Formatting storage needs the real classpath; skip it by pretending storage exists.
    (kafka.dir / "data").mkdir(parents=True)
    (kafka.dir / "data" / "meta.properties").write_text("")
    cmd = kafka.command(Path("/usr/bin/java"), "cp")
    p = props(settings.state_dir / "conf" / "kafka-server.properties")
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert p["process.roles"] == "broker,controller"
    assert p["log.dirs"] == str(kafka.dir / "data")
    assert "-Xmx1g" in cmd and cmd[-2] == "kafka.Kafka"
    assert f"-Dlivedash.state={settings.state_dir}" in cmd


def test_pinot_configs_bind_to_host_and_keep_data_in_state_dir(settings: config.Settings) -> None:
    pinot = services.Pinot(settings)
    cmd = pinot.command(Path("/usr/bin/java"), "cp")
    conf = settings.state_dir / "conf"
    controller, broker, server = (props(conf / f"pinot-{r}.conf") for r in ("controller", "broker", "server"))
    # Pinot 0.11 needs controller.port to register the controller (segment uploads go to it).
    assert controller["controller.port"] == "19000"
    assert controller["controller.host"] == "127.0.0.1"
    assert broker["pinot.broker.client.access.protocols.http.host"] == "127.0.0.1"
    assert server["pinot.server.adminapi.access.protocols.http.host"] == "127.0.0.1"
    assert controller["controller.data.dir"] == (settings.state_dir / "pinot" / "controller").as_uri()
    assert server["pinot.server.instance.dataDir"].startswith(str(settings.state_dir))
    assert all(opens in cmd for opens in services.JAVA17_OPENS)
    assert cmd[cmd.index("-zkAddress") + 1] == "127.0.0.1:12181"


def test_the_controller_data_dir_is_a_uri_java_can_parse_from_a_folder_with_a_space() -> None:
    """Pinot 0.11 reads controller.data.dir with java.net.URI: a raw space (a clone in "~/My Projects") made the
    controller fail at start. The rendered value is a percent-encoded file: URI that decodes to the folder."""
    state = ROOT / ".livedash-test" / f"my state {uuid.uuid4().hex[:8]}"
    try:
        settings = config.load(ROOT / "config" / "test.yaml", environ={"LIVEDASH_STATE_DIR": str(state)})
        services.Pinot(settings).command(Path("/usr/bin/java"), "cp")
        uri = props(state / "conf" / "pinot-controller.conf")["controller.data.dir"]
        assert " " not in uri and uri.startswith("file:///")
        assert Path(unquote(urlparse(uri).path)) == state / "pinot" / "controller"
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_zookeeper_binds_to_host(settings: config.Settings) -> None:
    services.ZooKeeper(settings).command(Path("/usr/bin/java"), "cp")
    zoo = props(settings.state_dir / "conf" / "zoo.cfg")
    assert zoo["clientPortAddress"] == "127.0.0.1"
    assert zoo["clientPort"] == "12181"
    assert zoo["dataDir"].startswith(str(settings.state_dir))


def test_every_template_placeholder_is_filled(settings: config.Settings) -> None:
    for svc in services.all_services(settings):
        if isinstance(svc, services.Kafka):
            (svc.dir / "data").mkdir(parents=True)
            (svc.dir / "data" / "meta.properties").write_text("")
        svc.command(Path("/usr/bin/java"), "cp")
    for rendered in (settings.state_dir / "conf").iterdir():
        assert "${" not in rendered.read_text(), rendered


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """0xf8... encodes to "-..." (1 id in 64), which kafka-storage's parser took for an option: a CI run failed so."""
    draws = iter([b"\xf8" + bytes(15), b"\x00" * 16])
    monkeypatch.setattr(services.os, "urandom", lambda n: next(draws))
    assert services.new_cluster_id() == "A" * 22
    monkeypatch.undo()
    ids = [services.new_cluster_id() for _ in range(2_000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
