"""A seeded levy stream with drift whose start (and end) is known. Pure generation, no I/O.

The world: a fixed roll of parcels (drawn once from the seed) in several counties, each county
split into tax districts (tax code areas) with a voted rate and a statutory levy limit. Each
record is one parcel's levy record, drawn from the roll. Its levy is computed the way levies
work:

    taxable value = assessed value - exemptions (homestead, senior, abatement, fully exempt)
    levy rate     = the district's voted rate, compressed to (levy limit / taxable base) when
                    the district's total levy would exceed its statutory limit
    actual levy   = taxable value * levy rate + special assessments, with billing noise and a
                    few corrections

Records are generated in fixed chunks of ``CHUNK_RECORDS``, each from its own random stream
``(seed, chunk)``, so record ``i`` is the same whichever range it is generated in. Every
scenario draws the same random numbers as ``none``: before the change index a scenario's
records equal those of ``none`` byte for byte, which is what makes its ground truth checkable.

Use ``LevySimulator(SimulatorConfig(...))``: ``columns`` / ``frame`` for columnar data,
``records`` for record dicts, ``ground_truth`` for what changed where.

Late labels: a labelled record's actual levy can also travel on its own, as a levy label whose
event time is the record's plus a delay drawn per record (``LabelDelay``, from its own random
stream, so it changes nothing else). ``arrivals`` merges records and labels into one stream in
arrival order; ``label_columns`` gives the labels of a range of records.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
T = TypeVar("T")
CHUNK_RECORDS = 65_536

RECORD_FIELDS = (
    "schema_version", "record_id", "parcel_id", "county", "tax_district", "property_class",
    "tax_year", "assessed_value", "market_value", "exemption_amount", "levy_rate",
    "prior_levy_amount", "new_construction_value", "event_time", "actual_levy_amount",
)
MONEY_FIELDS = (
    "assessed_value", "market_value", "exemption_amount", "prior_levy_amount",
    "new_construction_value", "actual_levy_amount",
)
# Extra columns from ``columns(..., components=True)``: the levy formula's parts, noise-free.
COMPONENT_FIELDS = ("levy_taxable_value", "special_assessment", "formula_levy_amount")

SCENARIOS = (
    "none", "reassessment", "levy-rate-change", "exemption-policy", "unit-bug",
    "new-property-class", "gradual", "variance", "district-levy-change", "homestead-relief",
)
# Scenarios confined to one county: their ground truth names it as the segment.
ONE_COUNTY_SCENARIOS = frozenset({"reassessment", "levy-rate-change", "unit-bug",
                                  "district-levy-change"})
TEMPORARY_SCENARIOS = frozenset({"unit-bug"})
# Scenarios that move the actual levy (the label) but leave a model's inputs, or nearly all of
# them, as they were: found through the errors (performance), not the features.
PERFORMANCE_SCENARIOS = frozenset({"exemption-policy", "homestead-relief"})
# What ``magnitude`` means for each scenario, and its default.
DEFAULT_MAGNITUDE = {
    "none": 0.0,
    "reassessment": 0.25,        # assessed values of one county x (1 + m)
    "levy-rate-change": 0.004,   # voted rate + m (4 mills) in some districts
    "exemption-policy": 1.5,     # homestead exemption x (1 + m): 50k -> 125k
    "unit-bug": 1000.0,          # money fields of one county divided by m
    "new-property-class": 0.10,  # share of records from the new class
    "gradual": 0.30,             # values x (1 + m) at the end of the ramp
    "variance": 0.6,             # log-spread of values x (1 + m)
    "district-levy-change": 0.004,  # voted rate + m in one district
    "homestead-relief": 1.5,     # homestead exemption x (1 + m) in the bills alone
}
DEFAULT_DURATION = 10_000  # records: a temporary scenario's length, the gradual ramp's length

HOMESTEAD_EXEMPTION = 50_000.0
SENIOR_EXEMPTION_SHARE = 0.30     # of assessed value, on top of the homestead exemption
STALE_ASSESSMENT_LEVEL = 0.80     # the reassessed county's roll lags the market before the change
UPDATED_ROLL_SHARE = 0.05         # exemption-policy: share of records already showing the new one
# ... and for each scenario that raises an exemption in the levy formula (homestead-relief: the
# relief is granted on the bill, the assessor's roll never shows it).
_ROLL_SHOWS_RAISED_EXEMPTION = {"exemption-policy": UPDATED_ROLL_SHARE, "homestead-relief": 0.0}
NOISE_SIGMA = 0.004               # billing noise (proration, rounding across authorities)
CORRECTION_SHARE = 0.01           # bills with a supplemental correction of up to +-15 %
RATE_DECIMALS = 7


@dataclass(frozen=True)
class PropertyClass:
    name: str
    share: float
    median_value: float       # median assessed value, dollars
    sigma: float              # log-normal spread of assessed value
    assessment_ratio: float   # assessed / market (current-use farms are assessed far below)
    new_construction_rate: float


PROPERTY_CLASSES = (
    PropertyClass("residential", 0.72, 380_000, 0.45, 0.95, 0.05),
    PropertyClass("commercial", 0.09, 1_400_000, 0.90, 0.90, 0.08),
    PropertyClass("agricultural", 0.11, 450_000, 0.80, 0.35, 0.02),
    PropertyClass("industrial", 0.03, 3_200_000, 1.00, 0.92, 0.10),
    PropertyClass("exempt", 0.05, 900_000, 0.90, 1.00, 0.03),
)
NEW_PROPERTY_CLASS = PropertyClass("mixed_use", 0.0, 1_100_000, 0.60, 0.90, 0.30)
CLASS_NAMES = tuple(c.name for c in PROPERTY_CLASSES) + (NEW_PROPERTY_CLASS.name,)
RESIDENTIAL, COMMERCIAL, INDUSTRIAL, EXEMPT = 0, 1, 3, 4
NEW_CLASS = len(PROPERTY_CLASSES)


@dataclass(frozen=True)
class County:
    name: str
    code: str
    share: float
    value_level: float   # local price level
    districts: int


COUNTIES = (
    County("Benton", "BEN", 0.28, 1.00, 7),
    County("Franklin", "FRA", 0.16, 0.85, 5),
    County("Yakima", "YAK", 0.24, 0.80, 6),
    County("Walla Walla", "WAL", 0.12, 0.90, 5),
    County("Grant", "GRA", 0.20, 0.75, 5),
)


DAY_MS = 86_400_000
MAX_LABEL_DELAY_DAYS = 3650.0  # ten years: longer than any levy cycle, far from int64 limits


@dataclass(frozen=True)
class LabelDelay:
    """How long after its record a levy label's event time falls: when the roll is certified
    and the bill is final, weeks to months after the assessment.

    Log-normal in days: ``median_days * exp(sigma * z)`` with ``z`` standard normal, drawn per
    record from its own random stream (a record's ``z`` does not depend on these parameters,
    so a longer median stretches every delay alike), rounded to whole milliseconds and clipped
    to [1 ms, ``max_days``]. The defaults, a median of 90 days and sigma 0.5, put 90 % of the
    delays between 40 and 205 days (the 5th and 95th percentiles, 90 * exp(-+0.822)); the
    clip at 548 days, the consumer's default label horizon, touches about 1.5 labels in
    10,000, so no label outlives the prediction it scores."""

    median_days: float = 90.0
    sigma: float = 0.5
    max_days: float = 548.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if not (np.isfinite(self.median_days) and self.median_days > 0):
            raise ValueError(f"label delay median must be > 0 days, got {self.median_days:g}")
        if not (np.isfinite(self.sigma) and 0 <= self.sigma <= 5):
            raise ValueError(f"label delay sigma must be within 0..5, got {self.sigma:g}")
        if not (np.isfinite(self.max_days) and 0 < self.max_days <= MAX_LABEL_DELAY_DAYS):
            raise ValueError(f"label delay maximum must be within 0..{MAX_LABEL_DELAY_DAYS:g} "
                             f"days (and above 0), got {self.max_days:g}")

    def delays_ms(self, z: np.ndarray) -> np.ndarray:
        """The delays, in whole milliseconds, for standard-normal draws ``z``."""
        days = self.median_days * np.exp(self.sigma * z)
        return np.clip(np.round(days * DAY_MS), 1, round(self.max_days * DAY_MS)).astype(np.int64)


@dataclass(frozen=True)
class SimulatorConfig:
    """What to generate. ``duration`` is the length of a temporary scenario (``unit-bug``) and
    of the ``gradual`` ramp; ``magnitude`` defaults per scenario (see ``DEFAULT_MAGNITUDE``)."""

    seed: int = 42
    scenario: str = "none"
    change_at: int = 50_000
    duration: int | None = None
    magnitude: float | None = None
    labelled_share: float = 0.2
    parcels: int = 100_000
    start_time: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    event_interval_ms: int = 1000
    tax_year: int | None = None   # default: the year of start_time
    county: str | None = None     # the county a one-county scenario hits (default: by seed)
    label_delay: LabelDelay = LabelDelay()  # when a labelled record's label arrives
    # From this record index on, also the homestead-relief change (its default magnitude) on
    # top of ``scenario``: a relief granted on the bills alone after, say, a reassessment.
    relief_at: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose from "
                             + ", ".join(SCENARIOS))
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.change_at < 0:
            raise ValueError(f"change index must be >= 0, got {self.change_at}")
        if self.duration is not None and self.duration < 1:
            raise ValueError(f"duration must be >= 1 record, got {self.duration}")
        if not 0.0 <= self.labelled_share <= 1.0:
            raise ValueError(f"labelled share must be within 0..1, got {self.labelled_share}")
        if self.parcels < 100:
            raise ValueError(f"parcels must be >= 100, got {self.parcels}")
        if self.event_interval_ms < 0:
            raise ValueError(f"event interval must be >= 0 ms, got {self.event_interval_ms}")
        if self.start_time.tzinfo is None:
            raise ValueError("start time must carry a time zone (use UTC)")
        if not 1900 <= self.resolved_tax_year <= 2100:
            raise ValueError(f"tax year must be within 1900..2100, got {self.resolved_tax_year}")
        if self.magnitude is not None and not np.isfinite(self.magnitude):
            raise ValueError("magnitude must be a finite number")
        if self.county is not None and self.county not in {c.name for c in COUNTIES}:
            raise ValueError(f"unknown county {self.county!r}; choose from "
                             + ", ".join(c.name for c in COUNTIES))
        if self.scenario == "unit-bug" and self.resolved_magnitude <= 0:
            raise ValueError("unit-bug magnitude (the divisor) must be > 0")
        if self.relief_at is not None and self.relief_at < 0:
            raise ValueError(f"relief index must be >= 0, got {self.relief_at}")
        if self.relief_at is not None and self.scenario in _ROLL_SHOWS_RAISED_EXEMPTION:
            raise ValueError(f"a relief on top of {self.scenario} would raise the homestead "
                             "exemption twice; use one of them")
        self.label_delay.validate()

    @property
    def resolved_magnitude(self) -> float:
        return DEFAULT_MAGNITUDE[self.scenario] if self.magnitude is None else self.magnitude

    @property
    def resolved_duration(self) -> int:
        return DEFAULT_DURATION if self.duration is None else self.duration

    @property
    def resolved_tax_year(self) -> int:
        return self.start_time.year if self.tax_year is None else self.tax_year

    @property
    def end_at(self) -> int | None:
        """First index after a temporary scenario; None for permanent ones."""
        if self.scenario in TEMPORARY_SCENARIOS:
            return self.change_at + self.resolved_duration
        return None


@dataclass(frozen=True)
class GroundTruth:
    """What changed, from which record index, in which signals and places."""

    scenario: str
    change_index: int | None          # None for ``none``
    end_index: int | None             # first unaffected index of a temporary scenario
    affected_signals: list[str]       # record fields whose distribution moves; primary first
    affected_counties: list[str]
    affected_districts: list[str]
    expected_kinds: list[str]         # drift kinds a monitor should report
    description: str
    seed: int
    magnitude: float
    records: int | None = None        # records written, when known
    change_record_id: str | None = None
    change_event_time: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    segment: str | None = None        # "county=Yakima" for a one-county scenario

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FEATURE_SHIFT = ["distribution", "prediction"]
_SCENARIO_SIGNALS = {
    "none": [],
    "reassessment": ["assessed_value", "exemption_amount", "new_construction_value",
                     "levy_rate", "actual_levy_amount"],
    "levy-rate-change": ["levy_rate", "actual_levy_amount"],
    "exemption-policy": ["actual_levy_amount", "exemption_amount"],
    "unit-bug": ["assessed_value", "market_value", "exemption_amount", "prior_levy_amount",
                 "new_construction_value", "actual_levy_amount"],
    # The new class builds six times as often as the rest (new_construction_rate 0.30).
    "new-property-class": ["property_class", "assessed_value", "market_value",
                           "prior_levy_amount", "new_construction_value", "actual_levy_amount"],
    "gradual": ["assessed_value", "market_value", "exemption_amount", "new_construction_value",
                "levy_rate", "actual_levy_amount"],
    "variance": ["assessed_value", "market_value", "exemption_amount", "new_construction_value",
                 "levy_rate", "actual_levy_amount"],
    "district-levy-change": ["levy_rate", "actual_levy_amount"],
    "homestead-relief": ["actual_levy_amount"],
}


@dataclass(frozen=True)
class _Districts:
    names: np.ndarray         # object: "BEN-TCA-03"
    county: np.ndarray        # county index
    voted_rate: np.ndarray
    levy_limit: np.ndarray    # statutory limit on the district's total levy, dollars
    taxable_base: np.ndarray  # the district's total taxable value on the roll


@dataclass(frozen=True)
class _Roll:
    """The parcel roll: one entry per parcel, the new-class parcels at the end."""

    parcel_id: np.ndarray
    county: np.ndarray
    district: np.ndarray
    property_class: np.ndarray
    value_z: np.ndarray           # standard-normal draw behind the assessed value
    assessed: np.ndarray          # dollars, before scenarios
    market: np.ndarray
    exemption_flat: np.ndarray    # homestead amount, if any
    exemption_share: np.ndarray   # share of assessed value exempt (senior, abatement, exempt)
    construction_share: np.ndarray
    prior_levy: np.ndarray
    special: np.ndarray           # special assessments, dollars
    base_parcels: int


class LevySimulator:
    """A deterministic levy stream for one ``SimulatorConfig``."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.config.validate()
        choice = np.random.default_rng([self.config.seed, 2])
        self.affected_county = int(choice.integers(len(COUNTIES)))
        if self.config.county is not None:
            self.affected_county = [c.name for c in COUNTIES].index(self.config.county)
        rng = np.random.default_rng([self.config.seed, 1])
        district_names, district_county = _district_layout()
        county_districts = np.flatnonzero(district_county == self.affected_county)
        self.affected_district_indices = np.sort(
            choice.choice(county_districts, size=3, replace=False))
        self._roll = _build_roll(rng, self.config.parcels, district_county,
                                 self.affected_county)
        self._districts = _build_districts(rng, district_names, district_county, self._roll)
        self._roll = _with_prior_levy(rng, self._roll, self._districts)
        self._variance_base_ratio = (self._spread_base_ratio()
                                     if self.config.scenario == "variance" else None)
        self._start_ms = int(self.config.start_time.timestamp() * 1000)
        self._last_chunk: tuple[tuple[int, bool], dict[str, np.ndarray]] | None = None
        self._last_delay_draws: tuple[int, np.ndarray] | None = None

    # ----------------------------------------------------------------- public API

    def columns(self, start: int, stop: int, components: bool = False) -> dict[str, np.ndarray]:
        """Records ``start..stop-1`` as columns (``RECORD_FIELDS``; ``event_time`` as
        ``datetime64[ms]`` UTC, unlabelled ``actual_levy_amount`` as NaN). With ``components``,
        also ``COMPONENT_FIELDS``."""
        if not 0 <= start <= stop:
            raise ValueError(f"bad record range {start}..{stop}")
        parts = []
        for chunk in range(start // CHUNK_RECORDS, -(-stop // CHUNK_RECORDS)):
            chunk_start = chunk * CHUNK_RECORDS
            lo, hi = max(start, chunk_start), min(stop, chunk_start + CHUNK_RECORDS)
            full = self._cached_chunk(chunk, components)
            parts.append({k: v[lo - chunk_start:hi - chunk_start] for k, v in full.items()})
        if not parts:
            return {k: v[:0].copy() for k, v in self._cached_chunk(0, components).items()}
        if len(parts) == 1:  # views of the cached chunk: the caller gets its own copy
            return {k: v.copy() for k, v in parts[0].items()}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def frame(self, start: int, stop: int, components: bool = False) -> pd.DataFrame:
        """``columns`` as a DataFrame."""
        return pd.DataFrame(self.columns(start, stop, components))

    def record_batches(self, start: int = 0, stop: int | None = None,
                       batch_records: int = CHUNK_RECORDS) -> Iterator[list[dict[str, Any]]]:
        """Record dicts in lists of up to ``batch_records``; endless when ``stop`` is None."""
        position = start
        while stop is None or position < stop:
            end = position + batch_records if stop is None else min(stop, position + batch_records)
            yield to_records(self.columns(position, end))
            position = end

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
        """Record dicts (the levy-record v1 fields; ``actual_levy_amount`` only when labelled)."""
        for batch in self.record_batches(start, stop):
            yield from batch

    def label_delays_ms(self, start: int, stop: int) -> np.ndarray:
        """Per record ``start..stop-1``: how long after it its label's event time falls, in
        whole ms (``config.label_delay``; drawn for every record, labelled or not, from a
        stream of its own per chunk, so nothing else changes and a record's delay does not
        depend on the range asked for)."""
        if not 0 <= start <= stop:
            raise ValueError(f"bad record range {start}..{stop}")
        parts = [np.zeros(0)]
        for chunk in range(start // CHUNK_RECORDS, -(-stop // CHUNK_RECORDS)):
            chunk_start = chunk * CHUNK_RECORDS
            if self._last_delay_draws is None or self._last_delay_draws[0] != chunk:
                rng = np.random.default_rng([self.config.seed, 4, chunk])
                self._last_delay_draws = (chunk, rng.standard_normal(CHUNK_RECORDS))
            parts.append(self._last_delay_draws[1][max(start, chunk_start) - chunk_start:
                                                   min(stop, chunk_start + CHUNK_RECORDS)
                                                   - chunk_start])
        return self.config.label_delay.delays_ms(np.concatenate(parts))

    def labels(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The labels of the labelled records among ``start..stop-1``, in record order (see
        ``label_columns``)."""
        return label_columns(self.columns(start, stop), self.label_delays_ms(start, stop))

    def ground_truth(self, records: int | None = None) -> GroundTruth:
        """The scenario's ground truth; ``records`` is the number written, when known."""
        config = self.config
        scenario = config.scenario
        if scenario == "none":
            return GroundTruth("none", None, None, [], [], [], [], "no change", config.seed,
                               0.0, records)
        county = COUNTIES[self.affected_county].name
        one_county = scenario in ONE_COUNTY_SCENARIOS
        counties = [county] if one_county else [c.name for c in COUNTIES]
        districts = [str(self._districts.names[d]) for d in self._rate_districts()]
        kinds = ["performance"] if scenario in PERFORMANCE_SCENARIOS else list(_FEATURE_SHIFT)
        parameters: dict[str, Any] = {"labelled_share": config.labelled_share,
                                      "parcels": config.parcels,
                                      "event_interval_ms": config.event_interval_ms}
        if scenario == "gradual":
            parameters["ramp_records"] = config.resolved_duration
        if scenario == "new-property-class":
            parameters["new_property_class"] = NEW_PROPERTY_CLASS.name
        change_time = np.datetime64(self._start_ms + config.change_at
                                    * config.event_interval_ms, "ms")
        return GroundTruth(
            scenario=scenario, change_index=config.change_at, end_index=config.end_at,
            affected_signals=list(_SCENARIO_SIGNALS[scenario]), affected_counties=counties,
            affected_districts=districts, expected_kinds=kinds,
            description=self._describe(county, districts), seed=config.seed,
            magnitude=config.resolved_magnitude, records=records,
            change_record_id=record_id(config.seed, config.change_at),
            change_event_time=_rfc3339(np.array([change_time]))[0], parameters=parameters,
            segment=f"county={county}" if one_county else None)

    # ----------------------------------------------------------------- generation

    def _cached_chunk(self, chunk: int, components: bool) -> dict[str, np.ndarray]:
        """The last chunk is kept: callers reading in small batches would otherwise generate
        each chunk many times over."""
        key = (chunk, components)
        if self._last_chunk is None or self._last_chunk[0] != key:
            self._last_chunk = (key, self._chunk(chunk, components))
        return self._last_chunk[1]

    def _chunk(self, chunk: int, components: bool) -> dict[str, np.ndarray]:
        config, roll = self.config, self._roll
        first = chunk * CHUNK_RECORDS
        index = np.arange(first, first + CHUNK_RECORDS, dtype=np.int64)
        draws = _draw_chunk(config.seed, chunk)
        active = self._active(index)
        parcel = self._choose_parcels(draws, active)
        county, district = roll.county[parcel], roll.district[parcel]

        value_factor, base_factor = self._value_factors(index, active, parcel, county, district)
        assessed = np.round(roll.assessed[parcel] * value_factor)
        # A revaluation moves the roll towards the market; the market itself does not move.
        market_factor = 1.0 if config.scenario == "reassessment" else value_factor
        market = np.round(roll.market[parcel] * market_factor)
        exemption, levy_exemption = self._exemptions(parcel, assessed, active, draws)
        if config.relief_at is not None:
            levy_exemption = self._relieved(parcel, assessed, index >= config.relief_at,
                                            levy_exemption)
        rate = self._levy_rate(district, active, base_factor)
        taxable = assessed - levy_exemption
        special = roll.special[parcel]
        formula_levy = taxable * rate + special
        money = {"assessed_value": assessed, "market_value": market,
                 "exemption_amount": exemption, "prior_levy_amount": roll.prior_levy[parcel],
                 "new_construction_value": np.round(roll.construction_share[parcel] * assessed),
                 "actual_levy_amount": _billed(formula_levy, draws)}
        extra = {"levy_taxable_value": taxable, "special_assessment": special,
                 "formula_levy_amount": formula_levy}
        if config.scenario == "unit-bug":
            # One county's assessor system sends thousands of dollars for a while.
            scale = np.where(active & (county == self.affected_county),
                             1.0 / config.resolved_magnitude, 1.0)
            money = {k: v * scale for k, v in money.items()}
            extra = {k: v * scale for k, v in extra.items()}
        money = {k: np.round(v, 2) for k, v in money.items()}
        money["actual_levy_amount"] = np.where(draws["labelled"] < config.labelled_share,
                                               money["actual_levy_amount"], np.nan)
        columns = {**self._descriptive_columns(index, parcel), "levy_rate": rate, **money}
        ordered = {name: columns[name] for name in RECORD_FIELDS}
        return {**ordered, **extra} if components else ordered

    def _choose_parcels(self, draws: dict[str, np.ndarray], active: np.ndarray) -> np.ndarray:
        roll = self._roll
        parcel = draws["parcel"] % roll.base_parcels
        if self.config.scenario == "new-property-class":
            switch = active & (draws["new_class"] < self.config.resolved_magnitude)
            new_parcel = roll.base_parcels + draws["new_parcel"] % _new_parcels(roll)
            parcel = np.where(switch, new_parcel, parcel)
        return parcel

    def _exemptions(self, parcel: np.ndarray, assessed: np.ndarray, active: np.ndarray,
                    draws: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(exemption on the record, exemption the levy formula applies)."""
        roll = self._roll
        recorded = _exemption(roll.exemption_flat[parcel], roll.exemption_share[parcel],
                              assessed)
        shown_share = _ROLL_SHOWS_RAISED_EXEMPTION.get(self.config.scenario)
        if shown_share is None:
            return recorded, recorded
        raised = _exemption(roll.exemption_flat[parcel] * (1 + self.config.resolved_magnitude),
                            roll.exemption_share[parcel], assessed)
        # The assessor's roll lags the new law: few records (or none) show the raised exemption.
        shown = active & (draws["roll_update"] < shown_share)
        return np.where(shown, raised, recorded), np.where(active, raised, recorded)

    def _relieved(self, parcel: np.ndarray, assessed: np.ndarray, relieved: np.ndarray,
                  levy_exemption: np.ndarray) -> np.ndarray:
        """``relief_at``: the exemption the bills apply once the relief holds (as
        homestead-relief's, which the roll never shows)."""
        roll = self._roll
        raised = _exemption(roll.exemption_flat[parcel]
                            * (1 + DEFAULT_MAGNITUDE["homestead-relief"]),
                            roll.exemption_share[parcel], assessed)
        return np.where(relieved, raised, levy_exemption)

    def _descriptive_columns(self, index: np.ndarray,
                             parcel: np.ndarray) -> dict[str, np.ndarray]:
        config, roll = self.config, self._roll
        return {
            "schema_version": np.full(len(index), SCHEMA_VERSION, dtype=np.int64),
            "record_id": _record_ids(config.seed, index),
            "parcel_id": roll.parcel_id[parcel],
            "county": _COUNTY_NAMES[roll.county[parcel]],
            "tax_district": self._districts.names[roll.district[parcel]],
            "property_class": _CLASS_NAME_ARRAY[roll.property_class[parcel]],
            "tax_year": np.full(len(index), config.resolved_tax_year, dtype=np.int64),
            "event_time": (self._start_ms + index * config.event_interval_ms
                           ).astype("datetime64[ms]"),
        }

    def _active(self, index: np.ndarray) -> np.ndarray:
        config = self.config
        if config.scenario == "none":
            return np.zeros(index.shape, dtype=bool)
        active = index >= config.change_at
        if config.end_at is not None:
            active &= index < config.end_at
        return active

    def _value_factors(self, index: np.ndarray, active: np.ndarray, parcel: np.ndarray,
                       county: np.ndarray, district: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Per record: the factor on the parcel's values, and on its district's taxable base
        (which drives rate compression)."""
        config, m = self.config, self.config.resolved_magnitude
        ones = np.ones(index.shape)
        if config.scenario == "reassessment":
            factor = np.where(active & (county == self.affected_county), 1 + m, 1.0)
            return factor, factor
        if config.scenario == "gradual":
            progress = np.clip((index - config.change_at + 1) / config.resolved_duration, 0, 1)
            factor = np.where(active, 1 + m * progress, 1.0)
            return factor, factor
        if config.scenario == "variance":
            classes = self._roll.property_class[parcel]
            widen = np.exp(_CLASS_SIGMA[classes] * m * self._roll.value_z[parcel])
            assert self._variance_base_ratio is not None
            return (np.where(active, widen, 1.0),
                    np.where(active, self._variance_base_ratio[district], 1.0))
        return ones, ones

    def _levy_rate(self, district: np.ndarray, active: np.ndarray,
                   base_factor: np.ndarray) -> np.ndarray:
        """The district's voted rate, compressed to its levy limit over its taxable base."""
        districts = self._districts
        voted = districts.voted_rate[district]
        limit = districts.levy_limit[district]
        if self.config.scenario in ("levy-rate-change", "district-levy-change"):
            # A voted levy (lid lift): the rate and the limit rise together.
            voted_in = active & np.isin(district, self._rate_districts())
            raised = voted + self.config.resolved_magnitude
            limit = np.where(voted_in, limit * raised / voted, limit)
            voted = np.where(voted_in, raised, voted)
        rate = np.minimum(voted, limit / (districts.taxable_base[district] * base_factor))
        return np.clip(np.round(rate, RATE_DECIMALS), 10.0 ** -RATE_DECIMALS, 0.1)

    def _rate_districts(self) -> np.ndarray:
        """Districts whose voters approve a levy: three of the county, or one."""
        if self.config.scenario == "levy-rate-change":
            return self.affected_district_indices
        if self.config.scenario == "district-levy-change":
            return self.affected_district_indices[:1]
        return self.affected_district_indices[:0]

    def _spread_base_ratio(self) -> np.ndarray:
        """variance: each district's taxable base after the spread widens, over before."""
        roll, m = self._roll, self.config.resolved_magnitude
        base = slice(0, roll.base_parcels)
        widened = roll.assessed[base] * np.exp(
            _CLASS_SIGMA[roll.property_class[base]] * m * roll.value_z[base])
        taxable = widened - _exemption(roll.exemption_flat[base], roll.exemption_share[base],
                                       widened)
        after = np.bincount(roll.district[base], weights=taxable,
                            minlength=len(self._districts.names))
        return after / self._districts.taxable_base

    def _describe(self, county: str, districts: list[str]) -> str:
        m = self.config.resolved_magnitude
        return {
            "reassessment": f"{county} county revalues: assessed values x{1 + m:g}, market "
                            "values unchanged; levy limits compress its district rates",
            "levy-rate-change": f"voters approve a levy of +{m * 1000:g} mills in "
                                + ", ".join(districts),
            "district-levy-change": f"voters of {', '.join(districts)} ({county}) approve a "
                                    f"levy of +{m * 1000:g} mills",
            "exemption-policy": f"homestead exemption raised x{1 + m:g} in the levy formula; "
                                f"only {UPDATED_ROLL_SHARE:.0%} of records show it yet",
            "unit-bug": f"{county} county's system sends money fields divided by {m:g}",
            "new-property-class": f"new property class {NEW_PROPERTY_CLASS.name} makes up "
                                  f"{m:.0%} of records",
            "gradual": f"values inflate linearly to x{1 + m:g} over "
                       f"{self.config.resolved_duration} records, then stay",
            "variance": f"log-spread of values widens x{1 + m:g} (medians unchanged)",
            "homestead-relief": f"an exemption-policy change granted on the bills alone: the "
                                f"homestead exemption is raised x{1 + m:g} in the levy "
                                "formula, while no record field changes (only the actual "
                                "levies, the labels, show it)",
        }[self.config.scenario]


# --------------------------------------------------------------------- arrival orders

ORDERS = ("time", "shuffled", "county-batches", "district-sorted", "roll-cycle")
ORDER_BLOCK_MS = 86_400_000  # records are re-ordered within each day of event time
COUNTY_SLICE_RECORDS = 2000


def arrival_order(columns: dict[str, np.ndarray], order: str, seed: int = 0,
                  slice_records: int = COUNTY_SLICE_RECORDS) -> np.ndarray:
    """A permutation of ``columns``' rows (one event-time block: the caller cuts the stream
    into days) as they would arrive:

    * ``time``: event-time order, as generated;
    * ``shuffled``: any order;
    * ``county-batches``: each county uploads its roll in slices of ``slice_records`` rows,
      the slices of all counties interleaved at random;
    * ``district-sorted``: districts certify one after another (stable within a district);
    * ``roll-cycle``: the assessor's batch job walks the counties in turn (a different
      county first each day), each county's records together in event-time order.

    Values, counts and event times are untouched; only the order changes."""
    n = len(columns["record_id"])
    rng = np.random.default_rng([seed, 7, n])
    if order == "time":
        return np.arange(n)
    if order == "shuffled":
        return rng.permutation(n)
    if order == "district-sorted":
        return np.argsort(columns["tax_district"].astype(str), kind="stable")
    if order == "roll-cycle":
        counties = columns["county"].astype(str)
        names = sorted(set(counties.tolist()))
        first = int(rng.integers(len(names))) if names else 0
        turn = {name: (i - first) % len(names) for i, name in enumerate(names)}
        return np.argsort(np.array([turn[c] for c in counties.tolist()]), kind="stable")
    if order == "county-batches":
        counties = columns["county"].astype(str)
        slices = []
        for name in sorted(set(counties.tolist())):
            rows = np.flatnonzero(counties == name)
            slices += [rows[i:i + slice_records] for i in range(0, rows.size, slice_records)]
        picked = rng.permutation(len(slices))
        return np.concatenate([slices[i] for i in picked]) if slices else np.arange(0)
    raise ValueError(f"unknown order {order!r}; choose from " + ", ".join(ORDERS))


def ordered_blocks(simulator: LevySimulator, records: int, order: str
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Records ``0..records-1`` as columns in ``order``: re-ordered within each day of event
    time (a day's uploads arrive before the next day's), one block at a time."""
    for columns, _start, _permutation in _ordered_ranges(simulator, records, order):
        yield columns


def _ordered_ranges(simulator: LevySimulator, records: int, order: str
                    ) -> Iterator[tuple[dict[str, np.ndarray], int, np.ndarray]]:
    """Per day of event time: (its records as columns in ``order``, the index of its first
    record, the permutation applied)."""
    interval = simulator.config.event_interval_ms
    block = records if interval <= 0 else max(1, ORDER_BLOCK_MS // interval)
    for start in range(0, records, max(block, 1)):
        stop = min(records, start + block)
        columns = simulator.columns(start, stop)
        permutation = arrival_order(columns, order, simulator.config.seed + start)
        yield {name: values[permutation] for name, values in columns.items()}, start, permutation


# --------------------------------------------------------------------- late labels

LABEL_FIELDS = ("schema_version", "record_id", "parcel_id", "tax_year", "actual_levy_amount",
                "event_time")
_QUEUED = ("event_ms", "ordinal", "record_id", "parcel_id", "tax_year", "actual_levy_amount")


def label_columns(records: dict[str, np.ndarray], delays_ms: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """The labels of the labelled rows of ``records`` (columns as from
    ``LevySimulator.columns``; a row is labelled when its ``actual_levy_amount`` is not NaN),
    in row order: ``LABEL_FIELDS``, ``event_time`` (datetime64[ms]) the record's plus its row
    of ``delays_ms``."""
    rows = np.flatnonzero(~np.isnan(records["actual_levy_amount"]))
    return _labels_of_rows(records, delays_ms, rows)


def _labels_of_rows(records: dict[str, np.ndarray], delays_ms: np.ndarray,
                    rows: np.ndarray) -> dict[str, np.ndarray]:
    event_ms = records["event_time"][rows].astype(np.int64) + delays_ms[rows]
    return {"schema_version": np.full(rows.size, SCHEMA_VERSION, dtype=np.int64),
            "record_id": records["record_id"][rows], "parcel_id": records["parcel_id"][rows],
            "tax_year": records["tax_year"][rows],
            "actual_levy_amount": records["actual_levy_amount"][rows],
            "event_time": event_ms.astype("datetime64[ms]")}


def to_labels(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Label columns (as from ``label_columns``) to levy-label v1 dicts."""
    values = [columns[name].tolist() for name in LABEL_FIELDS[:-1]]
    values.append(_rfc3339(columns["event_time"]).tolist())
    return [{"schema_version": v, "record_id": i, "parcel_id": p, "tax_year": y,
             "actual_levy_amount": a, "event_time": t}
            for v, i, p, y, a, t in zip(*values, strict=True)]


@dataclass(frozen=True)
class Arrivals:
    """A stretch of the merged stream: records (columns, in arrival order) and the labels
    (``LABEL_FIELDS`` columns) that arrive among them; label ``k`` arrives just before record
    ``label_slots[k]`` (ascending; ``len`` of the records means after the last of them)."""

    records: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    label_slots: np.ndarray

    def interleave(self, records: Sequence[T], labels: Sequence[T]) -> Iterator[tuple[bool, T]]:
        """One item per record row and per label row, merged in arrival order, each with
        True for a label."""
        slots = self.label_slots.tolist()
        k = 0
        for row, record in enumerate(records):
            while k < len(slots) and slots[k] == row:
                yield True, labels[k]
                k += 1
            yield False, record
        for label in labels[k:]:
            yield True, label


def arrivals(simulator: LevySimulator, records: int, order: str = "time",
             inline_actuals: bool = False,
             batch_records: int = CHUNK_RECORDS) -> Iterator[Arrivals]:
    """Records ``0..records-1`` in ``order`` (as ``ordered_blocks``), merged with the labels
    of the labelled ones (each record's label event time: its own plus the
    ``config.label_delay`` drawn for it).

    A label arrives once the records' watermark (the latest record event time so far) has
    passed its event time, and never before its own record; labels arriving together come in
    event-time order (then their records' arrival order). In time order: after the records at
    or before its event time, before the first one after it. Labels still waiting when the
    records end arrive after the last one. Without ``inline_actuals`` the records lose their
    ``actual_levy_amount`` (it travels only in the label, as on a real stream)."""
    merger = _LabelMerger()
    blocks = _arrival_blocks(simulator, records, order, batch_records)
    current = next(blocks, None)
    while current is not None:
        following = next(blocks, None)
        columns, delays = current
        labels, slots = merger.merge(columns, delays, last=following is None)
        if not inline_actuals:
            columns = {**columns, "actual_levy_amount": np.full(len(delays), np.nan)}
        yield Arrivals(columns, labels, slots)
        current = following


class _LabelMerger:
    """Places labels among the records, block by block (see ``arrivals``)."""

    def __init__(self) -> None:
        self._queue = _LabelQueue()
        self._watermark = int(np.iinfo(np.int64).min)
        self._ordinal = 0  # arrival position of the block's first record

    def merge(self, columns: dict[str, np.ndarray], delays: np.ndarray,
              last: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The labels arriving among this block's records (``last``: and after them), as
        ``Arrivals.labels`` and ``Arrivals.label_slots``."""
        count = len(delays)
        marks = np.maximum.accumulate(np.maximum(columns["event_time"].astype(np.int64),
                                                 self._watermark))
        self._watermark = int(marks[-1]) if count else self._watermark
        # Labels queued by earlier blocks whose time has come, then this block's own: due
        # once the watermark passes them, but never before their record (the slot after it).
        due = self._queue.take_before(self._watermark)
        due_slots = np.searchsorted(marks, due["event_ms"], side="right")
        own = _queued_labels(columns, delays, self._ordinal)
        own_slots = np.maximum(own["ordinal"] - self._ordinal + 1,
                               np.searchsorted(marks, own["event_ms"], side="right"))
        self._ordinal += count
        waiting = own_slots >= count
        self._queue.add({name: values[waiting] for name, values in own.items()})
        parts = [(due, due_slots), ({name: values[~waiting] for name, values in own.items()},
                                    own_slots[~waiting])]
        if last:  # the records end: whatever still waits arrives after them
            rest = self._queue.take_all()
            parts.append((rest, np.full(len(rest["event_ms"]), count)))
        labels = {name: np.concatenate([part[name] for part, _ in parts]) for name in _QUEUED}
        slots = np.concatenate([part_slots for _, part_slots in parts])
        arrival = np.lexsort((labels["ordinal"], labels["event_ms"], slots))
        return _label_output(labels, arrival), slots[arrival]


def _arrival_blocks(simulator: LevySimulator, records: int, order: str, batch_records: int
                    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """(record columns in arrival order, each row's label delay in ms), block by block."""
    if order != "time":
        for columns, start, permutation in _ordered_ranges(simulator, records, order):
            stop = start + len(permutation)
            yield columns, simulator.label_delays_ms(start, stop)[permutation]
        return
    for start in range(0, records, batch_records):
        stop = min(records, start + batch_records)
        yield simulator.columns(start, stop), simulator.label_delays_ms(start, stop)


def _queued_labels(columns: dict[str, np.ndarray], delays: np.ndarray,
                   first_ordinal: int) -> dict[str, np.ndarray]:
    """The labels of a block's labelled rows, as the queue keeps them: event time in ms and
    the record's arrival ordinal (``first_ordinal`` + its row)."""
    rows = np.flatnonzero(~np.isnan(columns["actual_levy_amount"]))
    labels = _labels_of_rows(columns, delays, rows)
    return {"event_ms": labels["event_time"].astype(np.int64), "ordinal": first_ordinal + rows,
            **{name: labels[name] for name in _QUEUED[2:]}}


def _label_output(queued: dict[str, np.ndarray], arrival: np.ndarray) -> dict[str, np.ndarray]:
    return {"schema_version": np.full(arrival.size, SCHEMA_VERSION, dtype=np.int64),
            **{name: queued[name][arrival] for name in LABEL_FIELDS[1:-1]},
            "event_time": queued["event_ms"][arrival].astype("datetime64[ms]")}


class _LabelQueue:
    """Labels whose record has arrived, waiting for the records' watermark to pass their event
    time: months of event time, millions of records, about 100 bytes per waiting label.

    Kept as runs sorted by event time, taking the due labels slices each run's head. A new
    run is merged into the one before while it is at least half as long, so there are a few
    dozen runs at most and each label is merged a few dozen times at most: neither one run
    per block (thousands of heads to slice per block) nor one run re-sorted per block."""

    def __init__(self) -> None:
        self._runs: list[dict[str, np.ndarray]] = []

    def add(self, labels: dict[str, np.ndarray]) -> None:
        if not len(labels["event_ms"]):
            return
        self._runs.append(_by_event_time(labels))
        runs = self._runs
        while len(runs) > 1 and 2 * len(runs[-1]["event_ms"]) >= len(runs[-2]["event_ms"]):
            newer = runs.pop()
            runs.append(_by_event_time(_concatenated([runs.pop(), newer])))

    def take_before(self, limit_ms: int) -> dict[str, np.ndarray]:
        """Remove and return the labels with event time before ``limit_ms``."""
        taken, kept = [], []
        for run in self._runs:
            times = run["event_ms"]
            if times[0] >= limit_ms:  # the usual case: nothing of this run is due yet
                kept.append(run)
                continue
            cut = int(np.searchsorted(times, limit_ms, side="left"))
            taken.append({name: values[:cut] for name, values in run.items()})
            if cut < len(times):
                kept.append({name: values[cut:] for name, values in run.items()})
        self._runs = kept
        return _concatenated(taken)

    def take_all(self) -> dict[str, np.ndarray]:
        taken, self._runs = self._runs, []
        return _concatenated(taken)


def _by_event_time(labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.argsort(labels["event_ms"], kind="stable")  # merges sorted runs in linear time
    return {name: values[order] for name, values in labels.items()}


def _concatenated(runs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not runs:
        return {"event_ms": np.zeros(0, dtype=np.int64), "ordinal": np.zeros(0, dtype=np.int64),
                "record_id": np.zeros(0, dtype=object), "parcel_id": np.zeros(0, dtype=object),
                "tax_year": np.zeros(0, dtype=np.int64),
                "actual_levy_amount": np.zeros(0, dtype=np.float64)}
    return {name: np.concatenate([run[name] for run in runs]) for name in _QUEUED}


def record_id(seed: int, index: int) -> str:
    """The record id of record ``index`` of the stream of ``seed``."""
    return f"sim-{seed}-{index:010d}"


def to_records(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Columns (as from ``LevySimulator.columns``) to record dicts; an unlabelled record has no
    ``actual_levy_amount`` key. Extra columns are ignored."""
    values = [columns[name].tolist() for name in RECORD_FIELDS[:-1] if name != "event_time"]
    values.insert(RECORD_FIELDS.index("event_time"), _rfc3339(columns["event_time"]).tolist())
    # A dict display with constant keys builds twice as fast as dict(zip(names, row)); the
    # records hold no cycles, so the collector only slows the build.
    collecting = gc.isenabled()
    gc.disable()
    try:
        records = _record_dicts(values)
    finally:
        if collecting:
            gc.enable()
    actual = columns["actual_levy_amount"]
    labelled = np.flatnonzero(~np.isnan(actual))
    for i, amount in zip(labelled.tolist(), actual[labelled].tolist(), strict=True):
        records[i]["actual_levy_amount"] = amount
    return records


def _record_dicts(values: list[list[Any]]) -> list[dict[str, Any]]:
    return [
        {"schema_version": v, "record_id": i, "parcel_id": p, "county": c, "tax_district": d,
         "property_class": k, "tax_year": y, "assessed_value": a, "market_value": m,
         "exemption_amount": e, "levy_rate": r, "prior_levy_amount": pl,
         "new_construction_value": nc, "event_time": t}
        for v, i, p, c, d, k, y, a, m, e, r, pl, nc, t in zip(*values, strict=True)]


def _record_ids(seed: int, index: np.ndarray) -> np.ndarray:
    """``record_id`` for many indexes at once (per-record f-strings cost a third of a chunk)."""
    digits = np.strings.zfill(index.astype(np.dtypes.StringDType()), 10)
    return np.strings.add(f"sim-{seed}-", digits).astype(object)


def string_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``columns`` with ``event_time`` as RFC 3339 strings, as in records and files."""
    converted = dict(columns)
    converted["event_time"] = _rfc3339(columns["event_time"])
    return converted


def _rfc3339(times: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(times.astype("datetime64[ms]"), unit="ms", timezone="UTC")


# --------------------------------------------------------------------- the roll and draws

_COUNTY_NAMES = np.array([c.name for c in COUNTIES], dtype=object)
_CLASS_NAME_ARRAY = np.array(CLASS_NAMES, dtype=object)
_ALL_CLASSES = PROPERTY_CLASSES + (NEW_PROPERTY_CLASS,)
_CLASS_SIGMA = np.array([c.sigma for c in _ALL_CLASSES])
_PARCEL_STRIDE = 37_139_213  # odd and not a multiple of 5: coprime with 10**8


def _draw_chunk(seed: int, chunk: int) -> dict[str, np.ndarray]:
    """Every random number a chunk uses, in a fixed order, whatever the scenario."""
    rng = np.random.default_rng([seed, 3, chunk])
    size = CHUNK_RECORDS
    return {
        "parcel": rng.integers(0, 2**62, size),
        "new_class": rng.random(size),
        "new_parcel": rng.integers(0, 2**62, size),
        "noise": rng.normal(0.0, NOISE_SIGMA, size),
        "correction": rng.random(size),
        "correction_size": rng.uniform(-0.15, 0.15, size),
        "labelled": rng.random(size),
        "roll_update": rng.random(size),
    }


def _billed(formula_levy: np.ndarray, draws: dict[str, np.ndarray]) -> np.ndarray:
    """The bill: the formula with billing noise, and a few supplemental corrections."""
    corrected = np.where(draws["correction"] < CORRECTION_SHARE,
                         1 + draws["correction_size"], 1.0)
    return np.maximum(formula_levy * (1 + draws["noise"]) * corrected, 0.0)


def _new_parcels(roll: _Roll) -> int:
    return len(roll.parcel_id) - roll.base_parcels


def _district_layout() -> tuple[np.ndarray, np.ndarray]:
    """District names and the county index of each."""
    names, counties = [], []
    for county_index, county in enumerate(COUNTIES):
        for number in range(1, county.districts + 1):
            names.append(f"{county.code}-TCA-{number:02d}")
            counties.append(county_index)
    return np.array(names, dtype=object), np.array(counties)


def _build_roll(rng: np.random.Generator, parcels: int, district_county: np.ndarray,
                stale_county: int) -> _Roll:
    """``parcels`` parcels, then a tenth as many of the new class (sampled only by the
    new-property-class scenario). Prior levies are filled in once district rates exist."""
    total = parcels + max(parcels // 10, 10)
    shares = np.array([c.share for c in COUNTIES])
    county = rng.choice(len(COUNTIES), size=total, p=shares / shares.sum())
    class_shares = np.array([c.share for c in PROPERTY_CLASSES])
    klass = rng.choice(len(PROPERTY_CLASSES), size=total, p=class_shares / class_shares.sum())
    klass[parcels:] = NEW_CLASS
    district = _pick_districts(rng, county, district_county)
    z, assessed, market = _roll_values(rng, klass, county, stale_county)
    exemption_flat, exemption_share = _roll_exemptions(rng, klass)
    rate_of_class = np.array([c.new_construction_rate for c in _ALL_CLASSES])[klass]
    construction_share = np.where(rng.random(total) < rate_of_class,
                                  rng.uniform(0.05, 0.40, total), 0.0)
    # Special assessments: a flat district charge (weed control, storm water), plus a local
    # improvement district on a few parcels.
    flat_charge = rng.uniform(15.0, 250.0, len(district_county))[district]
    improvement = np.where(rng.random(total) < 0.04, rng.lognormal(6.5, 0.5, total), 0.0)
    special = np.round(flat_charge + improvement, 2)
    return _Roll(_parcel_ids(rng, county), county, district, klass, z, assessed, market,
                 exemption_flat, exemption_share, construction_share, np.zeros(total), special,
                 parcels)


def _roll_values(rng: np.random.Generator, klass: np.ndarray, county: np.ndarray,
                 stale_county: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-normal market values by class and county; assessed values at each class's
    assessment ratio (the stale county's roll lags). Returns (z, assessed, market)."""
    total = len(klass)
    # Clipped at 4 sigma so that no value, even widened, gets absurd (a $10B farm).
    z = np.clip(rng.standard_normal(total), -4.0, 4.0)
    median = np.array([c.median_value for c in _ALL_CLASSES])[klass]
    level = np.array([c.value_level for c in COUNTIES])[county]
    market_value = median * level * np.exp(_CLASS_SIGMA[klass] * z)
    ratio = np.array([c.assessment_ratio for c in _ALL_CLASSES])[klass]
    ratio = ratio * np.where(county == stale_county, STALE_ASSESSMENT_LEVEL, 1.0)
    assessed = np.round(np.maximum(market_value * ratio, 1000.0))
    market = np.round(market_value * rng.lognormal(0.0, 0.08, total))
    return z, assessed, market


def _roll_exemptions(rng: np.random.Generator,
                     klass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat amount, share of assessed value): homesteads, seniors on top, abated businesses,
    fully exempt properties."""
    total = len(klass)
    homestead = (klass == RESIDENTIAL) & (rng.random(total) < 0.65)
    senior = homestead & (rng.random(total) < 0.10)
    abated = np.isin(klass, [COMMERCIAL, INDUSTRIAL]) & (rng.random(total) < 0.06)
    flat = np.where(homestead, HOMESTEAD_EXEMPTION, 0.0)
    share = np.select([klass == EXEMPT, senior, abated],
                      [1.0, SENIOR_EXEMPTION_SHARE, rng.uniform(0.25, 0.5, total)], 0.0)
    return flat, share


def _parcel_ids(rng: np.random.Generator, county: np.ndarray) -> np.ndarray:
    # Parcel numbers: an affine bijection of 0..10**8-1, so unique without a big shuffle.
    offset = int(rng.integers(10**8))
    numbers = (np.arange(len(county), dtype=np.int64) * _PARCEL_STRIDE + offset) % 10**8
    return np.array([f"{COUNTIES[c].code}-{n:08d}" for c, n in
                     zip(county.tolist(), numbers.tolist(), strict=True)], dtype=object)


def _pick_districts(rng: np.random.Generator, county: np.ndarray,
                    district_county: np.ndarray) -> np.ndarray:
    """A district within each parcel's county, some districts larger than others."""
    district = np.empty(len(county), dtype=np.int64)
    for county_index in range(len(COUNTIES)):
        members = np.flatnonzero(district_county == county_index)
        weights = rng.uniform(0.5, 2.0, len(members))
        rows = np.flatnonzero(county == county_index)
        district[rows] = rng.choice(members, size=len(rows), p=weights / weights.sum())
    return district


def _build_districts(rng: np.random.Generator, names: np.ndarray, district_county: np.ndarray,
                     roll: _Roll) -> _Districts:
    """Voted rates and statutory levy limits, against each district's taxable base."""
    count = len(names)
    base = slice(0, roll.base_parcels)
    taxable = roll.assessed[base] - _exemption(roll.exemption_flat[base],
                                               roll.exemption_share[base], roll.assessed[base])
    taxable_base = np.bincount(roll.district[base], weights=taxable, minlength=count)
    voted = rng.uniform(0.008, 0.018, count)
    # A quarter or so of districts sit above their limit and are compressed from the start.
    limit = voted * taxable_base * rng.uniform(0.9, 1.3, count)
    return _Districts(names, district_county, voted, limit, taxable_base)


def _with_prior_levy(rng: np.random.Generator, roll: _Roll, districts: _Districts) -> _Roll:
    """Last year's bill: last year's value (before market growth and this year's new
    construction), at a slightly different rate."""
    total = len(roll.parcel_id)
    growth = rng.normal(0.04, 0.03, total)
    rate_noise = rng.normal(0.0, 0.02, total)
    rate = np.minimum(districts.voted_rate, districts.levy_limit / districts.taxable_base)
    prior_value = roll.assessed * (1 - roll.construction_share) / (1 + growth)
    prior_taxable = prior_value - _exemption(roll.exemption_flat, roll.exemption_share,
                                             prior_value)
    prior = prior_taxable * rate[roll.district] * (1 + rate_noise) + roll.special
    return dataclasses.replace(roll, prior_levy=np.round(np.maximum(prior, 0.0), 2))


def _exemption(flat: np.ndarray, share: np.ndarray, assessed: np.ndarray) -> np.ndarray:
    """Exemptions in whole dollars, never above the assessed value."""
    return np.minimum(np.round(flat + share * assessed), assessed)
