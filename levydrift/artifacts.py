"""Model artifacts: write with skops, load only verified bytes with an explicit type allow-list.

Shared by the trainer (which writes) and the consumer (which loads). Nothing here unpickles:
skops rebuilds objects from a schema, the bytes are checked against the SHA-256 recorded at
training time before skops sees them, and every type the archive names must be in
``ALLOWED_TYPES`` (exclusively: skops' own default trust, which covers every scikit-learn
estimator, does not count). A loaded model must then pass ``levydrift.model_checks``: a levy
model, fitted, with tree arrays that cannot send native code out of bounds, and predicting
finite levies for a probe batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from detectors.reference import Reference
from levydrift.errors import ArtifactError

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model.skops"
MANIFEST_NAME = "manifest.json"
REFERENCE_NAME = "reference.parquet"  # holdout inputs, predictions and errors

# Every type the levy impact pipeline (trainer/model.py) is built from, named in full, and
# nothing else: a new component must be added here on purpose. tests/levydrift check that a fitted
# pipeline needs exactly these.
ALLOWED_TYPES: tuple[str, ...] = (
    "builtins.dict",
    "builtins.list",
    "builtins.slice",
    "builtins.str",
    "builtins.tuple",
    "functools.partial",
    "levydrift.features.BaseLevyResidualRegressor",
    "levydrift.features.add_levy_terms",
    "numpy.float64",
    "numpy.ndarray",
    "numpy.random._generator.Generator",
    "numpy.uint64",
    "sklearn._loss._loss.CyHalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.utils.validation.check_array",
)
_SCHEMA_MEMBER = "schema.json"
_MAX_SCHEMA_BYTES = 64 << 20  # a levy model's schema is ~100 KB; refuse a decompression bomb


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(estimator: Any, path: str | Path) -> str:
    """Write ``estimator`` to ``path`` with skops (flushed to disk); return the hex SHA-256."""
    data = _skops().dumps(estimator)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def load_verified_model(path: str | Path, expected_sha256: str, label: str | None = None) -> Any:
    """Load the estimator at ``path`` only if its bytes hash to ``expected_sha256``, every
    type in it is in ``ALLOWED_TYPES`` and it passes ``check_model``; otherwise raise
    ``ArtifactError`` naming ``label`` (e.g. ``levy-impact/3``, default the path) and why."""
    name = label or str(path)
    # Verify and load the same in-memory bytes, so the file cannot change in between.
    data = verified_bytes(path, expected_sha256, name)
    try:
        model = _skops().loads(data, trusted=list(ALLOWED_TYPES))
    except Exception as error:  # noqa: BLE001 - a corrupt archive raises many kinds
        raise ArtifactError(f"model {name}: artifact {path} cannot be loaded: {error}",
                            "not_skops") from None
    from levydrift.model_checks import check_model  # lazy: scikit-learn, only with a model

    check_model(model, name)
    return model


def import_model_loading() -> None:
    """Import what ``load_verified_model`` needs (skops, scikit-learn, the model checks; ~1 s)
    and load the compiled kernel that scores a loaded model's trees, without loading any model:
    for a caller that waits meanwhile, as the consumer waits for a version's child-process
    probe before it loads the model itself."""
    _skops()
    import levydrift.model_checks  # noqa: F401  # lazy: scikit-learn, only with a model
    from levydrift.boosted_trees import load_kernel  # lazy: numba's trees, only with a model

    load_kernel()


def verified_bytes(path: str | Path, expected_sha256: str, label: str) -> bytes:
    """The artifact's bytes, if they hash to ``expected_sha256`` and name only allow-listed
    types; nothing is built from them here."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"model {label}: artifact {path} is missing", "missing") from None
    except OSError as error:
        raise ArtifactError(f"model {label}: artifact {path} cannot be read: {error}",
                            "unreadable") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise ArtifactError(
            f"model {label}: artifact {path} fails its SHA-256 check "
            f"(expected {expected_sha256}, file has {actual}); refusing to load it",
            "sha256_mismatch")
    disallowed = sorted(archive_types(data, label) - set(ALLOWED_TYPES))
    if disallowed:
        raise ArtifactError(
            f"model {label}: artifact {path} holds type(s) outside the allow-list: "
            + ", ".join(disallowed), "disallowed_type")
    return data


def archive_types(data: bytes, label: str = "artifact") -> set[str]:
    """Every type a skops archive names (``module.Class``), from its schema: each object node
    there carries ``__module__`` and ``__class__``, type references included."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if archive.getinfo(_SCHEMA_MEMBER).file_size > _MAX_SCHEMA_BYTES:
                raise ArtifactError(f"model {label}: its {_SCHEMA_MEMBER} is over "
                                    f"{_MAX_SCHEMA_BYTES} bytes", "not_skops")
            schema = json.loads(archive.read(_SCHEMA_MEMBER))
    except ArtifactError:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile and json raise many kinds
        raise ArtifactError(f"model {label}: not a skops archive: {error}", "not_skops") from None
    types: set[str] = set()
    pending = [schema]
    while pending:  # iterative: the nesting depth is the archive's choice
        node = pending.pop()
        if isinstance(node, dict):
            module, cls = node.get("__module__"), node.get("__class__")
            if module is not None or cls is not None:
                types.add(f"{module}.{cls}")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return types


def read_manifest(version_dir: str | Path) -> dict[str, Any]:
    """The manifest of a registry version directory; ``ArtifactError`` when absent or unreadable."""
    path = Path(version_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"model version {version_dir}: {MANIFEST_NAME} is missing",
                            "missing") from None
    except (OSError, ValueError) as error:
        raise ArtifactError(f"model version {version_dir}: {MANIFEST_NAME} unreadable: {error}",
                            "unreadable") from None


def load_version_dir(version_dir: str | Path, expected_sha256: str | None = None) -> Any:
    """Load the model of a registry version directory (``<root>/<name>/versions/<n>``), verified
    against its manifest's SHA-256 and, when given, ``expected_sha256`` (from a model-version
    event) too. For the consumer, which must not import ``trainer/``."""
    return load_verified_model(*_version_artifact(version_dir, expected_sha256))


def verify_version_dir(version_dir: str | Path, expected_sha256: str | None = None) -> None:
    """What ``load_version_dir`` checks before it builds anything (manifest, hashes, types):
    cheap, and safe to run in the service itself."""
    verified_bytes(*_version_artifact(version_dir, expected_sha256))


def _version_artifact(version_dir: str | Path,
                      expected_sha256: str | None) -> tuple[Path, str, str]:
    """(artifact path, its SHA-256 from the manifest, label) of a version directory."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    label = f"{manifest.get('model', version_dir.parent.parent.name)}/" \
            f"{manifest.get('version', version_dir.name)}"
    recorded = str(manifest.get("sha256", ""))
    if expected_sha256 and recorded != expected_sha256.lower():
        raise ArtifactError(
            f"model {label}: manifest SHA-256 {recorded} differs from the expected "
            f"{expected_sha256}; refusing to load it", "sha256_mismatch")
    return version_dir / manifest.get("artifact", ARTIFACT_NAME), recorded, label


def load_composition(version_dir: str | Path) -> tuple[dict[str, dict[str, int]], int] | None:
    """The version's category counts over its training window's whole event-time windows and
    how many windows those are (manifest ``composition``, see
    ``detectors.composition.whole_window_counts``); None for versions written without them.
    A malformed entry raises ``ArtifactError`` (reason ``composition``)."""
    entry = read_manifest(version_dir).get("composition")
    if entry is None:
        return None
    try:
        windows = entry["windows"]
        counts = {str(name): {str(category): count for category, count in counted.items()}
                  for name, counted in entry["counts"].items()}
        valid = (isinstance(windows, int) and windows >= 0 and all(
            isinstance(count, int) and count >= 0
            for counted in counts.values() for count in counted.values()))
    except (KeyError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise ArtifactError(f"model version {version_dir}: the composition counts in "
                            f"{MANIFEST_NAME} are malformed", "composition")
    return counts, windows


def with_training_composition(reference: Reference, version_dir: str | Path) -> Reference:
    """``reference`` with the category shares of the version's whole training windows
    (``load_composition``) when it has them. A malformed entry is logged and left out: the
    holdout's shares stay, as for a version from before the counts."""
    try:
        composition = load_composition(version_dir)
    except ArtifactError as error:
        log.warning("composition counts unusable; judging the mix by the holdout's shares",
                    extra={"version_dir": str(version_dir), "error": str(error)})
        return reference
    return reference if composition is None else reference.with_composition(*composition)


def load_reference_sample(version_dir: str | Path) -> pd.DataFrame | None:
    """The version's holdout sample (``REFERENCE_NAME``) if its manifest names one, checked
    against the SHA-256 recorded there; None for versions written without one."""
    version_dir = Path(version_dir)
    manifest = read_manifest(version_dir)
    if "reference" not in manifest:
        return None
    path = version_dir / manifest["reference"]
    if path.parent != version_dir:
        raise ArtifactError(f"model version {version_dir}: reference {path} is outside it",
                            "outside_registry")
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise ArtifactError(f"model version {version_dir}: reference {path} is missing",
                            "missing") from None
    if actual != manifest.get("reference_sha256"):
        raise ArtifactError(f"model version {version_dir}: reference {path} fails its SHA-256 "
                            f"check (manifest {manifest.get('reference_sha256')}, file {actual})",
                            "sha256_mismatch")
    return pd.read_parquet(path)


def _skops() -> Any:
    """skops.io, imported on first use, without the list of every scikit-learn estimator it
    builds on import (~2-3 s: it imports every scikit-learn module) for its default trust.

    That trust is one this module never relies on: a model is loaded only after
    ``verified_bytes`` found every type it names in ``ALLOWED_TYPES``, which is also what
    ``loads`` is told to trust. With the list empty, skops' default trust shrinks to its own
    internal types, so its check can only refuse more, never less.

    Likewise its default trust for functions lists scipy.special's ufuncs, finding each one's
    module by a search of every loaded module (~0.2-0.3 s in a consumer, more the more it has
    imported); no levy model holds a ufunc (``ALLOWED_TYPES``), so scipy.special shows skops
    no names while it imports."""
    if "skops.io" not in sys.modules:
        # lazy: scikit-learn and skops, only where a model is loaded or saved
        import scipy.special
        import sklearn.utils

        listing = sklearn.utils.all_estimators
        sklearn.utils.all_estimators = _no_estimators
        scipy.special.__dir__ = _no_names  # PEP 562: what dir() lists
        try:
            import skops.io  # noqa: F401  # lazy: seconds of imports, only with a model
        finally:
            sklearn.utils.all_estimators = listing
            del scipy.special.__dir__
    return sys.modules["skops.io"]


def _no_estimators(*_: Any, **__: Any) -> list[tuple[str, type]]:
    """``sklearn.utils.all_estimators`` while skops imports (see ``_skops``)."""
    return []


def _no_names() -> list[str]:
    """``dir(scipy.special)`` while skops imports (see ``_skops``)."""
    return []


def file_window(path: Path, rows: int) -> dict[str, Any]:
    """A file's rows as a training window in the offsets shape the model-version event needs:
    topic ``file.<name>.<content hash>``, partition 0, rows 0..n-1 (the full path is in the
    lineage). The hash tells today's ``levy.csv`` from yesterday's, so one never counts as the
    other's already-handled window."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:220]
    return {"topic": f"file.{safe}.{file_sha256(path)[:12]}", "partition": 0,
            "first_offset": 0, "last_offset": max(rows - 1, 0)}
