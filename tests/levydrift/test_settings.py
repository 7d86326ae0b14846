"""The settings loader: TOML, environment overrides, one-line errors naming the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from levydrift.errors import ConfigError
from levydrift.settings import AdminSettings, load

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "levydrift.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    settings = load(AdminSettings, None, environ={})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topics.records == "levy.records"
    assert settings.topics.model_versions == "levy.model-versions"


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, """
[kafka]
bootstrap_servers = "broker-a:9092"
client = { "security.protocol" = "SASL_SSL", "sasl.mechanism" = "PLAIN" }
[topics]
records = "county.levies"
records_partitions = 12
""")
    settings = load(AdminSettings, path, environ={
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": "broker-b:9092",
        "LEVYDRIFT_TOPICS_RECORDS_PARTITIONS": "24",
        "LEVYDRIFT_KAFKA_CLIENT_SASL_USERNAME": "levy",
    })
    assert settings.kafka.bootstrap_servers == "broker-b:9092"
    assert settings.topics.records == "county.levies"
    assert settings.topics.records_partitions == 24
    client = settings.kafka.client_config()
    assert client["security.protocol"] == "SASL_SSL"
    assert client["sasl.mechanism"] == "PLAIN"
    assert client["sasl.username"] == "levy"
    assert client["bootstrap.servers"] == "broker-b:9092"


def test_kafka_bootstrap_servers_fallback_variable() -> None:
    settings = load(AdminSettings, None, environ={"KAFKA_BOOTSTRAP_SERVERS": "elsewhere:9092"})
    assert settings.kafka.bootstrap_servers == "elsewhere:9092"
    preferred = load(AdminSettings, None, environ={
        "KAFKA_BOOTSTRAP_SERVERS": "elsewhere:9092",
        "LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS": "preferred:9092"})
    assert preferred.kafka.bootstrap_servers == "preferred:9092"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[topics]\nrecords = "from-file"\n')
    settings = load(AdminSettings, None, environ={"LEVYDRIFT_CONFIG": str(path)})
    assert settings.topics.records == "from-file"


@pytest.mark.parametrize(("text", "environ", "fragment"), [
    ("[topics]\nrecord = 'x'\n", {}, "unknown key topics.record"),
    ("[topics]\nrecords_partitions = 'six'\n", {}, "topics.records_partitions must be an integer"),
    ("[topics]\nrecords_partitions = 0\n", {}, "topics.*_partitions must be >= 1"),
    ("[kafka]\nbootstrap_servers = 9092\n", {}, "kafka.bootstrap_servers must be a string"),
    ("[nonsense]\nx = 1\n", {}, "unknown section [nonsense]"),
    ("[kafka\n", {}, "is not valid TOML"),
    ("", {"LEVYDRIFT_TOPICS_RECORDS_PARTITIONS": "many"}, "is not an integer"),
    ("", {"LEVYDRIFT_TOPICS_RECORD": "x"}, "unknown setting LEVYDRIFT_TOPICS_RECORD"),
    ("[kafka]\nclient = { \"group.id\" = \"x\" }\n", {}, "kafka.client.group.id is set by"),
    ("[topics]\ndrift_events = 'levy.records'\n", {}, "two topics share one name"),
])
def test_bad_configuration_is_one_line_naming_the_key(
        tmp_path: Path, text: str, environ: dict[str, str], fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load(AdminSettings, path, environ=environ)
    message = str(raised.value)
    assert fragment in message
    assert "\n" not in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(AdminSettings, tmp_path / "absent.toml", environ={})


def test_variables_of_other_services_are_ignored() -> None:
    # One environment configures the whole stack: a section this service lacks is not its
    # business; LEVYDRIFT_CONFIG is the config file's path, not a setting.
    settings = load(AdminSettings, None, environ={"LEVYDRIFT_TRAINER_MODEL_NAME": "x",
                                                  "LEVYDRIFT_CONSUMER_BATCH_SIZE": "7",
                                                  "LEVYDRIFT_CONFIG": ""})
    assert settings.topics.records == "levy.records"


@pytest.mark.parametrize("variable", [
    "LEVYDRIFT_METRIC_PORT", "LEVYDRIFT_TOPIC_RECORDS", "LEVYDRIFT_CONFIGURED", "LEVYDRIFT_X",
])
def test_a_variable_naming_no_known_section_is_refused(variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(AdminSettings, None, environ={variable: "9109"})
    message = str(raised.value)
    assert message.startswith(f"unknown setting {variable}: no section ")
    assert "known sections: " in message and "metrics" in message and "topics" in message
    assert "\n" not in message


def test_a_variable_naming_a_section_but_no_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting LEVYDRIFT_METRICS: name a key"):
        load(AdminSettings, None, environ={"LEVYDRIFT_METRICS": "9109"})


@pytest.mark.parametrize("name", ["PORT", "STATE", "CACHE", "HEAP", "START_TIMEOUT"])
def test_the_old_local_broker_variables_point_to_their_new_names(name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(AdminSettings, None, environ={f"LEVYDRIFT_KAFKA_{name}": "x"})
    message = str(raised.value)
    assert f"LEVYDRIFT_KAFKA_{name} is now LOCAL_KAFKA_{name}" in message
    assert "\n" not in message


def test_one_registry_root_serves_every_service(tmp_path: Path) -> None:
    from consumer.config import ConsumerSettings
    from levydrift.commands.check_result import CheckSettings
    from trainer.config import TrainerSettings

    path = write(tmp_path, '[registry]\nroot = "/srv/models"\n')
    for service in (ConsumerSettings, TrainerSettings, CheckSettings):
        assert load(service, path, environ={}).registry.root == "/srv/models"
        assert load(service, None, environ={"LEVYDRIFT_REGISTRY_ROOT": "/x"}).registry.root == "/x"


@pytest.mark.parametrize("section", ["consumer", "trainer"])
def test_the_old_registry_root_keys_point_to_registry_root(tmp_path: Path, section: str) -> None:
    from consumer.config import ConsumerSettings
    from trainer.config import TrainerSettings

    service = ConsumerSettings if section == "consumer" else TrainerSettings
    path = write(tmp_path, f'[{section}]\nregistry_root = "models"\n')
    with pytest.raises(ConfigError, match=rf"^{section}.registry_root is now registry.root .*"
                                          r"move it to \[registry\]$"):
        load(service, path, environ={})
    variable = f"LEVYDRIFT_{section.upper()}_REGISTRY_ROOT"
    with pytest.raises(ConfigError, match=f"^{variable} is now LEVYDRIFT_REGISTRY_ROOT"):
        load(service, None, environ={variable: "models"})


def test_a_moved_key_is_named_among_other_unknown_keys(tmp_path: Path) -> None:
    from trainer.config import TrainerSettings

    path = write(tmp_path, '[trainer]\nbatch = 1\nregistry_root = "models"\n')
    with pytest.raises(ConfigError, match=r"^trainer.registry_root is now registry.root"):
        load(TrainerSettings, path, environ={})


def test_example_config_in_deploy_loads() -> None:
    example = REPO / "deploy" / "levydrift.example.toml"
    if not example.exists():
        pytest.fail("deploy/levydrift.example.toml is missing")
    settings = load(AdminSettings, example, environ={})
    assert settings.topics.records
    from consumer.config import ConsumerSettings
    from levydrift.commands.check_result import CheckSettings
    from levydrift.commands.daily import DailySettings
    from levydrift.commands.simulate import SimulatorSettings
    from trainer.config import TrainerSettings

    for service in (ConsumerSettings, TrainerSettings, CheckSettings, SimulatorSettings,
                    DailySettings):
        assert load(service, example, environ={}).kafka.bootstrap_servers


def test_a_section_validation_error_from_another_package_is_a_config_error() -> None:
    from consumer.config import ConsumerSettings

    with pytest.raises(ConfigError) as raised:
        load(ConsumerSettings, None, environ={"LEVYDRIFT_DETECTORS_FALSE_ALARM_RATE": "2"})
    assert str(raised.value).startswith("detectors.false_alarm_rate")


def test_consumer_timeouts_that_cannot_work_together_are_refused() -> None:
    from consumer.config import ConsumerSettings

    with pytest.raises(ConfigError, match="restore_timeout_s must exceed"):
        load(ConsumerSettings, None, environ={"LEVYDRIFT_CONSUMER_RESTORE_TIMEOUT_S": "30"})
    settings = load(ConsumerSettings, None, environ={})
    assert settings.consumer.restore_timeout_s > settings.consumer.transaction_timeout_s


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("LEVYDRIFT_DETECTORS_SEGMENT_BY", "countie", "segment_by names 'countie', which no levy "
                                                  "record has (did you mean county?)"),
    ("LEVYDRIFT_DETECTORS_NUMERIC_SIGNALS", "assessed_value,assesed_value",
     "did you mean assessed_value?"),
    ("LEVYDRIFT_DETECTORS_CATEGORICAL_SIGNALS", "county,districts", "categorical_signals "
                                                                     "names 'districts'"),
    ("LEVYDRIFT_DETECTORS_PERFORMANCE_SIGNALS", "abs_eror", "did you mean abs_error?"),
    ("LEVYDRIFT_DETECTORS_SEGMENT_BY", "county,parcel_id", "segment_by names 'parcel_id'"),
    ("LEVYDRIFT_DETECTORS_STRATIFY_BY", "tax_distrct", "stratify_by names 'tax_distrct', "
                                                       "which no levy record has (did you "
                                                       "mean tax_district?)"),
    ("LEVYDRIFT_DETECTORS_STRATIFY_BY", "record_id", "stratify_by names 'record_id'"),
])
def test_a_detector_field_no_record_has_is_refused_naming_the_closest(
        variable: str, value: str, message: str) -> None:
    """A misspelt signal was never watched (no drift, ever) and a misspelt segment field put
    every record in one segment, both without a word."""
    from consumer.config import ConsumerSettings
    from levydrift.commands.check_result import CheckSettings
    from levydrift.commands.daily import DailySettings

    for service in (ConsumerSettings, CheckSettings, DailySettings):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("?", r"\?")):
            load(service, None, environ={variable: value})


def test_the_default_detector_fields_are_all_record_fields() -> None:
    from consumer.config import ConsumerSettings

    settings = load(ConsumerSettings, None,
                    environ={"LEVYDRIFT_DETECTORS_SEGMENT_BY": "county,property_class",
                             "LEVYDRIFT_DETECTORS_STRATIFY_BY": "tax_district"})
    assert settings.detectors.segment_by == ("county", "property_class")
    assert settings.detectors.strata_fields() == ("tax_district",)
