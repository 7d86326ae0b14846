"""Settings: one typed object per service, from a TOML file and ``LEVYDRIFT_*`` variables.

A service declares its settings as a dataclass whose fields are *sections* (dataclasses
themselves). ``load(ServiceSettings, path)`` reads the TOML file, overlays environment variables
(``LEVYDRIFT_<SECTION>_<KEY>``, e.g. ``LEVYDRIFT_KAFKA_BOOTSTRAP_SERVERS``), checks every key and
type, and raises ``ConfigError`` with a one-line message naming the bad key.

Sections a service does not use may still appear in the shared file (one file configures the
whole stack), but a top-level table that no service knows is an error, as is an unknown key inside
a section the service reads. The same holds for variables: ``LEVYDRIFT_TRAINER_...`` is ignored
by a service without a trainer section, while ``LEVYDRIFT_METRIC_PORT`` (no such section) is an
error. ``LEVYDRIFT_CONFIG`` (the file's path) is the one variable that is not a setting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from levydrift.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")  # a settings dataclass

ENV_PREFIX = "LEVYDRIFT_"
CONFIG_PATH_VARIABLE = "LEVYDRIFT_CONFIG"
BOOTSTRAP_FALLBACK_VARIABLE = "KAFKA_BOOTSTRAP_SERVERS"
# LEVYDRIFT_* variables that are not <SECTION>_<KEY> settings.
# (LEVYDRIFT_CRASH_AT: the fault-injection point of levydrift.faults, set only by tests.)
NON_SETTING_VARIABLES = {CONFIG_PATH_VARIABLE, "LEVYDRIFT_CRASH_AT"}
# The local broker script's variables once lived in this namespace (deploy/kafka/local-kafka).
RENAMED_VARIABLES = {f"LEVYDRIFT_KAFKA_{name}": f"LOCAL_KAFKA_{name}"
                     for name in ("PORT", "STATE", "CACHE", "HEAP", "START_TIMEOUT")}

# Keys that moved: the old name gets a one-line error naming the new one.
MOVED_KEYS = {"consumer.registry_root": "registry.root", "trainer.registry_root": "registry.root"}

# Every top-level table any service reads; the shared file may hold all of them.
KNOWN_SECTIONS = {
    "kafka", "topics", "consumer", "trainer", "detectors", "metrics", "registry",
    "simulator", "logging", "schedule", "check", "notify",
}


@dataclass(frozen=True)
class KafkaSettings:
    """Connection to the cluster. ``client`` passes librdkafka properties through unchanged
    (``security.protocol``, ``sasl.mechanism``, ``ssl.ca.location``, ...)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client: dict[str, str] = field(default_factory=dict)
    request_timeout_s: float = 10.0

    def validate(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("kafka.bootstrap_servers is empty: set host:port[,host:port]")
        if self.request_timeout_s <= 0:
            raise ConfigError("kafka.request_timeout_s must be > 0")
        reserved = {"bootstrap.servers", "group.id", "transactional.id", "enable.auto.commit"}
        clash = sorted(reserved & set(self.client))
        if clash:
            raise ConfigError(
                f"kafka.client.{clash[0]} is set by levy-drift itself; remove it from kafka.client"
            )

    def client_config(self, defaults: Mapping[str, Any] | None = None,
                      **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration: bootstrap servers, ``defaults`` (which pass-through
        properties replace), pass-through properties, overrides."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        config.update(defaults or {})
        config.update(self.client)
        config.update(overrides)
        return config


@dataclass(frozen=True)
class TopicSettings:
    """Topic names and layout. The defaults are the project's topics."""

    records: str = "levy.records"
    dead_letters: str = "levy.records.dlq"
    drift_events: str = "levy.drift-events"
    model_versions: str = "levy.model-versions"
    detector_state: str = "levy.detector-state"
    # Actual levies, keyed by parcel_id and co-partitioned with records (same partition count).
    labels: str = "levy.labels"
    # The consumer's pending predictions (compacted; one partition per records partition).
    join_changelog: str = "levy.join-changelog"
    records_partitions: int = 6
    other_partitions: int = 1
    replication_factor: int = 1
    # Long enough for the latest label (consumer.label_horizon_days, 548, plus its 30-day
    # grace): the trainer reads the records of the labels it trains on. Labels alike.
    records_retention_hours: float = 24 * 580
    dead_letters_retention_hours: float = 24 * 90

    def validate(self) -> None:
        names = [self.records, self.dead_letters, self.drift_events, self.model_versions,
                 self.detector_state, self.labels, self.join_changelog]
        if len(set(names)) != len(names):
            raise ConfigError("topics: two topics share one name; every topic needs its own")
        for name in names:
            if not name or len(name) > 249:
                raise ConfigError(f"topics: invalid topic name {name!r}")
        if self.records_partitions < 1 or self.other_partitions < 1:
            raise ConfigError("topics.*_partitions must be >= 1")
        if self.replication_factor < 1:
            raise ConfigError("topics.replication_factor must be >= 1")
        if self.records_retention_hours <= 0 or self.dead_letters_retention_hours <= 0:
            raise ConfigError("topics.*_retention_hours must be > 0")


@dataclass(frozen=True)
class RegistrySettings:
    """The model registry on disk, one for every service and command: the trainer writes
    versions below ``root``; the consumer serves champions only from below it."""

    root: str = "models"

    def validate(self) -> None:
        if not self.root.strip():
            raise ConfigError("registry.root is empty: name the model registry's directory")


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus endpoint. Port 0 disables the HTTP server."""

    port: int = 9108
    host: str = "0.0.0.0"

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"metrics.port must be within 0..65535, got {self.port}")


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"

    def validate(self) -> None:
        if self.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"logging.level must be DEBUG, INFO, WARNING or ERROR, got {self.level!r}"
            )


@dataclass(frozen=True)
class AdminSettings:
    """Settings of the admin commands (topics create)."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


def load(settings_type: type[T], path: str | Path | None = None,
         environ: Mapping[str, str] | None = None) -> T:
    """Build ``settings_type`` from the TOML file (``path`` or ``$LEVYDRIFT_CONFIG``) and the
    environment, validating every section. Raises ``ConfigError`` on any problem."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_PATH_VARIABLE) or None
    document = _read_toml(Path(path)) if path else {}
    unknown = sorted(set(document) - KNOWN_SECTIONS)
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}] in {path}; known sections: "
            + ", ".join(sorted(KNOWN_SECTIONS))
        )
    _overlay_environment(settings_type, document, environ)
    return _build(settings_type, document, prefix="")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def _overlay_environment(settings_type: type, document: dict[str, Any],
                         environ: Mapping[str, str]) -> None:
    """Apply LEVYDRIFT_<SECTION>_<KEY> (and KAFKA_BOOTSTRAP_SERVERS) onto the parsed document."""
    sections = {f.name: f for f in dataclasses.fields(settings_type)}
    fallback = environ.get(BOOTSTRAP_FALLBACK_VARIABLE)
    if fallback and "kafka" in sections:
        document.setdefault("kafka", {}).setdefault("bootstrap_servers", fallback)
    for variable, raw in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in NON_SETTING_VARIABLES:
            continue
        section_name, key = _split_variable(variable)
        if section_name not in sections:
            continue  # a known section another service reads (one environment, many services)
        section_type = _resolve(settings_type, sections[section_name])
        section_fields = {f.name: f for f in dataclasses.fields(section_type)}
        table = document.setdefault(section_name, {})
        if key in section_fields:
            table[key] = _from_env_string(raw, _resolve(section_type, section_fields[key]),
                                          variable)
            continue
        mapping_field = next((name for name in section_fields
                              if key.startswith(name + "_")
                              and _origin(_resolve(section_type, section_fields[name])) is dict),
                             None)
        if mapping_field is None:
            moved = MOVED_KEYS.get(f"{section_name}.{key}")
            if moved is not None:
                raise ConfigError(f"{variable} is now {_variable(moved)} (one {moved} for "
                                  f"every service): unset {variable} and export "
                                  f"{_variable(moved)} instead")
            raise ConfigError(f"unknown setting {variable}: {section_name} has no key {key!r}")
        # LEVYDRIFT_KAFKA_CLIENT_SASL_MECHANISM -> kafka.client["sasl.mechanism"]
        property_name = key[len(mapping_field) + 1:].replace("_", ".")
        table.setdefault(mapping_field, {})[property_name] = raw


def _variable(key: str) -> str:
    """``registry.root`` -> ``LEVYDRIFT_REGISTRY_ROOT``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def _split_variable(variable: str) -> tuple[str, str]:
    """``LEVYDRIFT_<SECTION>_<KEY>`` to (section, key); ``ConfigError`` for a variable in our
    namespace that names no known section or no key (a typo must not be silently ignored)."""
    if variable in RENAMED_VARIABLES:
        raise ConfigError(
            f"{variable} is now {RENAMED_VARIABLES[variable]} (a variable of "
            f"deploy/kafka/local-kafka, not a setting): unset {variable} and export "
            f"{RENAMED_VARIABLES[variable]} instead")
    section_name, _, key = variable[len(ENV_PREFIX):].lower().partition("_")
    if section_name not in KNOWN_SECTIONS:
        raise ConfigError(
            f"unknown setting {variable}: no section {section_name!r}; known sections: "
            + ", ".join(sorted(KNOWN_SECTIONS)))
    if not key:
        raise ConfigError(f"unknown setting {variable}: name a key, as in "
                          f"{variable}_<KEY>")
    return section_name, key


def _from_env_string(raw: str, target: Any, variable: str) -> Any:
    if target is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{variable}={raw!r} is not a boolean (use true or false)")
    if target in (int, float):
        try:
            return target(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not {_type_word(target)}") from None
    if _origin(target) in (list, tuple):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _build(settings_type: type[T], table: Any, prefix: str) -> T:
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix.rstrip('.')} must be a table")
    fields = {f.name: f for f in dataclasses.fields(settings_type)}
    unknown = sorted(set(table) - set(fields))
    if unknown and prefix:  # the root may hold other services' sections
        old = next((key for key in unknown if f"{prefix}{key}" in MOVED_KEYS), None)
        if old is not None:
            moved = MOVED_KEYS[f"{prefix}{old}"]
            raise ConfigError(f"{prefix}{old} is now {moved} (one registry for every "
                              f"service): move it to [{moved.split('.')[0]}]")
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; known keys: " + ", ".join(sorted(fields))
        )
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in table:
            continue
        values[name] = _convert(table[name], _resolve(settings_type, spec), f"{prefix}{name}")
    try:
        instance = settings_type(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or 'settings'}: {error}") from None
    validate = getattr(instance, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as error:  # sections outside levydrift/ raise their own ValueErrors
            message = str(error)
            if not message.startswith((prefix, prefix.rstrip(".") + ":")):
                message = f"{prefix.rstrip('.') or 'settings'}: {message}"
            raise ConfigError(message) from None
    return instance


def _convert(value: Any, target: Any, key: str) -> Any:
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        return _build(target, value, prefix=f"{key}.")
    origin = _origin(target)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table of strings")
        return {str(k): str(v) for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__}")
        (item_type,) = typing.get_args(target)[:1] or (str,)
        items = [_convert(item, item_type, f"{key}[]") for item in value]
        return tuple(items) if origin is tuple else items
    if _is_optional(target):
        if value is None:
            return None
        return _convert(value, _non_none(target), key)
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target in (int, float, str, bool) and (
        not isinstance(value, target) or (target is int and isinstance(value, bool))
    ):
        raise ConfigError(
            f"{key} must be {_type_word(target)}, got {type(value).__name__} {value!r}"
        )
    return value


def _type_word(target: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[target]


def _resolve(owner: type, spec: dataclasses.Field) -> Any:
    return typing.get_type_hints(owner)[spec.name]


def _origin(target: Any) -> Any:
    return typing.get_origin(target)


def _is_optional(target: Any) -> bool:
    return _origin(target) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        target)


def _non_none(target: Any) -> Any:
    return next(arg for arg in typing.get_args(target) if arg is not type(None))
