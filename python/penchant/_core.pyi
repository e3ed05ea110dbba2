"""Stubs for penchant._core, the compiled Rust kernels. Private: use the ``penchant`` API."""

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "COVISIT_UNKNOWN",
    "FACTORS",
    "MAX_EMBEDDING_DIM",
    "MAX_EXPONENT",
    "MAX_FEATURES_PER_ITEM",
    "MAX_ID_BYTES",
    "MAX_ITEMS",
    "MAX_NAME_BYTES",
    "PARALLEL_MIN_ROWS",
    "CoVisitation",
    "Table",
    "accumulate_signal_objects",
    "accumulate_signals",
    "aggregate_interests",
    "attribute_quantiles",
    "build_signals",
    "categorical_choice",
    "decay_factor",
    "decayed_weights",
    "decode_interests",
    "forward_increments",
    "history_entries",
    "history_sort_key",
    "interest_evidence",
    "normalize",
    "num_threads",
    "packed_history_last_time",
    "periodic_histogram",
    "read_history",
    "read_packed_history",
    "rebase_factor",
    "set_num_threads",
    "set_parallel_min_rows",
    "signal_history_member",
    "signal_increments",
    "signals_fit_to_store",
    "summarize_history",
    "summarize_packed_history",
    "top_k",
]

_HistoryColumns: TypeAlias = tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.uint32],
    npt.NDArray[np.uint32],
    npt.NDArray[np.float64],
    list[str],
]
"""A history in columns: per event its time, weight and half-life, then per attribute value
its row, attribute id and value, and the attribute names."""
_HistorySummary: TypeAlias = tuple[
    list[str],
    list[int],
    list[float],
    list[float],
    list[float],
    int,
    tuple[float, float, list[int], float, list[int]] | None,
]
"""What preference extraction reads of a history at a moment: the attribute names; per
attribute its count, total weight, squared weights and quantiles (row-major); the number of
events; and, while some activity remains, the effective number of events and per period (hours
of day, then days of the week) the concentration and the peak bins."""

FACTORS: Final[list[str]]
COVISIT_UNKNOWN: Final[int]
PARALLEL_MIN_ROWS: Final[int]
MAX_ITEMS: Final[int]
MAX_ID_BYTES: Final[int]
MAX_NAME_BYTES: Final[int]
MAX_FEATURES_PER_ITEM: Final[int]
MAX_EMBEDDING_DIM: Final[int]
MAX_EXPONENT: Final[float]

@final
class CoVisitation:
    def __new__(
        cls,
        window: int = 20,
        lag_scale: float = 5.0,
        max_neighbours: int = 200,
        half_life: float | None = None,
        recent: int = 20,
        recency_scale: float = 4.0,
        alpha: float = 0.3,
        beta: float = 0.5,
    ) -> CoVisitation: ...
    @property
    def window(self) -> int: ...
    @property
    def lag_scale(self) -> float: ...
    @property
    def max_neighbours(self) -> int: ...
    @property
    def half_life(self) -> float | None: ...
    @property
    def recent(self) -> int: ...
    @property
    def recency_scale(self) -> float: ...
    @property
    def alpha(self) -> float: ...
    @property
    def beta(self) -> float: ...
    @property
    def events(self) -> int: ...
    @property
    def entries(self) -> int: ...
    @property
    def latest(self) -> float | None: ...
    def __len__(self) -> int: ...
    def lookup(self, ids: Iterable[str | int]) -> npt.NDArray[np.uint32]: ...
    def keys(self, dense: Sequence[int]) -> list[str]: ...
    def observe(self, item: str | int, previous: Iterable[str | int], timestamp: float) -> None: ...
    def observe_many(
        self,
        users: npt.NDArray[np.uint32],
        items: Iterable[str | int],
        times: npt.NDArray[np.float64],
        seeds: Iterable[Iterable[str | int]],
    ) -> None: ...
    def scores(
        self,
        history: npt.NDArray[np.uint32],
        candidates: npt.NDArray[np.uint32],
        recent: int | None = None,
        recency_scale: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> npt.NDArray[np.float64]: ...
    def counts(self, items: npt.NDArray[np.uint32]) -> npt.NDArray[np.float64]: ...
    def neighbours(self, item: str | int, k: int) -> list[tuple[str, float]]: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> CoVisitation: ...

_FilterSpec = tuple[list[int], list[int], list[int], list[int], list[tuple[str, float, float]]]

@final
class Table:
    @staticmethod
    def from_items(
        items: Iterable[Any],
        attributes: Sequence[str],
        known: tuple[dict[str, int], Sequence[str]] | None = None,
        intern_prefixes: Sequence[str] = ...,
    ) -> tuple[Table, npt.NDArray[np.float64]]: ...
    @staticmethod
    def from_columns(
        ids: Iterable[str | int],
        indptr: npt.NDArray[np.int64],
        feature_ids: npt.NDArray[np.uint32],
        feature_weights: npt.NDArray[np.float32],
        feature_names: Sequence[str],
        embeddings: npt.NDArray[np.float32] | None,
        timestamps: npt.NDArray[np.float64] | None,
        popularity: npt.NDArray[np.float64] | None,
        attribute_names: Sequence[str],
        attributes: Sequence[npt.NDArray[np.float64]],
    ) -> Table: ...
    def __len__(self) -> int: ...
    @property
    def dim(self) -> int | None: ...
    @property
    def feature_names(self) -> list[str]: ...
    @property
    def attribute_names(self) -> list[str]: ...
    def rows_of(self, ids: Iterable[Any], missing_ok: bool = False) -> npt.NDArray[np.uint32]: ...
    def ids(self, rows: Sequence[int]) -> list[str | int]: ...
    def feature_ids(self, names: Sequence[str]) -> list[int | None]: ...
    def feature_ids_with_prefix(self, prefixes: Sequence[str]) -> list[int]: ...
    def exclusions(self, rows: Sequence[int], filters: _FilterSpec) -> list[tuple[int, str, str]]: ...
    def row_features(self, row: int) -> list[tuple[str, float]]: ...
    def interest_ids(self, interests: dict[str, float]) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64]]: ...
    def column(self, name: str, rows: Sequence[int]) -> npt.NDArray[Any] | None: ...
    def find_rows(self, ids: Iterable[Any]) -> npt.NDArray[np.int64]: ...
    def affinity(
        self,
        rows: npt.NDArray[np.uint32],
        feature_ids: npt.NDArray[np.uint32],
        weights: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]: ...
    def rank(
        self,
        rows: npt.NDArray[np.uint32] | None,
        base_scores: npt.NDArray[np.float64] | None,
        interest_ids: npt.NDArray[np.uint32],
        interest_weights: npt.NDArray[np.float64],
        taste: npt.NDArray[np.float32] | None,
        weights: Sequence[float],
        normalization: Sequence[str],
        now: float,
        recency_half_life: float,
        extra: Sequence[tuple[npt.NDArray[np.float64], float, str]],
        filters: _FilterSpec,
        k: int,
        mmr_lambda: float | None = None,
        feature_cap: tuple[int, Sequence[int]] | None = None,
        pool: int = 0,
        novelty: tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64], float, float] | None = None,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64], npt.NDArray[np.float64], int]: ...

def normalize(values: npt.NDArray[np.float64], method: str) -> npt.NDArray[np.float64]: ...
def top_k(scores: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.uint32]: ...
def forward_increments(
    times: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], landmark: float, half_life: float
) -> npt.NDArray[np.float64]: ...
def decay_factor(age: float, half_life: float) -> float: ...
def rebase_factor(old: float, new: float, half_life: float) -> float: ...
def aggregate_interests(
    times: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    indptr: npt.NDArray[np.int64],
    feature_ids: npt.NDArray[np.uint32],
    feature_weights: npt.NDArray[np.float64],
    n_features: int,
    now: float,
    half_life: float,
) -> npt.NDArray[np.float64]: ...
def set_num_threads(n: int) -> bool: ...
def num_threads() -> int: ...
def set_parallel_min_rows(n: int) -> int: ...

# Profile kernels (rust/profile.rs) and the history reader.

def accumulate_signals(
    times: Sequence[float],
    weights: Sequence[float],
    channels: Sequence[int],
    half_lives: Sequence[float],
    indptr: Sequence[int],
    feature_ids: Sequence[int],
    feature_weights: Sequence[float],
    landmark: float,
    n_features: int,
) -> tuple[list[int], list[int], list[bool], list[float], list[int], list[float]]: ...
def accumulate_signal_objects(
    signals: list[Any], landmark: float, rebase_exponent: float
) -> tuple[
    list[str],
    list[float],
    float | None,
    tuple[list[int], list[int], list[bool], list[float], list[int], list[float]],
]: ...
def decayed_weights(
    times: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], half_lives: npt.NDArray[np.float64], now: float
) -> npt.NDArray[np.float64]: ...
def attribute_quantiles(
    attribute_ids: npt.NDArray[np.uint32],
    values: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    n_attributes: int,
    quantiles: Sequence[float],
) -> tuple[list[float], list[float], list[float], list[int]]: ...
def periodic_histogram(
    times: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], period: float, bins: int, offset: float
) -> list[float]: ...
def build_signals(
    feedbacks: list[Any],
    weights: Sequence[float],
    half_lives: Sequence[float],
    times: Sequence[float],
    signal_class: type[Any],
) -> list[Any]: ...
def interest_evidence(
    interests: dict[str, Any], now: float, landmark: float
) -> tuple[list[str], list[float], list[float]]: ...
def categorical_choice(
    names: list[str],
    positive: list[float],
    negative: list[float],
    strength: list[float] | None,
    unwanted: list[bool] | None,
    min_confidence: float,
    max_features: int,
    prior: float,
) -> tuple[list[tuple[int, float, float]], list[tuple[int, float, float]]]: ...
def read_history(interactions: list[Any]) -> _HistoryColumns: ...
def read_packed_history(packed: bytes | memoryview, default_half_life: float) -> _HistoryColumns: ...
def decode_interests(blob: bytes, interest_class: type[Any]) -> dict[str, Any]: ...
def history_entries(blob: bytes) -> tuple[int, bytes]: ...
def history_sort_key(microseconds: int) -> bytes: ...
def signal_history_member(signal: Any, feedback_type_class: type[Any]) -> bytes | None: ...
def signal_increments(
    landmark: float, signals: list[Any], channel_keys: Callable[[float], tuple[str, str]]
) -> list[list[tuple[str, str, float]]]: ...
def signals_fit_to_store(
    signals: list[Any],
    user_id: str | None,
    signal_class: type[Any],
    feedback_type_class: type[Any],
    max_id_bytes: int,
    max_name_bytes: int,
) -> bool: ...
def summarize_history(
    interactions: list[Any], now: float, quantiles: Sequence[float], utc_offset: float
) -> _HistorySummary: ...
def summarize_packed_history(
    packed: bytes | memoryview, now: float, default_half_life: float, quantiles: Sequence[float], utc_offset: float
) -> _HistorySummary: ...
def packed_history_last_time(packed: bytes | memoryview) -> float | None: ...
