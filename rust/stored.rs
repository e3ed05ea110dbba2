//! Profile parts as the Redis store keeps them apart, read back in columns: the interests hash
//! (per feature, one field per evidence channel, its count and its last update) and the
//! time-ordered history (sorted-set members that carry a sort key before their MessagePack
//! entry). Every profile read from Redis goes through these; in Python they cost a third of a
//! millisecond for a profile of 20 interests and 50 history entries.

use crate::error::{KernelError, Result};
use crate::profile::parse_channel_key;
use rustc_hash::FxHashMap;

/// Separates the fields and values of the interests hash when a script sends it as one string.
/// Feature names cannot hold control characters, and values are numbers.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// Joins a feature name and the part of an interest a hash field holds (`+<half-life>`,
/// `-<half-life>`, `#` for the count, `@` for the last update); ends the event id in a history
/// member.
pub const FIELD_SEPARATOR: u8 = 0x1f;

/// Bytes of the sort key that starts every history member.
pub const SORT_KEY_BYTES: usize = 8;

/// The interests of one profile in columns: interest `i` is `names[i]`, with `counts[i]`
/// events, last updated at `last_updated[i]` (epoch seconds; 0 when the hash has no such field)
/// and the channels `channel_keys[indptr[i]..indptr[i + 1]]` with their `sums`.
#[derive(Debug, Default, PartialEq)]
pub struct InterestFields<'a> {
    pub names: Vec<&'a str>,
    pub counts: Vec<u64>,
    pub last_updated: Vec<f64>,
    pub indptr: Vec<usize>,
    pub channel_keys: Vec<&'a str>,
    pub sums: Vec<f64>,
}

fn invalid(message: String) -> KernelError {
    KernelError::Invalid(message)
}

fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| invalid(format!("stored {what} is not UTF-8")))
}

fn number(bytes: &[u8], what: &str) -> Result<f64> {
    let value: f64 = text(bytes, what)?
        .parse()
        .map_err(|_| invalid(format!("stored {what} is not a number")))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(invalid(format!("stored {what} is not finite")))
    }
}

/// Reads the interests hash sent as `field RS value RS field RS value ...` (`RS` being
/// [`RECORD_SEPARATOR`]; an empty input is an empty hash). Fields of a kind this version does
/// not know are skipped, so that a newer penchant may add some.
pub fn parse_interest_fields(blob: &[u8]) -> Result<InterestFields<'_>> {
    // A feature has at least two fields (a channel and its count): size everything once.
    let records = blob
        .iter()
        .filter(|&&b| b == RECORD_SEPARATOR)
        .count()
        .div_ceil(2);
    let mut out = InterestFields {
        names: Vec::with_capacity(records / 2),
        counts: Vec::with_capacity(records / 2),
        last_updated: Vec::with_capacity(records / 2),
        indptr: Vec::with_capacity(records / 2 + 1),
        channel_keys: Vec::with_capacity(records),
        sums: Vec::with_capacity(records),
    };
    let mut channels: Vec<(u32, &str, f64)> = Vec::with_capacity(records);
    let mut index: FxHashMap<&[u8], u32> = FxHashMap::default();
    index.reserve(records / 2);
    if !blob.is_empty() {
        let mut parts = blob.split(|&b| b == RECORD_SEPARATOR);
        while let Some(field) = parts.next() {
            let value = parts
                .next()
                .ok_or_else(|| invalid("stored interests: a field without a value".into()))?;
            let at = field
                .iter()
                .rposition(|&b| b == FIELD_SEPARATOR)
                .ok_or_else(|| invalid("stored interests: a field without a separator".into()))?;
            let (name, part) = (&field[..at], &field[at + 1..]);
            let i = match index.get(name) {
                Some(&i) => i as usize,
                None => {
                    let i = out.names.len();
                    out.names.push(text(name, "interest name")?);
                    out.counts.push(0);
                    out.last_updated.push(0.0);
                    index.insert(name, i as u32);
                    i
                }
            };
            match part {
                [b'+' | b'-', ..] => {
                    let key = text(part, "channel key")?;
                    if parse_channel_key(key).is_none() {
                        return Err(invalid(format!("stored channel key {key:?} is invalid")));
                    }
                    let sum = number(value, "evidence")?;
                    if sum < 0.0 {
                        return Err(invalid(format!(
                            "stored evidence of {:?} is negative",
                            out.names[i]
                        )));
                    }
                    channels.push((i as u32, key, sum));
                }
                b"#" => {
                    out.counts[i] = text(value, "count")?
                        .parse()
                        .map_err(|_| invalid("stored count is not a whole number".into()))?;
                }
                b"@" => out.last_updated[i] = number(value, "last update")?,
                _ => {}
            }
        }
    }
    // Group the channels by feature, keeping their order within each.
    channels.sort_by_key(|&(i, _, _)| i);
    out.indptr.push(0);
    let mut next = channels.iter().peekable();
    for i in 0..out.names.len() as u32 {
        while let Some(&(_, key, sum)) = next.next_if(|c| c.0 == i) {
            out.channel_keys.push(key);
            out.sums.push(sum);
        }
        out.indptr.push(out.channel_keys.len());
    }
    Ok(out)
}

fn take(data: &[u8], at: usize, n: usize) -> Result<&[u8]> {
    data.get(at..at.saturating_add(n))
        .ok_or_else(|| invalid("stored history: a MessagePack value is cut short".into()))
}

fn length(data: &[u8], at: usize, bytes: usize) -> Result<usize> {
    let raw = take(data, at, bytes)?;
    Ok(raw.iter().fold(0usize, |n, &b| (n << 8) | b as usize))
}

/// The end of the one MessagePack value that starts at `start`.
pub fn skip_msgpack(data: &[u8], start: usize) -> Result<usize> {
    let mut at = start;
    let mut pending: usize = 1; // values still to skip
    while pending > 0 {
        pending -= 1;
        let marker = *take(data, at, 1)?.first().unwrap_or(&0);
        at += 1;
        // (bytes of a length that follows, bytes of payload without a length, items inside)
        let (length_bytes, fixed, items): (usize, usize, usize) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0, 0),
            0x80..=0x8f => (0, 0, 2 * (marker & 0x0f) as usize),
            0x90..=0x9f => (0, 0, (marker & 0x0f) as usize),
            0xa0..=0xbf => (0, (marker & 0x1f) as usize, 0),
            0xc4 | 0xd9 => (1, 0, 0),
            0xc5 | 0xda => (2, 0, 0),
            0xc6 | 0xdb => (4, 0, 0),
            0xc7 => (1, 1, 0), // ext 8: length, then a type byte
            0xc8 => (2, 1, 0),
            0xc9 => (4, 1, 0),
            0xca => (0, 4, 0),
            0xcb => (0, 8, 0),
            0xcc | 0xd0 => (0, 1, 0),
            0xcd | 0xd1 => (0, 2, 0),
            0xce | 0xd2 => (0, 4, 0),
            0xcf | 0xd3 => (0, 8, 0),
            0xd4 => (0, 2, 0), // fixext: a type byte and 1, 2, 4, 8 or 16 bytes
            0xd5 => (0, 3, 0),
            0xd6 => (0, 5, 0),
            0xd7 => (0, 9, 0),
            0xd8 => (0, 17, 0),
            0xdc | 0xde => {
                let n = length(data, at, 2)?;
                at += 2;
                (0, 0, if marker == 0xde { 2 * n } else { n })
            }
            0xdd | 0xdf => {
                let n = length(data, at, 4)?;
                at += 4;
                (0, 0, if marker == 0xdf { 2 * n } else { n })
            }
            0xc1 => return Err(invalid("stored history: invalid MessagePack".into())),
        };
        let variable = if length_bytes > 0 {
            let n = length(data, at, length_bytes)?;
            at += length_bytes;
            n
        } else {
            0
        };
        take(data, at, fixed.saturating_add(variable))?;
        at += fixed + variable;
        // Every value still to skip takes at least one byte: counts beyond the input are corrupt.
        if pending.saturating_add(items) > data.len().saturating_sub(at) {
            return Err(invalid(
                "stored history: a MessagePack value is cut short".into(),
            ));
        }
        pending += items;
    }
    Ok(at)
}

/// The MessagePack header of an array or a map of `n` elements, in its smallest form: `tags`
/// are the fix form's high bits and the 16- and 32-bit forms' tags.
fn collection_header(n: usize, tags: [u8; 3], out: &mut Vec<u8>) {
    let [fix, tag16, tag32] = tags;
    if n < 16 {
        out.push(fix | n as u8);
    } else if n < 1 << 16 {
        out.push(tag16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(tag32);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

const ARRAY_TAGS: [u8; 3] = [0x90, 0xdc, 0xdd];
const MAP_TAGS: [u8; 3] = [0x80, 0xde, 0xdf];

fn array_header(n: usize, out: &mut Vec<u8>) {
    collection_header(n, ARRAY_TAGS, out);
}

/// The entries of a history sent as the concatenation of its sorted-set members (each
/// [`SORT_KEY_BYTES`] of sort key, the event id, [`FIELD_SEPARATOR`], one MessagePack value),
/// as one MessagePack array, and how many there are.
pub fn history_entries(blob: &[u8]) -> Result<(usize, Vec<u8>)> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at < blob.len() {
        let id_start = at + SORT_KEY_BYTES;
        let separator = blob
            .get(id_start..)
            .and_then(|rest| rest.iter().position(|&b| b == FIELD_SEPARATOR))
            .ok_or_else(|| invalid("stored history: a member without an event id".into()))?;
        let start = id_start + separator + 1;
        let end = skip_msgpack(blob, start)?;
        spans.push((start, end));
        at = end;
    }
    let size: usize = spans.iter().map(|(s, e)| e - s).sum();
    let mut out = Vec::with_capacity(size + 5);
    array_header(spans.len(), &mut out);
    for (start, end) in &spans {
        out.extend_from_slice(&blob[*start..*end]);
    }
    Ok((spans.len(), out))
}

/// What preference extraction reads of a history, in columns: per event its time (epoch
/// seconds), weight and half-life; per numeric attribute value its event row, attribute id and
/// value; and the attribute names by id (in the order they first appear).
#[derive(Debug, Default, PartialEq)]
pub struct History {
    pub times: Vec<f64>,
    pub weights: Vec<f64>,
    pub half_lives: Vec<f64>,
    pub rows: Vec<u32>,
    pub attribute_ids: Vec<u32>,
    pub values: Vec<f64>,
    pub names: Vec<String>,
}

/// A reader of MessagePack values, front to back.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

/// Reading a penchant-encoded history failed: the caller decodes it the general way instead
/// (which either reads it or says what is wrong with it).
fn unreadable(what: &str) -> KernelError {
    invalid(format!("stored history: {what}"))
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let out = take(self.data, self.at, n)?;
        self.at += n;
        Ok(out)
    }

    fn unsigned(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .bytes(n)?
            .iter()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    fn peek(&self) -> Result<u8> {
        Ok(take(self.data, self.at, 1)?[0])
    }

    fn skip(&mut self) -> Result<()> {
        self.at = skip_msgpack(self.data, self.at)?;
        Ok(())
    }

    /// The length of the map or array (`map` says which) that starts here, or `None` (nothing
    /// read) for another kind of value.
    fn container(&mut self, map: bool) -> Result<Option<usize>> {
        let (fix, wide16, wide32) = if map {
            (0x80, 0xde, 0xdf)
        } else {
            (0x90, 0xdc, 0xdd)
        };
        let marker = self.peek()?;
        let n = match marker {
            m if m & 0xf0 == fix => {
                self.at += 1;
                (m & 0x0f) as usize
            }
            m if m == wide16 || m == wide32 => {
                self.at += 1;
                self.unsigned(if m == wide16 { 2 } else { 4 })? as usize
            }
            _ => return Ok(None),
        };
        // Every item takes at least one byte: a count beyond the input is corrupt.
        if n > self.data.len() - self.at {
            return Err(unreadable("a MessagePack value is cut short"));
        }
        Ok(Some(n))
    }

    /// The number of fields of the map that starts here; `what` names it in the error.
    fn map(&mut self, what: &str) -> Result<usize> {
        self.container(true)?
            .ok_or_else(|| unreadable(&format!("{what} is not a map")))
    }

    /// The name of a map's field, which penchant always writes as a string.
    fn field_name(&mut self) -> Result<&'a [u8]> {
        self.text()?
            .ok_or_else(|| unreadable("a field name is not a string"))
    }

    /// A string (its UTF-8 bytes), or `None` (nothing read) for another kind of value.
    fn text(&mut self) -> Result<Option<&'a [u8]>> {
        let n = match self.peek()? {
            m @ 0xa0..=0xbf => {
                self.at += 1;
                (m & 0x1f) as usize
            }
            m @ 0xd9..=0xdb => {
                self.at += 1;
                self.unsigned(1 << (m - 0xd9))? as usize
            }
            _ => return Ok(None),
        };
        self.bytes(n).map(Some)
    }

    /// A number (any MessagePack int or float), or `None` when the value (skipped) is of
    /// another kind.
    fn number(&mut self) -> Result<Option<f64>> {
        let marker = self.peek()?;
        self.at += 1;
        Ok(Some(match marker {
            0x00..=0x7f => f64::from(marker),
            0xe0..=0xff => f64::from(marker as i8),
            0xca => f64::from(f32::from_bits(self.unsigned(4)? as u32)),
            0xcb => f64::from_bits(self.unsigned(8)?),
            0xcc..=0xcf => self.unsigned(1 << (marker - 0xcc))? as f64,
            0xd0 => f64::from(self.unsigned(1)? as u8 as i8),
            0xd1 => f64::from(self.unsigned(2)? as u16 as i16),
            0xd2 => f64::from(self.unsigned(4)? as u32 as i32),
            0xd3 => self.unsigned(8)? as i64 as f64,
            _ => {
                self.at -= 1;
                self.skip()?;
                return Ok(None);
            }
        }))
    }

    /// A finite number, or an error naming `what`.
    fn finite(&mut self, what: &str) -> Result<f64> {
        match self.number()? {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(unreadable(&format!("{what} is not a finite number"))),
        }
    }

    /// A MessagePack timestamp (extension -1, in any of its three sizes): whole seconds since
    /// the epoch and the microseconds past them (datetimes hold no finer time).
    fn timestamp(&mut self) -> Result<(i64, u32)> {
        let marker = self.peek()?;
        self.at += 1;
        let size = match marker {
            0xd6 => 4,
            0xd7 => 8,
            0xc7 => self.unsigned(1)? as usize,
            _ => return Err(unreadable("a timestamp is not a MessagePack timestamp")),
        };
        if self.bytes(1)?[0] != 0xff {
            return Err(unreadable("a timestamp is not a MessagePack timestamp"));
        }
        let (seconds, nanoseconds) = match size {
            4 => (self.unsigned(4)? as i64, 0),
            8 => {
                let v = self.unsigned(8)?;
                ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
            }
            12 => {
                let nanoseconds = self.unsigned(4)? as u32;
                (self.unsigned(8)? as i64, nanoseconds)
            }
            _ => {
                return Err(unreadable(
                    "a timestamp has a size MessagePack does not define",
                ))
            }
        };
        // A datetime holds whole microseconds of the years 1 to 9999: anything else is not what
        // penchant writes (and decoding would round or refuse it).
        if nanoseconds >= 1_000_000_000 || nanoseconds % 1_000 != 0 {
            return Err(unreadable(
                "a timestamp is not a whole number of microseconds",
            ));
        }
        if !(-62_135_596_800..=253_402_300_799).contains(&seconds) {
            return Err(unreadable("a timestamp is outside the years 1 to 9999"));
        }
        Ok((seconds, nanoseconds / 1_000))
    }
}

/// The entries of a history encoded as penchant stores it (a MessagePack array of maps, one
/// per `Interaction`, whose `timestamp` is a MessagePack timestamp): a cursor on the first
/// entry and how many there are.
fn entries(packed: &[u8]) -> Result<(Cursor<'_>, usize)> {
    let mut cursor = Cursor {
        data: packed,
        at: 0,
    };
    let n = cursor
        .container(false)?
        .ok_or_else(|| unreadable("not a MessagePack array"))?;
    Ok((cursor, n))
}

/// The fields of an `Interaction` that [`read_packed_history`] requires or reads, as bits.
const ITEM_ID: u8 = 1;
const FEEDBACK_TYPE: u8 = 2;
const VALUE: u8 = 4;
const WEIGHT: u8 = 8;
const TIMESTAMP: u8 = 16;
const HALF_LIFE: u8 = 32;
const ATTRIBUTES: u8 = 64;
const EVENT_ID: u8 = 128;
const REQUIRED: u8 = ITEM_ID | FEEDBACK_TYPE | VALUE | WEIGHT | TIMESTAMP;

/// Reads the columns of a history encoded as penchant stores it (see [`History`]) without
/// making an object per entry: each entry's `timestamp`, `weight`, `half_life` (when absent:
/// `default_half_life`, as the decoder fills it) and the values of its `attributes`; the
/// `features` and fields it does not know are skipped. Times are `seconds + microseconds·10⁻⁶`,
/// the sum the reader of decoded entries makes of a `datetime`. Whatever decoding the entry as
/// an `Interaction` would refuse or read otherwise is an error (a required field missing or of
/// another type, a field twice, an attribute that is not a number, a time finer than a
/// microsecond), and so are a weight that is not finite and a half-life that is not positive:
/// the caller then decodes the history the general way, which reads it or says exactly what
/// is wrong.
pub fn read_packed_history(packed: &[u8], default_half_life: f64) -> Result<History> {
    let (mut cursor, n) = entries(packed)?;
    let mut out = History {
        times: Vec::with_capacity(n),
        weights: Vec::with_capacity(n),
        half_lives: Vec::with_capacity(n),
        ..History::default()
    };
    let mut ids: FxHashMap<&[u8], u32> = FxHashMap::default();
    let mut in_entry: Vec<u32> = Vec::new(); // the attribute ids of the current entry
    for row in 0..n {
        let (mut seen, mut time, mut weight, mut half_life) = (0u8, 0.0, 0.0, default_half_life);
        for _ in 0..cursor.map("an entry")? {
            let name = cursor.field_name()?;
            let field = match name {
                b"item_id" => ITEM_ID,
                b"feedback_type" => FEEDBACK_TYPE,
                b"value" => VALUE,
                b"weight" => WEIGHT,
                b"timestamp" => TIMESTAMP,
                b"half_life" => HALF_LIFE,
                b"attributes" => ATTRIBUTES,
                b"event_id" => EVENT_ID,
                _ => {
                    cursor.skip()?;
                    continue;
                }
            };
            if seen & field != 0 {
                return Err(unreadable("an entry holds a field twice"));
            }
            seen |= field;
            match field {
                ITEM_ID | FEEDBACK_TYPE | EVENT_ID => {
                    cursor
                        .text()?
                        .ok_or_else(|| unreadable("an id or a feedback type is not a string"))?;
                }
                VALUE => {
                    cursor
                        .number()?
                        .ok_or_else(|| unreadable("a value is not a number"))?;
                }
                WEIGHT => weight = cursor.finite("a weight")?,
                HALF_LIFE => half_life = cursor.finite("a half-life")?,
                TIMESTAMP => {
                    let (seconds, micros) = cursor.timestamp()?;
                    time = seconds as f64 + f64::from(micros) * 1e-6;
                }
                _ => {
                    in_entry.clear();
                    for _ in 0..cursor.map("attributes")? {
                        let name = cursor.field_name()?;
                        let value = cursor
                            .number()?
                            .ok_or_else(|| unreadable("an attribute is not a number"))?;
                        if !value.is_finite() {
                            return Err(unreadable("an attribute is NaN or infinite"));
                        }
                        let next = ids.len() as u32;
                        let id = *ids.entry(name).or_insert(next);
                        if id == next {
                            out.names.push(text(name, "attribute name")?.to_owned());
                        } else if in_entry.contains(&id) {
                            return Err(unreadable("an entry names an attribute twice"));
                        }
                        in_entry.push(id);
                        out.rows.push(row as u32);
                        out.attribute_ids.push(id);
                        out.values.push(value);
                    }
                }
            }
        }
        if seen & REQUIRED != REQUIRED || half_life <= 0.0 {
            return Err(unreadable(
                "an entry lacks a field it needs, or its half-life is not positive",
            ));
        }
        out.times.push(time);
        out.weights.push(weight);
        out.half_lives.push(half_life);
    }
    Ok(out)
}

/// The time of the last entry of a history encoded as penchant stores it (epoch seconds, as
/// Python's `datetime.timestamp()` gives them: whole microseconds divided by 10⁶), or `None`
/// for an empty history; the entries before it are skipped, not read.
pub fn packed_history_last_time(packed: &[u8]) -> Result<Option<f64>> {
    let (mut cursor, n) = entries(packed)?;
    if n == 0 {
        return Ok(None);
    }
    for _ in 1..n {
        cursor.skip()?;
    }
    for _ in 0..cursor.map("an entry")? {
        if cursor.field_name()? == b"timestamp" {
            let (seconds, micros) = cursor.timestamp()?;
            // Exact while the microseconds fit a double's 53 bits (some 285 years around
            // 1970); beyond them the caller's general path rounds as Python does.
            let total = i128::from(seconds) * 1_000_000 + i128::from(micros);
            if total.unsigned_abs() > 1 << 53 {
                return Err(unreadable("a time too far from 1970 to read exactly here"));
            }
            return Ok(Some(total as f64 / 1e6));
        }
        cursor.skip()?;
    }
    Err(unreadable("an entry lacks its time"))
}

/// The sort key of a history entry at `microseconds` since the epoch: big-endian with the sign
/// bit flipped, so that byte order is time order (and, the event id following it, ties go by
/// event id as `InterestModel` orders them).
pub fn history_sort_key(microseconds: i64) -> [u8; SORT_KEY_BYTES] {
    ((microseconds as u64) ^ (1 << 63)).to_be_bytes()
}

/// A calendar time in UTC: year, month, day, hour, minute, second, microsecond.
pub type CivilTime = (i32, u8, u8, u8, u8, u8, u32);

fn civil_from_days(days: i64) -> (i64, u8, u8) {
    // Howard Hinnant's algorithm (days since 1970-01-01 to a proleptic Gregorian date).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `seconds` since the epoch as Python's `datetime.fromtimestamp(seconds, UTC)` holds them:
/// whole seconds (rounded down) and microseconds (the fraction rounded half to even), or
/// `None` outside the years 1 to 9999 (where Python refuses too).
pub fn utc_seconds_micros(seconds: f64) -> Option<(i64, u32)> {
    if !seconds.is_finite() {
        return None;
    }
    let whole = seconds.trunc();
    let mut fraction = ((seconds - whole) * 1e6).round_ties_even();
    let mut whole = whole;
    if fraction >= 1e6 {
        fraction -= 1e6;
        whole += 1.0;
    } else if fraction < 0.0 {
        fraction += 1e6;
        whole -= 1.0;
    }
    // 0001-01-01T00:00:00 and 9999-12-31T23:59:59 UTC.
    if !(-62_135_596_800.0..=253_402_300_799.0).contains(&whole) {
        return None;
    }
    Some((whole as i64, fraction as u32))
}

/// The UTC calendar time of `seconds` since the epoch, rounded to the microsecond exactly as
/// Python's `datetime.fromtimestamp(seconds, UTC)` rounds (see [`utc_seconds_micros`]), or
/// `None` outside the years 1 to 9999.
pub fn utc_civil_time(seconds: f64) -> Option<CivilTime> {
    let (whole, micros) = utc_seconds_micros(seconds)?;
    let (days, of_day) = (whole.div_euclid(86_400), whole.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    Some((
        year as i32,
        month,
        day,
        (of_day / 3_600) as u8,
        (of_day % 3_600 / 60) as u8,
        (of_day % 60) as u8,
        micros,
    ))
}

/// A history entry as `InterestModel` makes it from a feedback signal: the fields of Python's
/// `Interaction`, in their order, with its time as epoch seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    pub item_id: &'a str,
    pub feedback_type: &'a str,
    pub value: f64,
    pub weight: f64,
    pub features: Vec<(&'a str, f64)>,
    pub attributes: Vec<(&'a str, f64)>,
    pub timestamp: f64,
    pub event_id: &'a str,
    pub half_life: f64,
}

/// Writes MessagePack byte for byte as msgspec writes the same values (the smallest header
/// for a string or a map, every float in 64 bits, times as the timestamp extension).
struct Writer(Vec<u8>);

impl Writer {
    fn map(&mut self, n: usize) {
        collection_header(n, MAP_TAGS, &mut self.0);
    }

    fn str(&mut self, s: &str) {
        let n = s.len();
        if n < 32 {
            self.0.push(0xa0 | n as u8);
        } else if n < 1 << 8 {
            self.0.extend_from_slice(&[0xd9, n as u8]);
        } else if n < 1 << 16 {
            self.0.push(0xda);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.0.push(0xdb);
            self.0.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.0.extend_from_slice(s.as_bytes());
    }

    fn f64(&mut self, x: f64) {
        self.0.push(0xcb);
        self.0.extend_from_slice(&x.to_be_bytes());
    }

    fn floats(&mut self, pairs: &[(&str, f64)]) {
        self.map(pairs.len());
        for (name, x) in pairs {
            self.str(name);
            self.f64(*x);
        }
    }

    fn time(&mut self, seconds: i64, micros: u32) {
        let nanos = micros * 1_000;
        if (0..1 << 34).contains(&seconds) {
            if nanos == 0 && seconds < 1 << 32 {
                self.0.extend_from_slice(&[0xd6, 0xff]);
                self.0.extend_from_slice(&(seconds as u32).to_be_bytes());
            } else {
                self.0.extend_from_slice(&[0xd7, 0xff]);
                self.0
                    .extend_from_slice(&((u64::from(nanos) << 34) | seconds as u64).to_be_bytes());
            }
        } else {
            self.0.extend_from_slice(&[0xc7, 12, 0xff]);
            self.0.extend_from_slice(&nanos.to_be_bytes());
            self.0.extend_from_slice(&seconds.to_be_bytes());
        }
    }
}

/// The Redis history member of `entry` (what `ProfileSerializer.history_member` makes of the
/// `Interaction`): its time as a sort key, its event id, [`FIELD_SEPARATOR`], then the entry
/// in MessagePack as msgspec encodes the `Interaction`. Refused when its time lies outside the
/// years 1 to 9999.
pub fn history_member(entry: &Entry<'_>) -> Result<Vec<u8>> {
    let (seconds, micros) = utc_seconds_micros(entry.timestamp).ok_or_else(|| {
        invalid(format!(
            "time {} lies outside the range of dates",
            entry.timestamp
        ))
    })?;
    let names = entry.features.iter().chain(&entry.attributes);
    let size = 160 + entry.event_id.len() * 2 + names.map(|(n, _)| n.len() + 12).sum::<usize>();
    let mut out = Writer(Vec::with_capacity(size));
    out.0
        .extend_from_slice(&history_sort_key(seconds * 1_000_000 + i64::from(micros)));
    out.0.extend_from_slice(entry.event_id.as_bytes());
    out.0.push(FIELD_SEPARATOR);
    out.map(9);
    out.str("item_id");
    out.str(entry.item_id);
    out.str("feedback_type");
    out.str(entry.feedback_type);
    out.str("value");
    out.f64(entry.value);
    out.str("weight");
    out.f64(entry.weight);
    out.str("features");
    out.floats(&entry.features);
    out.str("attributes");
    out.floats(&entry.attributes);
    out.str("timestamp");
    out.time(seconds, micros);
    out.str("event_id");
    out.str(entry.event_id);
    out.str("half_life");
    out.f64(entry.half_life);
    Ok(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(pairs: &[(&str, &str)]) -> Vec<u8> {
        let flat: Vec<&str> = pairs.iter().flat_map(|(f, v)| [*f, *v]).collect();
        flat.join("\u{1e}").into_bytes()
    }

    #[test]
    fn interests_are_grouped_by_feature_whatever_the_field_order() {
        let data = blob(&[
            ("genre:jazz\u{1f}+604800", "1.5"),
            ("tag:a\u{1f}#", "2"),
            ("genre:jazz\u{1f}#", "3"),
            ("genre:jazz\u{1f}-86400", "0.25"),
            ("tag:a\u{1f}@", "1700000000.5"),
            ("tag:a\u{1f}+60", "1e-300"),
            ("genre:jazz\u{1f}.", "80"),
            ("genre:jazz\u{1f}@", "1700000001"),
        ]);
        let parsed = parse_interest_fields(&data).unwrap();
        assert_eq!(parsed.names, ["genre:jazz", "tag:a"]);
        assert_eq!(parsed.counts, [3, 2]);
        assert_eq!(parsed.last_updated, [1_700_000_001.0, 1_700_000_000.5]);
        assert_eq!(parsed.indptr, [0, 2, 3]);
        assert_eq!(parsed.channel_keys, ["+604800", "-86400", "+60"]);
        assert_eq!(parsed.sums, [1.5, 0.25, 1e-300]);
    }

    #[test]
    fn fields_of_an_unknown_kind_are_skipped() {
        let data = blob(&[("f\u{1f}*60", "x"), ("f\u{1f}#", "1")]);
        let parsed = parse_interest_fields(&data).unwrap();
        assert_eq!(parsed.names, ["f"]);
        assert_eq!(parsed.counts, [1]);
        assert!(parsed.sums.is_empty());
    }

    #[test]
    fn an_empty_hash_has_no_interests() {
        let parsed = parse_interest_fields(b"").unwrap();
        assert!(parsed.names.is_empty());
        assert_eq!(parsed.indptr, [0]);
    }

    #[test]
    fn corrupt_interests_are_refused() {
        for bad in [
            blob(&[("f\u{1f}+60", "x")]),
            blob(&[("f\u{1f}+60", "inf")]),
            blob(&[("f\u{1f}+60", "-1")]),
            blob(&[("f\u{1f}#", "1.5")]),
            blob(&[("no separator", "1")]),
            b"f\x1f+60".to_vec(),
            b"\xff\x1f#\x1e1".to_vec(),
        ] {
            assert!(parse_interest_fields(&bad).is_err(), "{bad:?}");
        }
    }

    fn member(key: i64, id: &str, entry: &[u8]) -> Vec<u8> {
        let mut out = history_sort_key(key).to_vec();
        out.extend_from_slice(id.as_bytes());
        out.push(FIELD_SEPARATOR);
        out.extend_from_slice(entry);
        out
    }

    #[test]
    fn a_history_member_is_written_as_msgspec_writes_it() {
        let entry = Entry {
            item_id: "item7",
            feedback_type: "click",
            value: 1.0,
            weight: 1.0,
            features: vec![("genre:7", 1.0), ("genre:9", 0.5)],
            attributes: vec![],
            timestamp: 1_700_000_210.0,
            event_id: "alice-7",
            half_life: 604_800.0,
        };
        let mut expected = history_sort_key(1_700_000_210_000_000).to_vec();
        expected.extend_from_slice(b"alice-7\x1f");
        // From msgspec.msgpack.encode of the Interaction.
        expected.extend_from_slice(
            b"\x89\xa7item_id\xa5item7\xadfeedback_type\xa5click\xa5value\xcb?\xf0\0\0\0\0\0\0",
        );
        expected.extend_from_slice(
            b"\xa6weight\xcb?\xf0\0\0\0\0\0\0\xa8features\x82\xa7genre:7\xcb?\xf0\0\0\0\0\0\0",
        );
        expected.extend_from_slice(
            b"\xa7genre:9\xcb?\xe0\0\0\0\0\0\0\xaaattributes\x80\xa9timestamp\xd6\xffeS\xf1\xd2",
        );
        expected.extend_from_slice(b"\xa8event_id\xa7alice-7\xa9half_life\xcbA\"u\0\0\0\0\0");
        assert_eq!(history_member(&entry).unwrap(), expected);
        let late = Entry {
            timestamp: 1e12,
            ..entry
        };
        assert!(history_member(&late).is_err());
    }

    #[test]
    fn history_members_become_one_msgpack_array() {
        // {"a": [1, -1, 2.5], "b": "x\x1f"} and a nested map with bin, ext and wide ints.
        let first: &[u8] = &[
            0x82, 0xa1, b'a', 0x93, 0x01, 0xff, 0xcb, 0x40, 0x04, 0, 0, 0, 0, 0, 0, 0xa1, b'b',
            0xa2, b'x', 0x1f,
        ];
        let second: &[u8] = &[
            0x83, 0xa1, b't', 0xd7, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 0xa1, b'k', 0xc4, 2, 0x1f, 0x1e,
            0xa1, b'n', 0xdc, 0, 2, 0xcd, 1, 0, 0xd3, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        let mut data = member(5, "e1", first);
        data.extend(member(-3, "e10", second));
        let (count, packed) = history_entries(&data).unwrap();
        assert_eq!(count, 2);
        let mut expected = vec![0x92];
        expected.extend_from_slice(first);
        expected.extend_from_slice(second);
        assert_eq!(packed, expected);
        assert_eq!(history_entries(b"").unwrap(), (0, vec![0x90]));
    }

    #[test]
    fn corrupt_history_is_refused() {
        let good = member(1, "e", &[0x92, 0x01, 0x02]);
        for bad in [
            good[..good.len() - 1].to_vec(),                 // cut short
            good[..5].to_vec(),                              // no event id
            member(1, "e", &[0xc1]),                         // never-used marker
            member(1, "e", &[0xdd, 0xff, 0xff, 0xff, 0xff]), // a huge count
            member(1, "e", &[0xc6, 0xff, 0xff, 0xff, 0xff]), // a huge bin
        ] {
            assert!(history_entries(&bad).is_err(), "{bad:?}");
        }
    }

    fn text_value(out: &mut Vec<u8>, text: &str) {
        out.push(0xa0 | text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }

    /// `{"item_id": "i", "feedback_type": "click", "value": 1, "weight": w, "timestamp": <ts>,
    /// "attributes": <attributes>, "id": [1]}` (the last a field the reader does not know).
    fn entry_with(weight: f64, timestamp: &[u8], attributes: &[u8]) -> Vec<u8> {
        let mut out = vec![0x87];
        for (key, value) in [("item_id", "i"), ("feedback_type", "click")] {
            text_value(&mut out, key);
            text_value(&mut out, value);
        }
        text_value(&mut out, "value");
        out.push(0x01);
        text_value(&mut out, "weight");
        out.push(0xcb);
        out.extend_from_slice(&weight.to_bits().to_be_bytes());
        text_value(&mut out, "timestamp");
        out.extend_from_slice(timestamp);
        text_value(&mut out, "attributes");
        out.extend_from_slice(attributes);
        text_value(&mut out, "id");
        out.extend_from_slice(&[0x91, 0x01]);
        out
    }

    /// An entry whose attributes are `{"p": 2}`.
    fn entry(weight: f64, timestamp: &[u8]) -> Vec<u8> {
        entry_with(weight, timestamp, &[0x81, 0xa1, b'p', 0x02])
    }

    fn array(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        array_header(entries.len(), &mut out);
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn packed_histories_read_every_timestamp_size() {
        let seconds32 = [0xd6, 0xff, 0, 0, 0, 60];
        // 64-bit: 500,000 ns (0.5 ms) in the top 30 bits, 120 s in the low 34.
        let packed64 = ((500_000u64) << 34) | 120;
        let mut seconds64 = vec![0xd7, 0xff];
        seconds64.extend_from_slice(&packed64.to_be_bytes());
        // 96-bit: 250,000 ns and -2 s (before 1970).
        let mut seconds96 = vec![0xc7, 12, 0xff];
        seconds96.extend_from_slice(&250_000u32.to_be_bytes());
        seconds96.extend_from_slice(&(-2i64).to_be_bytes());
        let data = array(&[
            entry(1.0, &seconds32),
            entry(-0.5, &seconds64),
            entry(2.0, &seconds96),
        ]);
        let h = read_packed_history(&data, 7.0).unwrap();
        assert_eq!(h.times, [60.0, 120.0 + 500.0 * 1e-6, -2.0 + 250.0 * 1e-6]);
        assert_eq!(h.weights, [1.0, -0.5, 2.0]);
        assert_eq!(h.half_lives, [7.0; 3]);
        assert_eq!(h.names, ["p"]);
        assert_eq!(h.rows, [0, 1, 2]);
        assert_eq!(h.attribute_ids, [0, 0, 0]);
        assert_eq!(h.values, [2.0; 3]);
        assert_eq!(
            packed_history_last_time(&data).unwrap(),
            Some(-1_999_750.0 / 1e6)
        );
        assert_eq!(packed_history_last_time(&[0x90]).unwrap(), None);
        assert_eq!(
            read_packed_history(&[0x90], 1.0).unwrap(),
            History::default()
        );
    }

    #[test]
    fn packed_histories_refuse_what_they_cannot_read() {
        let good = array(&[entry(1.0, &[0xd6, 0xff, 0, 0, 0, 1])]);
        assert!(read_packed_history(&good, 1.0).is_ok());
        let mut bad_extension = good.clone();
        let at = good.windows(2).position(|w| w == [0xd6, 0xff]).unwrap();
        bad_extension[at + 1] = 0x01; // an extension of another type
        let mut sub_microsecond = vec![0xd7, 0xff]; // 5 s and 1,001 ns
        sub_microsecond.extend_from_slice(&((1_001u64 << 34) | 5).to_be_bytes());
        for bad in [
            good[..good.len() - 1].to_vec(),
            bad_extension,
            array(&[entry(f64::NAN, &[0xd6, 0xff, 0, 0, 0, 1])]),
            array(&[entry(1.0, &[0xa1, b'x'])]), // a time as text
            array(&[entry(1.0, &sub_microsecond)]),
            array(&[entry_with(
                1.0,
                &[0xd6, 0xff, 0, 0, 0, 1],
                &[0x81, 0xa1, b'c', 0xa1, b'x'],
            )]),
            array(&[entry_with(
                1.0,
                &[0xd6, 0xff, 0, 0, 0, 1],
                &[0x82, 0xa1, b'p', 1, 0xa1, b'p', 2],
            )]),
            entry(1.0, &[0xd6, 0xff, 0, 0, 0, 1])[1..].to_vec(), // no array header
            vec![0x81, 0xa1, b'x', 0x01],                        // not an array
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],                  // a huge count
        ] {
            assert!(read_packed_history(&bad, 1.0).is_err(), "{bad:?}");
        }
        assert!(read_packed_history(&good, 0.0).is_err()); // no half-life, default not positive
    }

    #[test]
    fn sort_keys_order_like_time() {
        let times = [
            i64::MIN,
            -1_000_000,
            -1,
            0,
            1,
            1_700_000_000_000_000,
            i64::MAX,
        ];
        for pair in times.windows(2) {
            assert!(history_sort_key(pair[0]) < history_sort_key(pair[1]));
        }
    }

    #[test]
    fn civil_times_match_known_dates() {
        assert_eq!(utc_civil_time(0.0), Some((1970, 1, 1, 0, 0, 0, 0)));
        assert_eq!(
            utc_civil_time(1_700_000_000.25),
            Some((2023, 11, 14, 22, 13, 20, 250_000))
        );
        assert_eq!(
            utc_civil_time(-1.5),
            Some((1969, 12, 31, 23, 59, 58, 500_000))
        );
        assert_eq!(
            utc_civil_time(951_782_400.0),
            Some((2000, 2, 29, 0, 0, 0, 0))
        );
        // Half a microsecond rounds to even; a fraction that rounds up to a second carries.
        assert_eq!(utc_civil_time(0.0000005).map(|t| t.6), Some(0));
        assert_eq!(utc_civil_time(0.9999999), Some((1970, 1, 1, 0, 0, 1, 0)));
        assert_eq!(
            utc_civil_time(-62_135_596_800.0),
            Some((1, 1, 1, 0, 0, 0, 0))
        );
        assert_eq!(utc_civil_time(-62_135_596_801.0), None);
        assert_eq!(utc_civil_time(253_402_300_800.0), None);
        assert_eq!(utc_civil_time(f64::NAN), None);
    }
}
