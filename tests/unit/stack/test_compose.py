"""deploy/docker-compose.yml cannot run here (no Docker engine); check it parses and matches the local stack."""

import re
from pathlib import Path

import yaml

from livedash import config
from livedash.stack import jars

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())


def commands() -> dict[str, str]:
    return {name: " ".join(svc["command"]) for name, svc in compose()["services"].items()}


def test_images_name_the_versions_of_the_local_stack() -> None:
    versions = jars.versions()
    services = compose()["services"]
    assert services["kafka"]["image"] == "apache/kafka:${KAFKA_VERSION}"
    assert services["pinot"]["image"] == services["zookeeper"]["image"] == "apachepinot/pinot:${PINOT_VERSION}"
    # compose reads deploy/.env (beside the file) for those variables; the poms get the same values.
    assert (COMPOSE.parent / ".env") == jars.VERSIONS_FILE
    assert versions["KAFKA_VERSION"].startswith("4.")
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions["PINOT_VERSION"])


def test_it_renders_the_same_templates_with_the_default_config() -> None:
    """Apply each service's sed substitutions to the template it mounts: no placeholder may remain, and the
    ports must be those of config/livedash.yaml."""
    defaults = config.load(ROOT / "config" / "livedash.yaml", environ={})
    for name, cmd in commands().items():
        pairs = re.findall(r"s#\$\$\{(\w+)\}#([^#]*)#g", cmd)
        assert pairs, name
        values = dict(pairs)
        templates = re.findall(r"/livedash/conf/([\w.$-]+)", cmd)
        for template in templates:
            files = (
                [template.replace("$$role", r) for r in ("controller", "broker", "server")]
                if "$$role" in template
                else [template]
            )
            for file in files:
                text = (ROOT / "deploy" / "conf" / file).read_text()
                for key, value in values.items():
                    text = text.replace("${" + key + "}", value)
                assert "${" not in text.replace("${sys:", ""), f"{name}: {file} keeps a placeholder"
        ports = {int(v) for v in values.values() if v.isdigit()}
        assert ports <= set(defaults.ports().values()), (name, ports)
        if "host" in values:
            assert values["host"] == defaults.kafka.host == defaults.pinot.host


def test_every_service_uses_host_networking_and_persistent_volumes() -> None:
    data = compose()
    for name, svc in data["services"].items():
        assert svc["network_mode"] == "host", name
        named = [v.split(":")[0] for v in svc["volumes"] if not v.startswith("./")]
        assert named and all(n in data["volumes"] for n in named), name
        assert "./conf:/livedash/conf:ro" in svc["volumes"]
