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
afterwards. Sizes are checked before any decoding, so a hostile or corrupt value cannot make the
decoder allocate without bound.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from penchant._validate import check_finite, check_id, check_name
from penchant.errors import ValidationError
from penchant.feedback_collector import FeedbackType, Signal
from penchant.user_profile import SCHEMA_VERSION, Interaction, Interest, UserProfile

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
_EXTRA = "."

T = TypeVar("T")

_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``_UPGRADES[n]`` turns the raw map of a schema-``n`` profile into a schema-``n + 1`` one."""


def _skip_post_init(self: object) -> None:
    """Stored data was validated when it was written."""


class _TrustedTypes:
    """For every dataclass reachable from a root class: a subclass that skips ``__post_init__``
    (with its field types pointing at the other trusted subclasses), and the way back to the
    public classes after decoding."""

    def __init__(self) -> None:
        self._trusted: dict[type, type] = {}
        self._public: dict[type, type] = {}
        self._nested: dict[type, tuple[str, ...]] = {}

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
            "__post_init__": _skip_post_init,
            "__annotations__": annotations,
            "__module__": cls.__module__,
            "__qualname__": f"{cls.__qualname__}[stored]",
        }
        trusted = type(cls.__name__, (cls,), namespace)
        self._trusted[cls] = trusted
        self._public[trusted] = cls
        self._nested[trusted] = tuple(nested)
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

    def restore(self, value: Any) -> None:
        """Gives every decoded object in ``value`` its public class back."""
        cls = type(value)
        public = self._public.get(cls)
        if public is None:
            if isinstance(value, list):
                for item in value:
                    self.restore(item)
            elif isinstance(value, dict):
                for item in value.values():
                    self.restore(item)
            return
        names = self._nested[cls]
        value.__class__ = public
        for name in names:
            self.restore(getattr(value, name))


_TRUSTED = _TrustedTypes()


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
        if not isinstance(mapping, Mapping):
            raise ValidationError(f"{what}s of signal {signal.event_id!r} must be a mapping")
        for name, weight in mapping.items():
            check_name(name, f"{what} name")
            check_finite(weight, f"{what} {name!r} of signal {signal.event_id!r}")
    if not isinstance(signal.context, Mapping):
        raise ValidationError(f"context of signal {signal.event_id!r} must be a mapping")
    return signal


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
        envelope = msgspec.defstruct("StoredProfile", [("schema", int), ("profile", _TRUSTED.of(UserProfile))])
        self._profile_decoder = msgspec.msgpack.Decoder(envelope)
        checked = msgspec.defstruct("CheckedProfile", [("schema", int), ("profile", UserProfile)])
        self._checking_decoder = msgspec.msgpack.Decoder(checked)
        self._raw_decoder = msgspec.msgpack.Decoder(dict[str, Any])
        self._history_decoder = msgspec.msgpack.Decoder(list[_TRUSTED.of(Interaction)])  # type: ignore[misc]
        self._signal_decoder = msgspec.msgpack.Decoder(dict[str, Any])

    # -- whole profiles ------------------------------------------------------------------------

    def encode(self, profile: UserProfile) -> bytes:
        """The stored form of ``profile``: ``{"schema": SCHEMA_VERSION, "profile": {...}}``."""
        if not isinstance(profile, UserProfile):
            raise ValidationError(f"expected a UserProfile, got {type(profile).__name__}")
        data = self._encode({"schema": SCHEMA_VERSION, "profile": profile}, f"profile {profile.user_id!r}")
        return self._check_size(data, f"profile {profile.user_id!r}")

    def decode(self, data: bytes | bytearray | memoryview) -> UserProfile:
        """The profile that :meth:`encode` made ``data`` from (possibly by another version)."""
        data = self._check_size(bytes(data), "stored profile")
        try:
            envelope: Any = self._profile_decoder.decode(data)
        except msgspec.MsgspecError as exc:
            return self._decode_other_schema(data, exc)
        if envelope.schema != SCHEMA_VERSION and envelope.schema in _UPGRADES:
            return self._decode_other_schema(data, None)
        profile: UserProfile = envelope.profile
        _TRUSTED.restore(profile)
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

    def _decode_other_schema(self, data: bytes, error: Exception | None) -> UserProfile:
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

    # -- profiles in parts (Redis) --------------------------------------------------------------

    def encode_document(self, profile: UserProfile) -> bytes:
        """Everything in ``profile`` but its interests and history (which a Redis store keeps
        in a hash and a list of their own)."""
        rest = copy.copy(profile)
        rest.interests = {}
        rest.interaction_history = []
        return self._encode({"schema": SCHEMA_VERSION, "profile": rest}, f"profile {profile.user_id!r}")

    def encode_interaction(self, interaction: Interaction) -> bytes:
        return self._encode(interaction, "interaction")

    @staticmethod
    def interest_fields(profile: UserProfile) -> dict[str, str]:
        """The Redis hash of ``profile``'s interests: ``feature␟channel`` → sum,
        ``feature␟#`` → count, ``feature␟@`` → last update (epoch seconds), and
        ``feature␟.`` → any other field of :class:`Interest`, as MessagePack (hex)."""
        fields: dict[str, str] = {}
        extra_names = [f.name for f in dataclasses.fields(Interest) if f.name not in _INTEREST_CORE]
        for name, interest in profile.interests.items():
            prefix = name + FIELD_SEPARATOR
            for key, total in interest.sums.items():
                fields[prefix + key] = repr(float(total))
            fields[prefix + _COUNT] = str(interest.count)
            fields[prefix + _LAST_UPDATED] = repr(interest.last_updated.timestamp())
            if extra_names:
                extra = {n: getattr(interest, n) for n in extra_names}
                fields[prefix + _EXTRA] = msgspec.msgpack.encode(extra).hex()
        return fields

    def decode_parts(
        self,
        document: bytes,
        interest_fields: Mapping[bytes, bytes] | list[bytes],
        history: list[bytes],
        *,
        version: int,
        landmark: float,
        updated_at: float,
    ) -> UserProfile:
        """A profile from its Redis parts. ``interest_fields`` is a hash as a mapping or as the
        flat ``[field, value, ...]`` list that ``HGETALL`` gives inside a script."""
        profile = self.decode(document)
        profile.version = version
        profile.landmark = landmark
        profile.updated_at = datetime.fromtimestamp(updated_at, tz=UTC)
        profile.interests = self._decode_interests(interest_fields)
        if history:
            size = sum(len(h) for h in history)
            if size > self.max_profile_bytes:
                raise ValidationError(f"stored history is {size} bytes; the limit is {self.max_profile_bytes}")
            packed = _msgpack_array_header(len(history)) + b"".join(history)
            try:
                entries = self._history_decoder.decode(packed)
            except msgspec.MsgspecError as exc:
                raise ValidationError(f"stored history cannot be decoded: {exc}") from exc
            _TRUSTED.restore(entries)
            profile.interaction_history = entries
        return profile

    @staticmethod
    def _decode_interests(raw: Mapping[bytes, bytes] | list[bytes]) -> dict[str, Interest]:
        pairs = raw.items() if isinstance(raw, Mapping) else zip(raw[0::2], raw[1::2], strict=True)
        extra_fields = [f for f in dataclasses.fields(Interest) if f.name not in _INTEREST_CORE]
        by_name: dict[bytes, Interest] = {}
        new_interest = object.__new__
        from_timestamp = datetime.fromtimestamp
        for field, value in pairs:
            name, _, part = field.rpartition(b"\x1f")
            interest = by_name.get(name)
            if interest is None:
                interest = new_interest(Interest)  # stored data: validated when it was written
                state = interest.__dict__
                state.update(name=name.decode("utf-8", "surrogatepass"), sums={}, count=0, last_updated=_EPOCH)
                for extra_field in extra_fields:
                    state[extra_field.name] = _default_of(extra_field)
                by_name[name] = interest
            kind = part[:1]
            if kind == b"+" or kind == b"-":
                interest.sums[part.decode()] = float(value)
            elif part == b"#":
                interest.count = int(value)
            elif part == b"@":
                interest.last_updated = from_timestamp(float(value), tz=UTC)
            elif part == b".":
                decoded = msgspec.msgpack.decode(bytes.fromhex(value.decode()))
                known = {f.name for f in extra_fields}
                interest.__dict__.update({k: v for k, v in decoded.items() if k in known})
        return {interest.name: interest for interest in by_name.values()}

    # -- feedback signals -----------------------------------------------------------------------

    def encode_signal(self, signal: Signal) -> bytes:
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

    def _check_size(self, data: bytes, what: str) -> bytes:
        if len(data) > self.max_profile_bytes:
            raise ValidationError(f"{what} is {len(data)} bytes encoded; the limit is {self.max_profile_bytes}")
        return data


_INTEREST_CORE = frozenset({"name", "sums", "count", "last_updated"})
_EPOCH = datetime.fromtimestamp(0, tz=UTC)


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _msgpack_array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")
