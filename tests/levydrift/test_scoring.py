"""levydrift.scoring: the levy pipeline scored from record columns gives the levies its own
``predict`` gives, to the bit; any model or column it does not know goes through the model."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from levydrift import scoring
from levydrift.artifacts import load_verified_model, save_model
from levydrift.boosted_trees import BoostedTrees
from levydrift.features import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    TARGET,
    BaseLevyResidualRegressor,
    model_columns,
    to_model_frame,
)
from levydrift.signals import ModelScorer
from levydrift.simulator import LevySimulator, SimulatorConfig
from schemas.levy_record import decode_levy_records, levy_records_to_columns
from trainer.model import ModelParams, fit_model

SIMULATOR = LevySimulator(SimulatorConfig(seed=5, labelled_share=1.0, parcels=2_000))


@cache
def levy_model() -> BaseLevyResidualRegressor:
    return fit_model(to_model_frame(SIMULATOR.columns(0, 3000), include_target=True),
                     ModelParams(max_iter=40))


def pipeline_levies(model: Any, columns: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(model.predict(to_model_frame(columns)), dtype=float)


def test_the_levy_pipeline_compiles_and_scores_stream_columns_to_the_bit() -> None:
    model = levy_model()
    scorer = scoring.compile_scorer(model)
    assert scorer is not None
    columns = SIMULATOR.columns(3000, 5000)
    assert scorer.accepts(columns)
    levies = scorer.predict(columns)
    assert levies.dtype == np.float64 and levies.shape == (2000,)
    assert np.array_equal(levies, pipeline_levies(model, columns))


def test_the_levy_model_is_scored_by_the_compiled_trees() -> None:
    """Not by scikit-learn's own trees (the scorer would fall back to them silently)."""
    scorer = scoring.compile_scorer(levy_model())
    assert scorer is not None and isinstance(scorer.trees, BoostedTrees)


def test_the_consumers_columns_take_the_column_path() -> None:
    """What the consumer hands the champion (the codec's records as columns) is what the
    scorer accepts: otherwise the service would score through the pipeline, silently."""
    import orjson

    values = [orjson.dumps(record) for batch in SIMULATOR.record_batches(9000, 9500)
              for record in batch]
    records, rejected = decode_levy_records(values)
    assert not rejected
    columns = levy_records_to_columns(records)
    scorer = scoring.compile_scorer(levy_model())
    assert scorer is not None and scorer.accepts(columns)
    assert np.array_equal(scorer.predict(columns), pipeline_levies(levy_model(), columns))


def test_a_saved_and_loaded_model_compiles_too(tmp_path) -> None:
    sha = save_model(levy_model(), tmp_path / "model.skops")
    loaded = load_verified_model(tmp_path / "model.skops", sha)
    scorer = scoring.compile_scorer(loaded)
    assert scorer is not None
    columns = SIMULATOR.columns(5000, 5500)
    assert np.array_equal(scorer.predict(columns), pipeline_levies(loaded, columns))


COUNTIES = ["Benton", "Franklin", "Grant", "Walla Walla", "Yakima", "King", "benton", ""]
DISTRICTS = ["BEN-TCA-01", "YAK-TCA-06", "GRA-TCA-03", "XXX-TCA-99", "ben-tca-01"]
CLASSES = ["residential", "commercial", "exempt", "agricultural", "industrial", "timber"]
money = st.floats(0.0, 1e9, allow_nan=False)


@st.composite
def record_columns(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Columns as the consumer hands them: float64 numbers anywhere in the contract's ranges
    (exemption above assessed included, which the codec refuses but the scorer must not
    care about), category values known, unseen, or differing only in case."""
    rows = draw(st.integers(1, 40))
    columns = {name: np.array(draw(st.lists(money, min_size=rows, max_size=rows)))
               for name in NUMERIC_FEATURES}
    columns["levy_rate"] = np.array(draw(st.lists(st.floats(1e-6, 0.1), min_size=rows,
                                                  max_size=rows)))
    columns["tax_year"] = np.array(draw(st.lists(st.integers(1900, 2100), min_size=rows,
                                                 max_size=rows)), dtype=np.float64)
    for name, choices in zip(CATEGORICAL_FEATURES, (COUNTIES, DISTRICTS, CLASSES), strict=True):
        columns[name] = np.array(draw(st.lists(st.sampled_from(choices), min_size=rows,
                                               max_size=rows)), dtype=object)
    return columns


@settings(max_examples=150, deadline=None)
@given(record_columns())
def test_any_columns_score_as_the_pipeline_does(columns: dict[str, np.ndarray]) -> None:
    model = levy_model()
    scorer = scoring.compile_scorer(model)
    assert scorer is not None and scorer.accepts(columns)
    assert np.array_equal(scorer.predict(columns), pipeline_levies(model, columns))


def test_columns_it_does_not_expect_go_through_the_pipeline() -> None:
    """A file's county column of numbers, or an integer-coded one, is the pipeline's to
    convert (to_model_frame makes str of them): the scorer declines and ModelScorer gives
    the pipeline's levies."""
    model = levy_model()
    scorer = scoring.compile_scorer(model)
    assert scorer is not None
    columns = SIMULATOR.columns(6000, 6100)
    mixed = {**columns, "county": np.array([53] * 50 + ["Yakima"] * 50, dtype=object)}
    text_numbers = {**columns, "tax_year": columns["tax_year"].astype(str)}
    missing = {name: column for name, column in columns.items() if name != "levy_rate"}
    assert not scorer.accepts(mixed)
    assert not scorer.accepts(text_numbers)
    assert not scorer.accepts(missing)
    assert scorer.accepts(columns)
    served = ModelScorer(model)
    assert np.array_equal(served.predict(mixed), pipeline_levies(model, mixed))
    assert np.array_equal(served.predict(columns), pipeline_levies(model, columns))


def test_other_models_are_scored_by_their_own_predict() -> None:
    """A pipeline of another shape (one-hot codes and a linear model) is not compiled; the
    served scorer still predicts with it."""
    frame = to_model_frame(SIMULATOR.columns(0, 1000), include_target=True)
    linear = BaseLevyResidualRegressor(Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", "passthrough", list(NUMERIC_FEATURES)),
            ("categorical", OneHotEncoder(handle_unknown="ignore"),
             list(CATEGORICAL_FEATURES))])),
        ("regressor", LinearRegression())])).fit(frame[list(model_columns())], frame[TARGET])
    assert scoring.compile_scorer(linear) is None
    columns = SIMULATOR.columns(1000, 1200)
    assert np.array_equal(ModelScorer(linear).predict(columns), pipeline_levies(linear, columns))


def test_an_encoder_that_raises_on_unseen_categories_is_not_compiled() -> None:
    """The pipeline raises on an unseen category there; the scorer must not invent a code."""
    frame = to_model_frame(SIMULATOR.columns(0, 1000), include_target=True)
    model = fit_model(frame, ModelParams(max_iter=5))
    encoder = model.regressor_.named_steps["columns"].named_transformers_["categorical"]
    encoder.handle_unknown = "error"
    assert scoring.compile_scorer(model) is None


def test_a_scorer_that_disagrees_with_the_model_is_not_used(monkeypatch) -> None:
    """The probe check is what stands between a change in scikit-learn (or in this module)
    and silently different levies: with the levy terms computed wrongly, nothing compiles
    and the served scorer gives the pipeline's levies."""
    def off_by_a_cent(assessed, exemption, rate):
        taxable = np.clip(assessed - exemption, 0.0, None)
        return taxable, taxable * rate + 0.01, np.log1p(taxable * rate)

    monkeypatch.setattr(scoring, "levy_terms", off_by_a_cent)
    model = levy_model()
    assert scoring.compile_scorer(model) is None
    columns = SIMULATOR.columns(7000, 7100)
    assert np.array_equal(ModelScorer(model).predict(columns), pipeline_levies(model, columns))


@pytest.mark.parametrize("rows", [64, 300])
def test_the_probe_visits_every_category_and_an_unseen_one(rows: int) -> None:
    scorer = scoring.compile_scorer(levy_model())
    assert scorer is not None
    probe = scoring.probe_columns(scorer, rows)
    for name, known in zip(scorer.categorical, scorer.categories, strict=True):
        codes = known.get_indexer(probe[name])
        assert set(codes.tolist()) == set(range(len(known))) | {-1}
    assert len(probe["county"]) == rows


def test_a_column_scorer_that_fails_at_run_time_hands_over_to_the_pipeline(caplog) -> None:
    """The fast path failing on a batch must not fail a model that predicts: the batch and
    every later one go through the pipeline, and the log says so once."""
    model = levy_model()
    served = ModelScorer(model, version=7)
    columns = SIMULATOR.columns(8000, 8100)
    assert np.array_equal(served.predict(columns), pipeline_levies(model, columns))
    scorer = served._column_scorer
    assert isinstance(scorer, scoring.ColumnScorer)

    def broken(_matrix):
        raise MemoryError("no room for the matrix")

    scorer.trees = type("Broken", (), {"predict": staticmethod(broken)})()
    assert np.array_equal(served.predict(columns), pipeline_levies(model, columns))
    assert served._column_scorer is None
    assert np.array_equal(served.predict(columns), pipeline_levies(model, columns))
    failures = [r for r in caplog.records if "column scoring failed" in r.getMessage()]
    assert len(failures) == 1 and "MemoryError" in failures[0].error
