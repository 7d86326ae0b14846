"""ProbedVersions: which artifacts may skip the child-process probe, and when they may not."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

import pytest

from levydrift import model_probe
from levydrift.model_probe import ProbedVersions, environment_fingerprint

SHA = hashlib.sha256(b"an artifact").hexdigest()
OTHER = hashlib.sha256(b"another artifact").hexdigest()


def test_a_granted_artifact_is_trusted_until_withdrawn(tmp_path: Path) -> None:
    probed = ProbedVersions(tmp_path, environment="env-a")
    assert not probed.trusts(SHA)
    probed.grant(SHA, "levy-impact/1")
    assert probed.trusts(SHA) and probed.trusts(SHA.upper())
    assert not probed.trusts(OTHER)
    assert ProbedVersions(tmp_path, environment="env-a").trusts(SHA)  # another process
    assert probed.withdraw(SHA)
    assert not probed.trusts(SHA)
    assert not list((tmp_path / "env-a").glob(".*"))  # no temporary file left behind


def test_another_environment_trusts_nothing_granted_in_this_one(tmp_path: Path) -> None:
    ProbedVersions(tmp_path, environment="env-a").grant(SHA, "levy-impact/1")
    assert not ProbedVersions(tmp_path, environment="env-b").trusts(SHA)


@pytest.mark.parametrize("content", [b"", b"{\"sha256\": ", b"[]", b"\xff\xfe",
                                     json.dumps({"sha256": OTHER, "environment": "env-a"}).encode(),
                                     json.dumps({"sha256": SHA, "environment": "env-b"}).encode()])
def test_a_damaged_or_foreign_record_is_not_trusted(tmp_path: Path, content: bytes) -> None:
    probed = ProbedVersions(tmp_path, environment="env-a")
    probed.grant(SHA, "levy-impact/1")
    (tmp_path / "env-a" / SHA).write_bytes(content)
    assert not probed.trusts(SHA)


def test_a_record_that_cannot_be_read_or_removed_is_not_trusted(tmp_path: Path) -> None:
    probed = ProbedVersions(tmp_path, environment="env-a")
    (tmp_path / "env-a" / SHA).mkdir(parents=True)  # in the record's place: not a file
    assert not probed.trusts(SHA)
    assert not probed.withdraw(SHA)  # so the caller probes in a child after all
    probed.grant(SHA, "levy-impact/1")  # logged, not raised
    assert not probed.trusts(SHA)


def test_a_directory_that_cannot_be_written_only_costs_the_child(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    probed = ProbedVersions(tmp_path / "a-file", environment="env-a")
    probed.grant(SHA, "levy-impact/1")
    assert not probed.trusts(SHA)
    assert not probed.withdraw(SHA)


@pytest.mark.parametrize("name", ["../../escape", "a" * 64 + "/../x", "g" * 64, SHA[:63], ""])
def test_only_a_sha256_names_a_record(tmp_path: Path, name: str) -> None:
    probed = ProbedVersions(tmp_path / "probes", environment="env-a")
    probed.grant(name, "levy-impact/1")
    assert not probed.trusts(name)
    assert not probed.withdraw(name)
    assert not (tmp_path / "probes").exists() and not (tmp_path / "escape").exists()


def test_the_environment_changes_with_an_installed_distribution(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    (site / "somelib-1.0.dist-info").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(site))
    before = environment_fingerprint()
    assert environment_fingerprint() == before
    (site / "somelib-1.0.dist-info").rename(site / "somelib-1.1.dist-info")
    assert environment_fingerprint() != before


def test_the_environment_changes_with_the_code_that_checks_a_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "checkspkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "checks.py").write_text("LIMIT = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(model_probe, "_PROBED_SOURCES", ("checkspkg",))
    importlib.invalidate_caches()
    before = environment_fingerprint()
    (package / "checks.py").write_text("LIMIT = 2\n")
    assert environment_fingerprint() != before
    sys.modules.pop("checkspkg", None)



def test_the_environment_does_not_depend_on_how_the_process_was_launched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m levydrift.cli`` puts the working directory first on sys.path, the console
    script its own directory: the same installation either way."""
    before = environment_fingerprint()
    monkeypatch.syspath_prepend(str(Path(sys.executable).parent))
    assert environment_fingerprint() == before
