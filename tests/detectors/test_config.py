"""DetectorSettings: sensible defaults, invalid combinations refused in one line."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from detectors import DetectorConfigError, DetectorSettings


def test_defaults_are_valid_and_watch_twelve_signals() -> None:
    settings = DetectorSettings()
    settings.validate()
    assert len(settings.all_signals()) == 12
    assert settings.kind_of("prediction") == "prediction"
    assert settings.kind_of("abs_error") == "performance"
    assert settings.kind_of("county") == "distribution"


def test_fields_use_only_toml_friendly_types() -> None:
    hints = typing.get_type_hints(DetectorSettings)
    allowed = {str, int, float, bool, tuple[str, ...]}
    for spec in dataclasses.fields(DetectorSettings):
        assert hints[spec.name] in allowed, spec.name


@pytest.mark.parametrize(("changes", "words"), [
    ({"false_alarm_rate": 0.0}, "false_alarm_rate"),
    ({"false_alarm_rate": 0.5}, "false_alarm_rate"),
    ({"warmup_records": 10}, "warmup_records"),
    ({"cooldown_records": -1}, "cooldown_records"),
    ({"mean_shift_min": 2.0, "mean_shift_max": 1.0}, "mean_shift_min"),
    ({"mean_shift_min": 1.0, "mean_shift_max": 1.0}, "mean_shift_levels"),
    ({"category_shift": 0.7}, "category_shift"),
    ({"page_hinkley": False, "adwin": False, "spread": False}, "all off"),
    ({"categorical": False}, "categorical is off"),
    ({"page_hinkley": False, "adwin": False}, "performance signals need"),
    ({"numeric_signals": ("county",)}, "listed twice"),
    ({"numeric_signals": (), "categorical_signals": (), "prediction_signals": (),
      "performance_signals": ()}, "no signals"),
    ({"numeric_signals": ("",)}, "non-empty"),
    ({"summary_window": 4}, "summary_window"),
    ({"threads": -1}, "threads must be within 0..64"),
    ({"threads": 65}, "threads must be within 0..64"),
])
def test_invalid_settings_are_refused_with_one_line(changes: dict, words: str) -> None:
    settings = dataclasses.replace(DetectorSettings(), **changes)
    with pytest.raises(DetectorConfigError) as caught:
        settings.validate()
    message = str(caught.value)
    assert words in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_turning_off_categorical_is_fine_without_categorical_signals() -> None:
    DetectorSettings(categorical=False, categorical_signals=()).validate()


def test_settings_round_trip_through_a_dict() -> None:
    settings = DetectorSettings(cooldown_records=10, numeric_signals=("a", "b"))
    assert DetectorSettings.from_dict(settings.to_dict()) == settings
