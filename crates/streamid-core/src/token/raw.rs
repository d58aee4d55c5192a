//! [`RawToken`]: the string form of a multi-writer stream token, with numeric instance ids
//! (spec §11.4, §11.5).
//!
//! It owns the grammar and the conversions to and from [`MultiWriterStreamToken`]
//! (`to_raw`, `resolve`, given the caller's name ↔ id lookups). `Display` writes the
//! canonical form and `FromStr` accepts exactly
//!
//! ```text
//! token  = number / "m" number *( "~" [ entry ] )
//! entry  = number "." number
//! number = 1*DIGIT                                  ; ASCII digits only
//! ```
//!
//! Invariant: `stream >= 0`, ids `>= 0`, every entry `> stream`, entries sorted by id
//! without duplicates; so every value displays as a string that parses back to it.
//! Parsing must never panic, whatever the input.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::MultiWriterStreamToken;
use super::error::{TokenError, TokenErrorKind};

/// A multi-writer stream token with numeric instance ids: the string form of a
/// [`MultiWriterStreamToken`] (spec §11.4).
///
/// Instance ids come from the `instance_map` table, so the core does not know them; the
/// caller converts with [`MultiWriterStreamToken::to_raw`] and [`RawToken::resolve`],
/// passing its name ↔ id lookups.
///
/// `Display` writes `<stream>` without entries, else `m<stream>~<id>.<pos>~…` in ascending
/// id order; `FromStr` accepts exactly the grammar of spec §11.5 (ASCII digits only; no
/// signs, spaces or separators; empty `~` parts skipped; entries in any order).
///
/// # Examples
///
/// ```
/// use streamid_core::RawToken;
///
/// # fn main() -> Result<(), streamid_core::TokenError> {
/// // Every writer is at >= 56, instance 2 at 58, instance 3 at 59.
/// let raw: RawToken = "m56~3.59~2.58".parse()?;
/// assert_eq!(raw.stream(), 56);
/// assert_eq!(raw.entries(), &[(2, 58), (3, 59)]);
/// assert_eq!(raw.to_string(), "m56~2.58~3.59");
///
/// assert_eq!("m5~".parse::<RawToken>()?.to_string(), "5");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawToken {
    /// Every writer is at least here; `>= 0`.
    stream: i64,
    /// `(instance id, position)`, ids `>= 0` ascending and distinct, positions `> stream`.
    entries: Vec<(i32, i64)>,
}

impl RawToken {
    /// A raw token from a stream position and `(instance id, position)` entries, in any
    /// order.
    ///
    /// # Errors
    ///
    /// [`TokenError`] if `stream` or an id is negative (the string form cannot express
    /// it), an id appears twice, or an entry is `<= stream`.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::{RawToken, TokenErrorKind};
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let raw = RawToken::new(56, [(3, 59), (2, 58)])?;
    /// assert_eq!(raw.to_string(), "m56~2.58~3.59");
    ///
    /// let err = RawToken::new(56, [(2, 56)]).unwrap_err();
    /// assert_eq!(
    ///     err.kind(),
    ///     &TokenErrorKind::IdEntryNotAhead { id: 2, position: 56, stream: 56 }
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(
        stream: i64,
        entries: impl IntoIterator<Item = (i32, i64)>,
    ) -> Result<RawToken, TokenError> {
        RawToken::build(stream, entries).map_err(TokenError::new)
    }

    /// A raw token without entries: every writer is at `stream`.
    ///
    /// # Errors
    ///
    /// [`TokenError`] if `stream` is negative.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::RawToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// assert_eq!(RawToken::from_stream(56)?.to_string(), "56");
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_stream(stream: i64) -> Result<RawToken, TokenError> {
        RawToken::new(stream, [])
    }

    /// [`new`](Self::new), reporting only the kind.
    fn build(
        stream: i64,
        entries: impl IntoIterator<Item = (i32, i64)>,
    ) -> Result<RawToken, TokenErrorKind> {
        if stream < 0 {
            return Err(TokenErrorKind::NegativeStream { stream });
        }
        let mut sorted = BTreeMap::new();
        for (id, position) in entries {
            if id < 0 {
                return Err(TokenErrorKind::NegativeInstanceId { id });
            }
            if position <= stream {
                return Err(TokenErrorKind::IdEntryNotAhead {
                    id,
                    position,
                    stream,
                });
            }
            if sorted.insert(id, position).is_some() {
                return Err(TokenErrorKind::DuplicateInstanceId { id });
            }
        }
        Ok(RawToken {
            stream,
            entries: sorted.into_iter().collect(),
        })
    }

    /// The position every writer has reached.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::RawToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// assert_eq!("m56~2.58".parse::<RawToken>()?.stream(), 56);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream(&self) -> i64 {
        self.stream
    }

    /// The writers ahead of [`stream`](Self::stream): `(instance id, position)`, ascending
    /// by id, every position `> stream`.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::RawToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// assert_eq!("m56~3.59~2.58".parse::<RawToken>()?.entries(), &[(2, 58), (3, 59)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// Converts to a [`MultiWriterStreamToken`], naming each instance id with `name_of`
    /// (typically a lookup in the `instance_map` table or its cache).
    ///
    /// # Errors
    ///
    /// [`TokenError`] if `name_of` returns `None` for an id
    /// ([`UnknownInstanceId`](TokenErrorKind::UnknownInstanceId)) or the same name for two
    /// ids ([`DuplicateInstance`](TokenErrorKind::DuplicateInstance)).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::{RawToken, TokenErrorKind};
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let names = |id: i32| match id {
    ///     2 => Some("worker2".to_owned()),
    ///     3 => Some("worker3".to_owned()),
    ///     _ => None,
    /// };
    /// let token = "m56~2.58~3.59".parse::<RawToken>()?.resolve(names)?;
    /// assert_eq!(token.stream(), 56);
    /// assert_eq!(token.pos_for_instance("worker3"), 59);
    ///
    /// let err = "m56~4.60".parse::<RawToken>()?.resolve(names).unwrap_err();
    /// assert_eq!(err.kind(), &TokenErrorKind::UnknownInstanceId { id: 4 });
    /// # Ok(())
    /// # }
    /// ```
    pub fn resolve(
        &self,
        mut name_of: impl FnMut(i32) -> Option<String>,
    ) -> Result<MultiWriterStreamToken, TokenError> {
        let mut named = Vec::with_capacity(self.entries.len());
        for &(id, position) in &self.entries {
            let name = name_of(id)
                .ok_or_else(|| TokenError::new(TokenErrorKind::UnknownInstanceId { id }))?;
            named.push((name, position));
        }
        MultiWriterStreamToken::new(self.stream, named)
    }
}

impl MultiWriterStreamToken {
    /// The string form with numeric instance ids, looked up with `id_of` (typically the
    /// `instance_map` table or its cache; spec §11.4). Display the result for the string.
    ///
    /// # Errors
    ///
    /// [`TokenError`] if `id_of` returns `None` for an instance
    /// ([`UnknownInstance`](TokenErrorKind::UnknownInstance)), a negative id or the same
    /// id for two instances, or if `stream` is negative (the string form cannot express
    /// it).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::{MultiWriterStreamToken, RawToken};
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let ids = |name: &str| match name {
    ///     "worker2" => Some(2),
    ///     "worker3" => Some(3),
    ///     _ => None,
    /// };
    /// let t = MultiWriterStreamToken::new(56, [("worker3", 59), ("worker2", 58)])?;
    /// let s = t.to_raw(ids)?.to_string();
    /// assert_eq!(s, "m56~2.58~3.59");
    ///
    /// // And back.
    /// let names = |id: i32| Some(format!("worker{id}"));
    /// assert_eq!(s.parse::<RawToken>()?.resolve(names)?, t);
    /// # Ok(())
    /// # }
    /// ```
    pub fn to_raw(
        &self,
        mut id_of: impl FnMut(&str) -> Option<i32>,
    ) -> Result<RawToken, TokenError> {
        let mut entries = Vec::with_capacity(self.instance_map.len());
        for (instance, &position) in &self.instance_map {
            let id = id_of(instance).ok_or_else(|| {
                TokenError::new(TokenErrorKind::UnknownInstance {
                    instance: instance.clone(),
                })
            })?;
            entries.push((id, position));
        }
        RawToken::new(self.stream, entries)
    }
}

impl fmt::Display for RawToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return write!(f, "{}", self.stream);
        }
        write!(f, "m{}", self.stream)?;
        for (id, position) in &self.entries {
            write!(f, "~{id}.{position}")?;
        }
        Ok(())
    }
}

impl FromStr for RawToken {
    type Err = TokenError;

    /// Parses exactly the grammar of spec §11.5.
    fn from_str(input: &str) -> Result<RawToken, TokenError> {
        parse(input).map_err(|kind| TokenError::parsing(input, kind))
    }
}

/// The parser behind `FromStr`; errors come out in input order, left to right.
fn parse(input: &str) -> Result<RawToken, TokenErrorKind> {
    let Some(&first) = input.as_bytes().first() else {
        return Err(TokenErrorKind::Empty);
    };
    if first.is_ascii_digit() {
        // token = number
        return RawToken::build(number(input)?, []);
    }
    let Some(rest) = input.strip_prefix('m') else {
        return Err(TokenErrorKind::BadStart);
    };
    // token = "m" number *( "~" [ entry ] )
    let mut parts = rest.split('~');
    let stream = number(parts.next().unwrap_or_default())?;
    let mut entries = Vec::new();
    for entry in parts.filter(|part| !part.is_empty()) {
        // entry = number "." number
        let malformed = || TokenErrorKind::MalformedEntry {
            entry: entry.to_owned(),
        };
        let (id, position) = entry.split_once('.').ok_or_else(malformed)?;
        if position.contains('.') {
            return Err(malformed());
        }
        // An instance id must fit the `instance_id` column (32-bit signed).
        let id = i32::try_from(number(id)?).map_err(|_| TokenErrorKind::NumberOutOfRange {
            number: id.to_owned(),
        })?;
        let position = number(position)?;
        // Checked here too, not only in `build`, so the first error in input order wins.
        if position <= stream {
            return Err(TokenErrorKind::IdEntryNotAhead {
                id,
                position,
                stream,
            });
        }
        entries.push((id, position));
    }
    RawToken::build(stream, entries)
}

/// `number = 1*DIGIT`, fitting `i64`.
fn number(text: &str) -> Result<i64, TokenErrorKind> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenErrorKind::MalformedNumber {
            number: text.to_owned(),
        });
    }
    let out_of_range = || TokenErrorKind::NumberOutOfRange {
        number: text.to_owned(),
    };
    text.bytes().try_fold(0i64, |value, digit| {
        value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(digit - b'0')))
            .ok_or_else(out_of_range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_bounds() {
        assert_eq!(number("0"), Ok(0));
        assert_eq!(number("007"), Ok(7));
        assert_eq!(number("9223372036854775807"), Ok(i64::MAX));
        assert!(matches!(
            number("9223372036854775808"),
            Err(TokenErrorKind::NumberOutOfRange { .. })
        ));
        assert!(matches!(
            number("99999999999999999999999999"),
            Err(TokenErrorKind::NumberOutOfRange { .. })
        ));
        for bad in ["", "+1", "-1", " 1", "1 ", "1_000", "１", "0x1"] {
            assert!(
                matches!(number(bad), Err(TokenErrorKind::MalformedNumber { .. })),
                "{bad:?}"
            );
        }
    }
}
