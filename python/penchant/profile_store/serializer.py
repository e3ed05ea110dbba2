"""The stored form of profiles and feedback signals: MessagePack through msgspec, never pickle.

Every stored profile carries :data:`~penchant.user_profile.SCHEMA_VERSION`. Readers ignore
fields they do not know and give missing fields their defaults, so processes of an older and a
newer penchant can share one store; a change that needs stored profiles converted raises the
schema version and adds a step to ``_UPGRADES``.

Decoding trusts what penchant stored: the profile classes validate their fields in
``__post_init__`` when a caller builds them, and a store validates everything before it writes.
Re-running those checks on every read would cost more than the read itself (a profile with 50
history entries takes ~0.4 ms to validate and ~0.1 ms to decode), so stored data is decoded into
subclasses whose ``__post_init__`` does nothing and the objects get their public class back
afterwards.

The fields that hold most of a profile's objects (``preferences``, ``interests`` and
``interaction_history``: nearly all the objects of a typical profile, with 20 interests, a
dozen preferences and 50 history entries) are skipped as raw bytes and each decoded when first
read. A decoded profile keeps them in a map in its instance dict (``ENCODED_FIELDS``: field
name → ``_Encoded``, which holds the bytes, views of the buffer that was decoded, never copies)
and ``UserProfile.__getattr__``, which Python calls only for a name missing from the instance
dict, decodes the field and stores it there. So:

* a value assigned to the field wins over its encoded form, which is then never read;
* two threads reading a shared profile at once may both decode, and both get the one value
  that was stored first; a shallow copy shares the map and gets the same objects as its
  original; a deep copy decodes for itself (``UserProfile.__deepcopy__``);
* whatever reads the field (equality, ``repr``, msgspec encoding, copies, the Rust kernels,
  which get the field's value from Python) sees exactly what an eager decode gives, with the
  public classes;
* a damaged field raises ``ValidationError`` when it is read, every time it is read. (Only
  bytes that are not MessagePack at all are refused when the profile is decoded: a Redis
  snapshot whose interests are damaged is no longer passed over for the parts.)

Ranking reads the interests and the history once per profile version (when it compiles the
profile) and never the preferences; a read for a cache, or an owned copy from the in-process
cache, reads none of them. Sizes are checked before any decoding (a field's bytes are part of a
checked whole), so a hostile or corrupt value cannot make the decoder allocate without bound.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

from penchant import _core
from penchant._validate import check_finite, check_id, check_name
from penchant.errors import ValidationError
from penchant.feedback_collector import FeedbackType, Signal
from penchant.user_profile import ENCODED_FIELDS, SCHEMA_VERSION, Interaction, Interest, Preference, UserProfile

__all__ = ["DEFAULT_MAX_PROFILE_BYTES", "FIELD_SEPARATOR", "ProfileSerializer", "check_signal"]

DEFAULT_MAX_PROFILE_BYTES = 1 << 20
"""A stored profile may take at most 1 MiB unless the serializer is configured otherwise."""

MAX_SIGNAL_BYTES = 64 << 10
"""One feedback signal may take at most 64 KiB once encoded (its context included)."""

FIELD_SEPARATOR = "\x1f"
"""Joins a feature name and a channel key into one Redis hash field. Names and ids cannot hold
control characters, so the join cannot be ambiguous."""

_COUNT = "#"
_LAST_UPDATED = "@"

T = TypeVar("T")
_Sized = TypeVar("_Sized", bound=Sized)
_Bytes = bytes | memoryview | msgspec.Raw

_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``_UPGRADES[n]`` turns the raw map of a schema-``n`` profile into a schema-``n + 1`` one."""


class _TrustedTypes:
    """For every dataclass reachable from a root class: a subclass without ``__post_init__``
    (msgspec takes ``None`` for none; only msgspec makes instances of it, never ``__init__``),
    with its field types pointing at the other trusted subclasses, and the way back to the
    public classes after decoding."""

    def __init__(self) -> None:
        self._trusted: dict[type, type] = {}
        self._public: dict[type, type] = {}
        self._nested: dict[type, tuple[str, ...]] = {}
        self._leaves: dict[type, type] = {}  # trusted classes without nested ones -> public

    def of(self, cls: type) -> type:
        if cls in self._trusted:
            return self._trusted[cls]
        if "__slots__" in cls.__dict__:  # a slotted class cannot change __class__: keep its checks
            self._trusted[cls] = cls
            return cls
        self._trusted[cls] = cls  # a placeholder while the fields are visited (recursive types)
        hints = typing.get_type_hints(cls)
        annotations: dict[str, Any] = {}
        nested = []
        for field in dataclasses.fields(cls):
            hint = hints[field.name]
            trusted_hint = self._map(hint)
            if trusted_hint is not hint:
                annotations[field.name] = trusted_hint
                nested.append(field.name)
        namespace = {
            "__post_init__": None,
            "__annotations__": annotations,
            "__module__": cls.__module__,
            "__qualname__": f"{cls.__qualname__}[stored]",
        }
        trusted = type(cls.__name__, (cls,), namespace)
        self._trusted[cls] = trusted
        self._public[trusted] = cls
        self._nested[trusted] = tuple(nested)
        if not nested:
            self._leaves[trusted] = cls
        return trusted

    def _map(self, hint: Any) -> Any:
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            return self.of(hint)
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if not args:
            return hint
        mapped = tuple(self._map(a) for a in args)
        if all(m is a for m, a in zip(mapped, args, strict=True)):
            return hint
        if origin in (typing.Union, types.UnionType):
            return typing.Union[mapped]  # noqa: UP007 - built from a tuple of types
        if origin in (dict, list, tuple, set, frozenset):
            return origin[mapped] if len(mapped) > 1 else origin[mapped[0]]
        return hint

    def with_raw_fields(self, cls: type, names: tuple[str, ...]) -> type:
        """The trusted subclass of ``cls`` whose fields ``names`` decode to ``msgspec.Raw``: the
        bytes of those fields are skipped (not made into objects) and kept for later."""
        trusted = self.of(cls)
        # msgspec cannot give a Raw field a default: the fields become required here, and a
        # stored profile without one of them (never written by penchant) is decoded the slow way.
        fields = dict(trusted.__dataclass_fields__)  # type: ignore[attr-defined]
        for name in names:
            field = copy.copy(fields[name])
            field.default = field.default_factory = dataclasses.MISSING
            field.type = msgspec.Raw
            fields[name] = field
        namespace = {
            "__post_init__": None,
            "__dataclass_fields__": fields,
            "__annotations__": dict.fromkeys(names, msgspec.Raw),
            "__module__": cls.__module__,
            "__qualname__": f"{cls.__qualname__}[stored, {', '.join(names)} raw]",
        }
        raw = type(cls.__name__, (trusted,), namespace)
        self._public[raw] = cls
        self._nested[raw] = tuple(n for n in self._nested[trusted] if n not in names)
        return raw

    def nested(self, cls: type) -> tuple[str, ...]:
        """The fields of the decoded class ``cls`` that hold decoded objects of their own."""
        return self._nested[cls]

    def restore(self, value: Any) -> None:
        """Gives every decoded object in ``value`` its public class back (objects without
        nested ones in a loop: a profile holds dozens)."""
        cls = type(value)
        public = self._public.get(cls)
        if public is None:
            items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
            leaves = self._leaves
            for item in items:
                leaf = leaves.get(type(item))
                if leaf is not None:
                    item.__class__ = leaf
                else:
                    self.restore(item)
            return
        value.__class__ = public
        state = value.__dict__
        for name in self._nested[cls]:
            self.restore(state[name])


_TRUSTED = _TrustedTypes()


_NAME_OF = {"feature": "feature name", "attribute": "attribute name"}


def check_signal(signal: Any, user_id: str | None = None) -> Signal:
    """``signal`` if it is a :class:`~penchant.feedback_collector.Signal` fit to store (for
    ``user_id`` when given); a ``ValidationError`` naming the problem otherwise."""
    if not isinstance(signal, Signal):
        raise ValidationError(f"expected a Signal, got {type(signal).__name__}")
    check_id(signal.event_id, "event_id")
    check_id(signal.user_id, "user_id")
    check_id(signal.item_id, "item_id")
    if user_id is not None and signal.user_id != user_id:
        raise ValidationError(f"signal {signal.event_id!r} is for user {signal.user_id!r}, not {user_id!r}")
    FeedbackType.parse(signal.feedback_type)
    check_finite(signal.value, "signal value")
    check_finite(signal.weight, "signal weight")
    check_finite(signal.timestamp, "signal timestamp")
    if check_finite(signal.half_life, "signal half_life") <= 0:
        raise ValidationError(f"half_life of signal {signal.event_id!r} must be positive, got {signal.half_life}")
    for what, mapping in (("feature", signal.features), ("attribute", signal.attributes)):
        if type(mapping) is not dict and not isinstance(mapping, Mapping):  # dict: skips the ABC check
            raise ValidationError(f"{what}s of signal {signal.event_id!r} must be a mapping")
        for name, weight in mapping.items():
            check_name(name, _NAME_OF[what])
            if type(weight) is not float or not math.isfinite(weight):  # the message only when needed
                check_finite(weight, f"{what} {name!r} of signal {signal.event_id!r}")
    if type(signal.context) is not dict and not isinstance(signal.context, Mapping):
        raise ValidationError(f"context of signal {signal.event_id!r} must be a mapping")
    return signal


def _shallow_copy(profile: UserProfile) -> UserProfile:
    """``copy.copy(profile)``, in ~1.3 µs instead of ~9 (it goes through ``__reduce_ex__``); a
    subclass, which may hold slots or copy itself its own way, gets ``copy.copy``."""
    if type(profile) is not UserProfile:
        return copy.copy(profile)
    copied: UserProfile = object.__new__(UserProfile)
    copied.__dict__.update(profile.__dict__)
    return copied


class ProfileSerializer:
    """Encodes and decodes profiles (whole, or in the parts that a Redis store keeps apart) and
    feedback signals. Thread-safe; one instance can serve every store of a process.

    ``max_profile_bytes`` bounds an encoded profile both ways: encoding a bigger one is a
    ``ValidationError`` (nothing is stored), and bytes longer than that are refused before they
    are decoded.
    """

    def __init__(self, *, max_profile_bytes: int = DEFAULT_MAX_PROFILE_BYTES) -> None:
        if isinstance(max_profile_bytes, bool) or not isinstance(max_profile_bytes, int) or max_profile_bytes < 1024:
            raise ValidationError(f"max_profile_bytes must be an int of at least 1024, got {max_profile_bytes!r}")
        self.max_profile_bytes = max_profile_bytes
        self._encoder = msgspec.msgpack.Encoder()
        # The fields that hold many objects are skipped and decoded when first read: a read for
        # ranking never reads the history or the preferences, and one for a cache reads nothing.
        self._preferences = _Field("preferences", "preferences", dict[str, _TRUSTED.of(Preference)])  # type: ignore[misc]
        self._interests = _Field("interests", "interests", dict[str, _TRUSTED.of(Interest)])  # type: ignore[misc]
        self._history = _Field("interaction_history", "history", list[_TRUSTED.of(Interaction)])  # type: ignore[misc]
        self._raw_list = msgspec.msgpack.Decoder(list[msgspec.Raw])
        stored = _TRUSTED.with_raw_fields(UserProfile, ("preferences", "interests", "interaction_history"))
        # Every nested object of a profile is in those fields: a decoded one needs its class alone.
        assert not _TRUSTED.nested(stored)
        envelope = msgspec.defstruct("StoredProfile", [("schema", int), ("profile", stored)])
        self._profile_decoder = msgspec.msgpack.Decoder(envelope)
        checked = msgspec.defstruct("CheckedProfile", [("schema", int), ("profile", UserProfile)])
        self._checking_decoder = msgspec.msgpack.Decoder(checked)
        self._raw_decoder = msgspec.msgpack.Decoder(dict[str, Any])
        self._signal_decoder = msgspec.msgpack.Decoder(dict[str, Any])
        # Snapshots are [doc, interests, history, meta]: the first three framed as byte strings,
        # so that a reader takes each as a view of the snapshot's bytes without walking it; meta
        # is [landmark, updated_at, event_count] as a read of the profile's hash would give
        # them. Array-like structs ignore trailing elements: a later snapshot format may add
        # some. Earlier snapshots (never released) had no meta (their readers took it from the
        # hash), before that held the interests inline, and the first ones the doc and history.
        meta = msgspec.defstruct(
            "SnapshotMeta", [("landmark", float), ("updated_at", datetime), ("event_count", int)], array_like=True
        )
        self._snapshot_decoders = tuple(
            msgspec.msgpack.Decoder(
                msgspec.defstruct(
                    "StoredSnapshot",
                    [("doc", doc), ("interests", interests), ("history", history), ("meta", meta | None, None)],
                    array_like=True,
                    gc=False,
                )
            )
            for doc, interests, history in (
                (memoryview, memoryview, memoryview),
                (memoryview, msgspec.Raw, memoryview),
                (msgspec.Raw, msgspec.Raw, msgspec.Raw),
            )
        )

    # -- whole profiles ------------------------------------------------------------------------

    def encode(self, profile: UserProfile) -> bytes:
        """The stored form of ``profile``: ``{"schema": SCHEMA_VERSION, "profile": {...}}``."""
        if not isinstance(profile, UserProfile):
            raise ValidationError(f"expected a UserProfile, got {type(profile).__name__}")
        data = self._encode({"schema": SCHEMA_VERSION, "profile": profile}, f"profile {profile.user_id!r}")
        return self._check_size(data, f"profile {profile.user_id!r}")

    def decode(self, data: bytes | bytearray | memoryview) -> UserProfile:
        """The profile that :meth:`encode` made ``data`` from (possibly by another version).
        Its preferences, interests and history are decoded when first read."""
        return self._decode(bytes(data))  # a copy unless bytes: the profile keeps parts of it

    def _decode(
        self,
        data: bytes | memoryview | msgspec.Raw,
        interests: _Bytes | None = None,
        history: _Bytes | None = None,
    ) -> UserProfile:
        """:meth:`decode` of an immutable buffer (kept, not copied), with the encoded
        ``interests`` and ``history`` given apart (for those left empty in ``data``)."""
        if len(data) > self.max_profile_bytes:
            raise ValidationError(f"stored profile is {len(data)} bytes encoded; the limit is {self.max_profile_bytes}")
        try:
            envelope: Any = self._profile_decoder.decode(data)
        except msgspec.MsgspecError as exc:
            return self._decode_other_schema(data, exc)
        if envelope.schema != SCHEMA_VERSION and envelope.schema in _UPGRADES:
            return self._decode_other_schema(data, None)
        profile: UserProfile = envelope.profile
        profile.__class__ = UserProfile  # its nested objects are all in the fields left encoded
        state = profile.__dict__
        encoded: dict[str, _Encoded] = {}
        for field, given in ((self._preferences, None), (self._interests, interests), (self._history, history)):
            name = field.name
            raw = state.pop(name)  # a Redis doc keeps its interests and history empty: given apart
            if given is not None:
                raw = given
            if len(raw) > 1:
                encoded[name] = _Encoded((field, raw))
            else:  # an empty map or array: made now, for less than keeping it costs
                state[name] = field.decode(raw)
        if encoded:
            state[ENCODED_FIELDS] = encoded
        return profile

    def checked_copy(self, profile: UserProfile) -> tuple[UserProfile, bytes]:
        """A copy of ``profile`` rebuilt through every check of the profile classes, and its
        encoding: what a store writes, so that a profile changed into an invalid state after it
        was built is refused (``ValidationError``) before anything is stored."""
        data = self.encode(profile)
        try:
            checked: Any = self._checking_decoder.decode(data)
            copy_: UserProfile = checked.profile
        except msgspec.MsgspecError as exc:
            raise ValidationError(f"profile {profile.user_id!r} is not valid: {exc}") from exc
        return copy_, data

    def _decode_other_schema(self, data: bytes | memoryview | msgspec.Raw, error: Exception | None) -> UserProfile:
        try:
            raw = self._raw_decoder.decode(data)
            schema = int(raw["schema"])
            body = raw["profile"]
            while schema in _UPGRADES:
                body = _UPGRADES[schema](body)
                schema += 1
            profile: UserProfile = msgspec.convert(body, UserProfile, strict=False)
        except (msgspec.MsgspecError, KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"stored profile cannot be decoded: {error or exc}") from exc
        return profile

    # -- profiles with the history apart (SQL) ------------------------------------------------------

    def encode_apart(self, profile: UserProfile, history: bytes) -> tuple[bytes, int]:
        """``profile`` encoded without its history (an SQL store keeps each history entry,
        :meth:`encode_interaction`, in a row of its own), and the size of its whole encoding
        (:meth:`encode`), checked against the limit. ``history`` is the profile's history encoded
        (:meth:`pack_history` of its entries' encodings): the whole encoding is that body with
        ``history`` in place of its empty history (:meth:`decode_with_history` decodes the two),
        and is never made."""
        if not isinstance(profile, UserProfile):
            raise ValidationError(f"expected a UserProfile, got {type(profile).__name__}")
        what = f"profile {profile.user_id!r}"
        rest = _shallow_copy(profile)
        rest.interaction_history = []
        body = self._encode({"schema": SCHEMA_VERSION, "profile": rest}, what)
        size = len(body) - len(_EMPTY_ARRAY) + len(history)
        if size > self.max_profile_bytes:
            raise ValidationError(f"{what} is {size} bytes encoded; the limit is {self.max_profile_bytes}")
        return body, size

    def decode_with_history(self, body: bytes, history: bytes) -> UserProfile:
        """The profile that :meth:`encode_apart` encoded as ``body``, with the history ``history``
        (:meth:`pack_history`; decoded when first read)."""
        profile = self.decode(body)
        self.keep_history_encoded(profile, history)
        return profile

    @staticmethod
    def history_is_encoded(profile: UserProfile) -> bool:
        """Whether ``profile``'s history is still as it was decoded from, not yet read."""
        state = profile.__dict__
        return "interaction_history" not in state and "interaction_history" in state.get(ENCODED_FIELDS, ())

    @staticmethod
    def pack_history(entries: Sequence[bytes]) -> bytes:
        """A history encoded, from the encoding of each of its entries (:meth:`encode_interaction`),
        in order: the array of them."""
        return b"".join([_array_header(len(entries)), *entries])

    def keep_history_encoded(self, profile: UserProfile, packed: bytes) -> None:
        """Makes the history ``packed`` (see :meth:`pack_history`) ``profile``'s, decoded when
        first read, in place of what it holds."""
        state = profile.__dict__
        state.pop("interaction_history", None)
        # A map of its own: the old one may be shared with copies (it is never changed).
        encoded = dict(state.get(ENCODED_FIELDS, {}))
        encoded["interaction_history"] = _Encoded((self._history, packed))
        state[ENCODED_FIELDS] = encoded

    def decode_interaction(self, data: bytes) -> Interaction:
        """The history entry that :meth:`encode_interaction` made ``data`` from."""
        entry: Interaction = self._history.decode(_array_header(1) + data)[0]
        return entry

    def history_entries(self, count: int, joined: bytes) -> list[bytes]:
        """The encoding of each of ``count`` history entries that ``joined`` holds one after
        another (as :meth:`decode_apart` takes them), without decoding them."""
        if not count:
            return []
        try:
            entries = self._raw_list.decode(_array_header(count) + joined)
        except msgspec.MsgspecError as exc:
            raise ValidationError(f"stored history cannot be decoded: {exc}") from exc
        return [bytes(entry) for entry in entries]

    def decode_apart(self, body: bytes, count: int, entries: bytes) -> tuple[UserProfile, bool]:
        """A profile from :meth:`encode_apart`'s second part and its ``count`` history entries
        (:meth:`encode_interaction` each, joined; decoded when first read); and whether
        ``body`` held a history itself (written before the history had rows of its own: then
        that history is the profile's, and ``entries`` are ignored)."""
        profile = self.decode(body)
        state = profile.__dict__
        if "interaction_history" in state.get(ENCODED_FIELDS, ()) or state.get("interaction_history"):
            return profile, True
        size = len(body) + len(entries)
        if size > self.max_profile_bytes:
            raise ValidationError(f"stored profile is {size} bytes; the limit is {self.max_profile_bytes}")
        if count:  # this profile was just decoded: nothing shares its map of encoded fields yet
            state.pop("interaction_history", None)
            packed = _array_header(count) + entries
            state.setdefault(ENCODED_FIELDS, {})["interaction_history"] = _Encoded((self._history, packed))
        return profile, False

    # -- profiles in parts (Redis) --------------------------------------------------------------

    def encode_document(self, profile: UserProfile) -> bytes:
        """Everything in ``profile`` but its interests and history (which a Redis store keeps
        in a hash and a list of their own)."""
        rest = _shallow_copy(profile)
        rest.interests = {}
        rest.interaction_history = []
        state = profile.__dict__
        kept = state.get(ENCODED_FIELDS)
        if kept is not None and "preferences" not in state:
            raw = kept["preferences"].raw if "preferences" in kept else None
            if raw is not None:  # still as it was decoded: written as it is, not decoded for it
                rest.preferences = msgspec.Raw(raw)  # type: ignore[assignment]
        return self._encode({"schema": SCHEMA_VERSION, "profile": rest}, f"profile {profile.user_id!r}")

    def encode_interaction(self, interaction: Interaction) -> bytes:
        return self._encode(interaction, "interaction")

    def history_member(self, interaction: Interaction, encoded: bytes | None = None) -> bytes:
        """The member of a Redis history (a sorted set ordered by bytes) that holds
        ``interaction``: its time as a sort key, its event id, ``␟``, then the interaction
        (``encoded``: its :meth:`encode_interaction`, when the caller has it already)."""
        microseconds = (interaction.timestamp - _EPOCH) // _MICROSECOND
        return (
            _core.history_sort_key(microseconds)
            + interaction.event_id.encode("utf-8", "surrogatepass")
            + b"\x1f"
            + (self._encode(interaction, "interaction") if encoded is None else encoded)
        )

    @classmethod
    def follow_fields(
        cls, profile: UserProfile, old_version: int, old_landmark: float, fresh: Sequence[Signal]
    ) -> dict[str, str]:
        """The interest fields that bring a Redis hash from ``old_version`` (with
        ``old_landmark``) to ``profile``, made by applying ``fresh``: those of the features
        ``fresh`` touched, or all of them if the landmark moved or the profile is new."""
        everything = not old_version or profile.landmark != old_landmark
        return cls.interest_fields(profile, None if everything else {n for s in fresh for n in s.features})

    @staticmethod
    def interest_fields(profile: UserProfile, names: Iterable[str] | None = None) -> dict[str, str]:
        """The Redis hash of ``profile``'s interests (of those named ``names`` it has, when
        given): ``feature␟channel`` → sum, ``feature␟#`` → count, ``feature␟@`` → last update
        (epoch seconds)."""
        fields: dict[str, str] = {}
        interests = profile.interests
        chosen = interests.items() if names is None else [(n, interests[n]) for n in names if n in interests]
        for name, interest in chosen:
            prefix = name + FIELD_SEPARATOR
            for key, total in interest.sums.items():
                fields[prefix + key] = repr(float(total))
            fields[prefix + _COUNT] = str(interest.count)
            fields[prefix + _LAST_UPDATED] = repr(interest.last_updated.timestamp())
        return fields

    def decode_state(self, state: Sequence[Any]) -> tuple[UserProfile, bytes]:
        """A profile from the parts a Redis script sends: ``version, landmark, updated_at,
        event_count, doc, interests, history``, the interests hash as one string (fields and
        values joined by ``␞``) and the history as the list of its members; and the snapshot of
        it (:meth:`encode_snapshot`) for the script to keep. The interests are read in Rust; the
        preferences and the history are decoded when first read."""
        version, landmark, updated_at, event_count, document, interests, members = state
        history = b"".join(members)
        size = len(document) + len(interests) + len(history)
        if size > self.max_profile_bytes:
            raise ValidationError(f"stored profile is {size} bytes; the limit is {self.max_profile_bytes}")
        packed = _core.history_entries(history)[1] if history else _EMPTY_ARRAY
        profile = self._with_meta(
            self._decode(bytes(document), None, packed), version, landmark, updated_at, event_count
        )
        # Made now, unlike a snapshot's: the snapshot made here encodes them.
        profile.interests = _core.decode_interests(interests, Interest)
        meta = (profile.landmark, profile.updated_at, profile.event_count)
        return profile, self._snapshot(document, profile.interests, packed, meta)

    def encode_snapshot(self, profile: UserProfile, document: bytes | None = None) -> bytes:
        """All of ``profile`` but its version (which a Redis store keeps beside it) as one
        MessagePack array ``[doc, interests, history, [landmark, updated_at, event_count]]``:
        what a Redis read returns while it is current. The doc, the interests (an encoded map)
        and the history (an encoded array) are byte strings inside it, so that a reader skips
        them without walking them. The landmark, ``updated_at`` and event count are those a read
        of the profile's hash gives (``updated_at`` through its epoch seconds)."""
        if document is None:
            document = self.encode_document(profile)
        entries = [self.encode_interaction(i) for i in profile.interaction_history]
        # As the hash keeps them (a float's repr, which reads back exactly) and _with_meta reads them.
        meta = (
            float(profile.landmark),
            datetime.fromtimestamp(profile.updated_at.timestamp(), UTC),
            int(profile.event_count),
        )
        return self._snapshot(document, profile.interests, _array_header(len(entries)) + b"".join(entries), meta)

    def _snapshot(
        self,
        document: bytes,
        interests: dict[str, Interest],
        packed_history: bytes,
        meta: tuple[float, datetime, int],
    ) -> bytes:
        packed_interests = self._encode(interests, "interests")
        return b"".join(
            (
                b"\x94",
                _bin_header(len(document)),
                document,
                _bin_header(len(packed_interests)),
                packed_interests,
                _bin_header(len(packed_history)),
                packed_history,
                self._encode(meta, "snapshot meta"),
            )
        )

    def decode_snapshot(
        self,
        snapshot: bytes,
        *,
        version: Any,
        landmark: Any = None,
        updated_at: Any = None,
        event_count: Any = None,
    ) -> UserProfile:
        """A profile from :meth:`encode_snapshot`'s bytes and the version kept beside them; its
        preferences, interests and history are decoded when first read. ``landmark``,
        ``updated_at`` and ``event_count`` as read from the profile's hash, when given, take the
        place of the snapshot's own (a snapshot written before those were part of it has none:
        without them it is a ``ValidationError``)."""
        if type(snapshot) is not bytes:  # the profile keeps views of it: they must not change
            snapshot = bytes(snapshot)
        self._check_size(snapshot, "stored snapshot")
        error: msgspec.MsgspecError | None = None
        for decoder in self._snapshot_decoders:  # the current form first
            try:
                stored: Any = decoder.decode(snapshot)
                break
            except msgspec.MsgspecError as exc:
                error = error or exc
        else:
            raise ValidationError(f"stored snapshot cannot be decoded: {error}") from error
        meta = stored.meta
        if landmark is None and meta is None:
            raise ValidationError("stored snapshot holds no landmark: give the hash's fields")
        profile = self._decode(stored.doc, stored.interests, stored.history)
        if landmark is not None:
            return self._with_meta(profile, version, landmark, updated_at, event_count)
        state = profile.__dict__
        state["version"] = int(version)
        state["landmark"] = meta.landmark
        state["updated_at"] = meta.updated_at
        state["event_count"] = meta.event_count
        return profile

    @staticmethod
    def _with_meta(profile: UserProfile, version: Any, landmark: Any, updated_at: Any, event_count: Any) -> UserProfile:
        state = profile.__dict__
        state["version"] = int(version)
        state["landmark"] = float(landmark)
        state["updated_at"] = datetime.fromtimestamp(float(updated_at), UTC)
        if event_count is not None:
            state["event_count"] = int(event_count)
        return profile

    # -- feedback signals -----------------------------------------------------------------------

    def encode_signal(self, signal: Signal) -> bytes:
        """A map of the signal's fields and ``schema``."""
        data = b""
        if type(signal.features) is dict and type(signal.attributes) is dict and type(signal.context) is dict:
            # msgspec encodes the dataclass itself (~13x faster than building a dict first):
            # its map gets one more entry, the schema.
            fields = self._encode(signal, f"signal {signal.event_id!r}")
            if fields[0] & 0xF0 == 0x80 and fields[0] < 0x8F:  # a fixmap with room for one more
                data = bytes([fields[0] + 1]) + fields[1:] + _SCHEMA_ENTRY
        if not data:
            record = {f.name: getattr(signal, f.name) for f in dataclasses.fields(Signal)}
            for name, value in record.items():
                if isinstance(value, Mapping) and not isinstance(value, dict):
                    record[name] = dict(value)
            record["schema"] = SCHEMA_VERSION
            data = self._encode(record, f"signal {signal.event_id!r}")
        if len(data) > MAX_SIGNAL_BYTES:
            raise ValidationError(
                f"signal {signal.event_id!r} is {len(data)} bytes encoded; the limit is {MAX_SIGNAL_BYTES}"
            )
        return data

    def decode_signal(self, data: bytes | bytearray | memoryview) -> Signal:
        data = bytes(data)
        if len(data) > MAX_SIGNAL_BYTES:
            raise ValidationError(f"stored signal is {len(data)} bytes; the limit is {MAX_SIGNAL_BYTES}")
        try:
            record = self._signal_decoder.decode(data)
            known = {f.name for f in dataclasses.fields(Signal)}
            fields = {k: v for k, v in record.items() if k in known}
            fields["feedback_type"] = FeedbackType.parse(fields["feedback_type"])
            return Signal(**fields)
        except (msgspec.MsgspecError, KeyError, TypeError) as exc:
            raise ValidationError(f"stored signal cannot be decoded: {exc}") from exc

    # -- helpers --------------------------------------------------------------------------------

    def _encode(self, value: Any, what: str) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValidationError(f"{what} cannot be stored: {exc}") from exc

    def _check_size(self, data: _Sized, what: str) -> _Sized:
        if len(data) > self.max_profile_bytes:
            raise ValidationError(f"{what} is {len(data)} bytes encoded; the limit is {self.max_profile_bytes}")
        return data


_EPOCH = datetime.fromtimestamp(0, tz=UTC)
_MICROSECOND = timedelta(microseconds=1)

# The Redis hash of interests holds these four fields of an Interest: a field added to the class
# needs a place there (and in the Rust reader) before profiles can keep it in Redis.
assert {f.name for f in dataclasses.fields(Interest)} == {"name", "sums", "count", "last_updated"}


_EMPTY_ARRAY = b"\x90"

_SCHEMA_ENTRY = msgspec.msgpack.encode("schema") + msgspec.msgpack.encode(SCHEMA_VERSION)


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class _Field:
    """How the field ``name`` of a stored profile is decoded from its raw bytes (``what`` names
    it in errors)."""

    __slots__ = ("decoder", "name", "what")

    def __init__(self, name: str, what: str, type_: Any) -> None:
        self.name = name
        self.what = what
        self.decoder = msgspec.msgpack.Decoder(type_)

    def decode(self, raw: _Bytes) -> Any:
        try:
            value = self.decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            raise ValidationError(f"stored {self.what} cannot be decoded: {exc}") from exc
        if value:
            _TRUSTED.restore(value)
        return value


class _Encoded(list[Any]):
    """A field of a decoded profile kept encoded: ``[field, raw]``, the ``_Field`` that decodes
    it and its bytes (views of the buffer that was decoded, never copies), to which the value is
    appended when the profile's field is first read (``UserProfile.__getattr__`` calls it). A
    list, so that making one costs no Python call. It keeps the first value it made, so that a
    shallow copy of the profile (which shares it) and the original get the same object; a deep
    copy gets a new one, which decodes for itself."""

    __slots__ = ()

    def __call__(self) -> Any:
        if len(self) == 2:
            # Two threads may both decode: list.append is atomic, and both return the first.
            self.append(self[0].decode(self[1]))
        return self[2]

    @property
    def raw(self) -> _Bytes | None:
        """The field's bytes while it has not been decoded (``UserProfile`` reads the history
        from them for preference extraction), else ``None``."""
        return self[1] if len(self) == 2 else None

    def __copy__(self) -> _Encoded:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Encoded:
        return _Encoded(self[:2])  # the bytes are immutable
