"""Timestamped interaction files, read into one columnar form: MovieLens ml-latest-small
(``ratings.csv`` with genres from ``movies.csv`` and tags from ``tags.csv``), MovieLens ml-100k
(``u.data`` with ``u.item``), and a generic CSV of ``user,item,value,timestamp`` with an
optional ``features`` column.

Every reader checks what it reads: a missing file or column, a value that is not a finite
number, or an id that the item file does not know is a :class:`~penchant.ValidationError` that
names the file and line.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from penchant._validate import MAX_NAME_BYTES
from penchant.errors import ValidationError
from penchant.feedback_collector import FeedbackType

__all__ = ["FORMATS", "Interactions", "read_csv", "read_interactions", "read_ml_100k", "read_ml_latest_small"]

FORMATS = ("auto", "ml-latest-small", "ml-100k", "csv")
"""The formats :func:`read_interactions` knows; ``auto`` tells them apart by their files."""


@dataclass(frozen=True, eq=False)
class Interactions:
    """Events as columns, in file order. ``users[e]`` and ``items[e]`` index ``user_ids`` and
    ``item_ids``; the catalog is every item with at least one event, in ascending id order
    (numeric when all ids are integers). ``item_features[i]`` maps feature name → weight.
    ``rating_scale`` is the (low, high) of the values when they are ratings."""

    name: str
    user_ids: list[str]
    item_ids: list[str]
    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.float64]
    item_features: list[dict[str, float]]
    feedback_type: FeedbackType = FeedbackType.RATING
    rating_scale: tuple[float, float] | None = None
    titles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.users)
        for name in ("items", "values", "timestamps"):
            if len(getattr(self, name)) != n:
                raise ValidationError(f"interactions: {name} has {len(getattr(self, name))} entries, users has {n}")
        if len(self.item_features) != len(self.item_ids):
            raise ValidationError("interactions: one features entry per item is needed")
        if n and (self.users.min() < 0 or self.users.max() >= len(self.user_ids)):
            raise ValidationError("interactions: a user index is out of range")
        if n and (self.items.min() < 0 or self.items.max() >= len(self.item_ids)):
            raise ValidationError("interactions: an item index is out of range")
        for name in ("values", "timestamps"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValidationError(f"interactions: {name} must be finite")

    @property
    def n_events(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def subset(self, events: npt.NDArray[np.bool_]) -> Interactions:
        """The events where ``events`` is true, in the same order; users and catalog unchanged."""
        mask = np.asarray(events, dtype=bool)
        if mask.shape != self.users.shape:
            raise ValidationError(f"subset: expected a mask of shape {self.users.shape}, got {mask.shape}")
        return Interactions(
            self.name,
            self.user_ids,
            self.item_ids,
            self.users[mask],
            self.items[mask],
            self.values[mask],
            self.timestamps[mask],
            self.item_features,
            self.feedback_type,
            self.rating_scale,
            self.titles,
        )

    def feature_prefixes(self) -> list[str]:
        """The kinds of feature the items have (``genre``, ``tag``, ...)."""
        return sorted({name.partition(":")[0] for features in self.item_features for name in features})

    def with_features(self, prefixes: Iterable[str]) -> Interactions:
        """The same events with only the item features of the given kinds (``["genre"]``)."""
        keep = tuple(f"{p}:" for p in prefixes)
        features = [{n: w for n, w in f.items() if n.startswith(keep)} for f in self.item_features]
        return Interactions(
            self.name,
            self.user_ids,
            self.item_ids,
            self.users,
            self.items,
            self.values,
            self.timestamps,
            features,
            self.feedback_type,
            self.rating_scale,
            self.titles,
        )


# -- helpers ----------------------------------------------------------------------------------


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValidationError(f"{where}: {what} must be finite, got {text!r}")
    return value


def _timestamp(text: str, where: str) -> float:
    """Epoch seconds, or an ISO 8601 date and time (UTC when it names no zone)."""
    try:
        value = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValidationError(
                f"{where}: timestamp {text!r} is neither epoch seconds nor an ISO 8601 time"
            ) from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(value):
        raise ValidationError(f"{where}: timestamp must be finite, got {text!r}")
    return value


def _ordered(ids: Iterable[str]) -> list[str]:
    """Distinct ids in ascending order: numeric when every id is an integer."""
    distinct = set(ids)
    if all(_is_int(i) for i in distinct):
        return [str(v) for v in sorted(int(i) for i in distinct)]
    return sorted(distinct)


def _is_int(text: str) -> bool:
    return text.isdigit() or (text[:1] == "-" and text[1:].isdigit())


def _clean_name(kind: str, text: str) -> str | None:
    """A feature name ``kind:text`` with whitespace collapsed, or ``None`` when nothing is left."""
    words = " ".join(text.split())
    if not words:
        return None
    name = f"{kind}:{words}"
    return name if len(name.encode()) <= MAX_NAME_BYTES else None


def _open(path: Path, encoding: str = "utf-8") -> Iterable[list[str]]:
    if not path.is_file():
        raise ValidationError(f"{path}: file not found")
    with path.open(newline="", encoding=encoding) as handle:
        yield from csv.reader(handle)


def _header(
    rows: Iterable[list[str]], path: Path, required: Sequence[str]
) -> tuple[Iterable[list[str]], dict[str, int]]:
    iterator = iter(rows)
    try:
        header = next(iterator)
    except StopIteration:
        raise ValidationError(f"{path}: the file is empty") from None
    columns = {name.strip().lower(): k for k, name in enumerate(header)}
    missing = [c for c in required if c.lower() not in columns]
    if missing:
        raise ValidationError(f"{path}: missing column(s) {missing}; the header has {header}")
    return iterator, columns


@dataclass
class _Events:
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


def _assemble(
    name: str,
    events: _Events,
    features_of: Mapping[str, dict[str, float]],
    *,
    feedback_type: FeedbackType,
    rating_scale: tuple[float, float] | None,
    titles_of: Mapping[str, str] | None = None,
) -> Interactions:
    if not events.users:
        raise ValidationError(f"{name}: no events")
    user_ids = _ordered(events.users)
    item_ids = _ordered(events.items)
    user_index = {u: k for k, u in enumerate(user_ids)}
    item_index = {i: k for k, i in enumerate(item_ids)}
    return Interactions(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        users=np.fromiter((user_index[u] for u in events.users), dtype=np.int64, count=len(events.users)),
        items=np.fromiter((item_index[i] for i in events.items), dtype=np.int64, count=len(events.items)),
        values=np.asarray(events.values, dtype=np.float64),
        timestamps=np.asarray(events.times, dtype=np.float64),
        item_features=[dict(features_of.get(i, {})) for i in item_ids],
        feedback_type=feedback_type,
        rating_scale=rating_scale,
        titles=[(titles_of or {}).get(i, "") for i in item_ids],
    )


def _genre_features(genres: Sequence[str]) -> dict[str, float]:
    """Genres as features weighing 1/k each (k genres), so every item carries the same mass."""
    names = [n for n in (_clean_name("genre", g) for g in genres) if n]
    return {n: 1.0 / len(names) for n in names}


# -- MovieLens ml-latest-small ----------------------------------------------------------------


def read_ml_latest_small(path: str | Path) -> Interactions:
    """MovieLens ml-latest-small (or any ml-latest export): ``ratings.csv``, genres from
    ``movies.csv`` (``genre:<name>``, weight 1/k for k genres; "(no genres listed)" is kept as
    a genre of its own) and tags from ``tags.csv`` (``tag:<text>``, lower-cased, weight 1 per
    distinct tag). Ratings are on the scale 0.5–5."""
    root = Path(path)
    movies, genres_of, titles = root / "movies.csv", {}, {}
    rows, columns = _header(_open(movies), movies, ["movieId", "title", "genres"])
    m_id, m_title, m_genres = columns["movieid"], columns["title"], columns["genres"]
    for line, row in enumerate(rows, start=2):
        if len(row) != len(columns):
            raise ValidationError(f"{movies}:{line}: expected {len(columns)} fields, got {len(row)}")
        genres_of[row[m_id]] = _genre_features(row[m_genres].split("|"))
        titles[row[m_id]] = row[m_title]

    ratings = root / "ratings.csv"
    rows, columns = _header(_open(ratings), ratings, ["userId", "movieId", "rating", "timestamp"])
    c_user, c_item, c_value, c_time = (columns[c] for c in ("userid", "movieid", "rating", "timestamp"))
    events = _Events()
    for line, row in enumerate(rows, start=2):
        where = f"{ratings}:{line}"
        if len(row) != len(columns):
            raise ValidationError(f"{where}: expected {len(columns)} fields, got {len(row)}")
        item = row[c_item]
        if item not in genres_of:
            raise ValidationError(f"{where}: movieId {item} is not in movies.csv")
        events.users.append(row[c_user])
        events.items.append(item)
        events.values.append(_number(row[c_value], where, "rating"))
        events.times.append(_timestamp(row[c_time], where))

    features = {item: dict(g) for item, g in genres_of.items()}
    tags = root / "tags.csv"
    if tags.is_file():
        rows, columns = _header(_open(tags), tags, ["userId", "movieId", "tag", "timestamp"])
        t_item, t_tag = columns["movieid"], columns["tag"]
        for line, row in enumerate(rows, start=2):
            if len(row) != len(columns):
                raise ValidationError(f"{tags}:{line}: expected {len(columns)} fields, got {len(row)}")
            if row[t_item] not in features:
                raise ValidationError(f"{tags}:{line}: movieId {row[t_item]} is not in movies.csv")
            name = _clean_name("tag", row[t_tag].lower())
            if name:
                features[row[t_item]][name] = 1.0
    return _assemble(
        root.name or "ml-latest",
        events,
        features,
        feedback_type=FeedbackType.RATING,
        rating_scale=(0.5, 5.0),
        titles_of=titles,
    )


# -- MovieLens ml-100k ------------------------------------------------------------------------


def read_ml_100k(path: str | Path) -> Interactions:
    """MovieLens ml-100k: ``u.data`` (tab-separated user, item, rating, timestamp) with genres
    from ``u.item`` (19 flags named by ``u.genre``; ``genre:<name>``, weight 1/k). Ratings are
    on the scale 1–5."""
    root = Path(path)
    genre_file = root / "u.genre"
    genre_names = [row[0] for row in _rows(genre_file, "|", "latin-1") if row and row[0]]
    if not genre_names:
        raise ValidationError(f"{genre_file}: no genres")
    item_file = root / "u.item"
    genres_of: dict[str, dict[str, float]] = {}
    titles: dict[str, str] = {}
    width = 5 + len(genre_names)
    for line, row in enumerate(_rows(item_file, "|", "latin-1"), start=1):
        if not row:
            continue
        if len(row) != width:
            raise ValidationError(f"{item_file}:{line}: expected {width} fields, got {len(row)}")
        flags = row[5:]
        if any(f not in ("0", "1") for f in flags):
            raise ValidationError(f"{item_file}:{line}: genre flags must be 0 or 1")
        genres_of[row[0]] = _genre_features([g for g, f in zip(genre_names, flags, strict=True) if f == "1"])
        titles[row[0]] = row[1]

    data = root / "u.data"
    events = _Events()
    for line, row in enumerate(_rows(data, "\t", "latin-1"), start=1):
        where = f"{data}:{line}"
        if len(row) != 4:
            raise ValidationError(f"{where}: expected 4 tab-separated fields (user, item, rating, timestamp)")
        if row[1] not in genres_of:
            raise ValidationError(f"{where}: item {row[1]} is not in u.item")
        events.users.append(row[0])
        events.items.append(row[1])
        events.values.append(_number(row[2], where, "rating"))
        events.times.append(_timestamp(row[3], where))
    return _assemble(
        root.name or "ml-100k",
        events,
        genres_of,
        feedback_type=FeedbackType.RATING,
        rating_scale=(1.0, 5.0),
        titles_of=titles,
    )


def _rows(path: Path, delimiter: str, encoding: str) -> Iterable[list[str]]:
    if not path.is_file():
        raise ValidationError(f"{path}: file not found")
    with path.open(newline="", encoding=encoding) as handle:
        yield from csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE)


# -- generic CSV ------------------------------------------------------------------------------


def read_csv(
    path: str | Path,
    *,
    feedback_type: FeedbackType | str = FeedbackType.RATING,
    rating_scale: tuple[float, float] | None = None,
) -> Interactions:
    """A CSV with a header naming the columns ``user``, ``item``, ``value`` and ``timestamp``
    (epoch seconds or ISO 8601), and optionally ``features``: the item's feature names
    separated by ``|``, each ``name`` or ``name=weight`` (an item's features are those of its
    first row that has any). Every event is of ``feedback_type``; for ratings, ``rating_scale``
    defaults to the lowest and highest value in the file."""
    file = Path(path)
    kind = FeedbackType.parse(feedback_type)
    rows, columns = _header(_open(file), file, ["user", "item", "value", "timestamp"])
    c_user, c_item, c_value, c_time = (columns[c] for c in ("user", "item", "value", "timestamp"))
    c_features = columns.get("features")
    events = _Events()
    features: dict[str, dict[str, float]] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{file}:{line}"
        if not row:
            continue
        if len(row) != len(columns):
            raise ValidationError(f"{where}: expected {len(columns)} fields, got {len(row)}")
        user, item = row[c_user].strip(), row[c_item].strip()
        if not user or not item:
            raise ValidationError(f"{where}: user and item must not be empty")
        events.users.append(user)
        events.items.append(item)
        events.values.append(_number(row[c_value], where, "value"))
        events.times.append(_timestamp(row[c_time], where))
        if c_features is not None and item not in features and row[c_features].strip():
            features[item] = _parse_features(row[c_features], where)
    scale = rating_scale
    if kind is FeedbackType.RATING and scale is None and events.values:
        low, high = min(events.values), max(events.values)
        scale = (low, high) if low < high else (low - 1.0, high)
    return _assemble(file.stem, events, features, feedback_type=kind, rating_scale=scale)


def _parse_features(text: str, where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split("|"):
        name, _, weight = part.partition("=")
        name = " ".join(name.split())
        if not name:
            continue
        if len(name.encode()) > MAX_NAME_BYTES:
            raise ValidationError(f"{where}: feature name longer than {MAX_NAME_BYTES} bytes")
        value = _number(weight, where, f"weight of feature {name!r}") if weight else 1.0
        if value < 0:
            raise ValidationError(f"{where}: feature {name!r} has a negative weight")
        out[name] = value
    return out


# -- dispatch ---------------------------------------------------------------------------------


def read_interactions(path: str | Path, format: str = "auto", **options: object) -> Interactions:
    """Reads ``path`` in ``format`` (one of :data:`FORMATS`). ``auto``: a directory with
    ``ratings.csv`` and ``movies.csv`` is ml-latest-small, one with ``u.data`` is ml-100k, a
    ``.csv`` file is the generic CSV. ``options`` go to :func:`read_csv`."""
    where = Path(path)
    if format not in FORMATS:
        raise ValidationError(f"unknown format {format!r}; expected one of {FORMATS}")
    if format == "auto":
        if where.is_dir() and (where / "ratings.csv").is_file() and (where / "movies.csv").is_file():
            format = "ml-latest-small"
        elif where.is_dir() and (where / "u.data").is_file():
            format = "ml-100k"
        elif where.is_file() and where.suffix.lower() == ".csv":
            format = "csv"
        elif not where.exists():
            raise ValidationError(f"{where}: no such file or directory")
        else:
            raise ValidationError(
                f"{where}: unknown data format: expected a MovieLens directory (ratings.csv + movies.csv, "
                "or u.data + u.item) or a .csv file with columns user,item,value,timestamp"
            )
    if options and format != "csv":
        raise ValidationError(f"options {sorted(options)} apply only to the csv format")
    if format == "ml-latest-small":
        return read_ml_latest_small(where)
    if format == "ml-100k":
        return read_ml_100k(where)
    return read_csv(where, **options)  # type: ignore[arg-type]
