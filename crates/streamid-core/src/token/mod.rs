//! Multi-writer stream tokens (spec §11): a vector-clock position over a stream's writers.
//!
//! [`MultiWriterStreamToken`] is the value readers carry and compare; [`RawToken`] is its
//! string form, with the numeric instance ids of the `instance_map` table, which the caller
//! looks up (the core does no I/O). [`TokenError`] is the one error of both.
//!
//! Invariant (spec §11.1, I11): every entry of a token is strictly ahead of its `stream`.
//! Construction and parsing reject violations; every operation filters its result to keep
//! it, so a token left over from the original's serialisation bug (upstream #17438) can
//! never be built. Tokens never change once built.

mod error;
mod raw;

use std::collections::BTreeMap;

use crate::Tracker;

pub use error::{TokenError, TokenErrorKind};
pub use raw::RawToken;

/// A position in a stream written by several writers (spec §11).
///
/// Its holder has seen every row up to [`stream`](Self::stream), and, for each writer in
/// [`instance_map`](Self::instance_map), that writer's rows up to its entry — so a reader
/// sees a fast writer's rows without waiting for the slowest writer to move the
/// persisted-up-to position.
///
/// Every entry is `> stream` (spec §11.1); writers without an entry are at `stream`. The
/// representation is therefore canonical, and `==` is equality of positions.
///
/// Tokens are ordered componentwise ([`is_before_or_eq`](Self::is_before_or_eq), a partial
/// order) and [`copy_and_advance`](Self::copy_and_advance) is their join. The string form
/// is [`RawToken`]: convert with [`to_raw`](Self::to_raw) and [`RawToken::resolve`].
///
/// Values are in the external form of a forwards stream (spec §0); the async layer refuses
/// tokens for backwards streams.
///
/// # Examples
///
/// ```
/// use streamid_core::MultiWriterStreamToken;
///
/// # fn main() -> Result<(), streamid_core::TokenError> {
/// // Every writer is at >= 56; "a" at 58, "b" at 59.
/// let t = MultiWriterStreamToken::new(56, [("a", 58), ("b", 59)])?;
/// assert_eq!(t.pos_for_instance("a"), 58);
/// assert_eq!(t.pos_for_instance("c"), 56);
/// assert_eq!(t.max_stream_pos(), 59);
///
/// let u = MultiWriterStreamToken::new(57, [("c", 60)])?;
/// let joined = t.copy_and_advance(&u);
/// assert_eq!(joined, MultiWriterStreamToken::new(57, [("a", 58), ("b", 59), ("c", 60)])?);
/// assert!(t.is_before_or_eq(&joined) && u.is_before_or_eq(&joined));
/// assert!(!t.is_before_or_eq(&u) && !u.is_before_or_eq(&t)); // incomparable
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultiWriterStreamToken {
    /// Every writer is at least here.
    stream: i64,
    /// Writers strictly ahead of `stream`: every value is `> stream`.
    instance_map: BTreeMap<String, i64>,
}

impl MultiWriterStreamToken {
    /// A token from a stream position and `(instance name, position)` entries.
    ///
    /// # Errors
    ///
    /// [`TokenError`] if an entry is `<= stream`
    /// ([`EntryNotAhead`](TokenErrorKind::EntryNotAhead), naming the instance; spec §11.1)
    /// or an instance appears twice ([`DuplicateInstance`](TokenErrorKind::DuplicateInstance)).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::{MultiWriterStreamToken, TokenErrorKind};
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let t = MultiWriterStreamToken::new(56, [("a", 58)])?;
    /// assert_eq!(t.stream(), 56);
    ///
    /// let err = MultiWriterStreamToken::new(56, [("a", 58), ("b", 55)]).unwrap_err();
    /// assert_eq!(
    ///     err.kind(),
    ///     &TokenErrorKind::EntryNotAhead { instance: "b".to_owned(), position: 55, stream: 56 }
    /// );
    /// assert_eq!(err.to_string(), r#"invalid token: instance "b" at 55 is not ahead of stream 56"#);
    /// # Ok(())
    /// # }
    /// ```
    pub fn new<I, S>(stream: i64, entries: I) -> Result<MultiWriterStreamToken, TokenError>
    where
        I: IntoIterator<Item = (S, i64)>,
        S: Into<String>,
    {
        let mut instance_map = BTreeMap::new();
        for (instance, position) in entries {
            let instance = instance.into();
            if position <= stream {
                return Err(TokenError::new(TokenErrorKind::EntryNotAhead {
                    instance,
                    position,
                    stream,
                }));
            }
            if instance_map.contains_key(&instance) {
                return Err(TokenError::new(TokenErrorKind::DuplicateInstance {
                    instance,
                }));
            }
            instance_map.insert(instance, position);
        }
        Ok(MultiWriterStreamToken {
            stream,
            instance_map,
        })
    }

    /// A token without entries: every writer is at `stream`.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// let t = MultiWriterStreamToken::from_stream(56);
    /// assert_eq!(t.max_stream_pos(), 56);
    /// assert!(t.instance_map().is_empty());
    /// ```
    pub fn from_stream(stream: i64) -> MultiWriterStreamToken {
        MultiWriterStreamToken {
            stream,
            instance_map: BTreeMap::new(),
        }
    }

    /// The token of a tracker's current state (spec §11.3, the original's
    /// `from_generator`): `stream` is the persisted-up-to position, and every writer whose
    /// position is above it gets an entry. The own entry is the *minimal* local position,
    /// so the token records this process's last completed write, not its announced
    /// position. The result is always valid (I11).
    ///
    /// The caller reads the tracker under one lock acquisition, and refuses backwards
    /// streams (spec §9): the tracker works in internal (positive) form.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::{MultiWriterStreamToken, Tracker};
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// // "a" is at 10, "b" has announced 12: P = 10.
    /// let t = Tracker::new("a", ["a", "b"], [("a", 10), ("b", 12)], 10);
    /// let token = MultiWriterStreamToken::from_tracker(&t);
    /// assert_eq!(token, MultiWriterStreamToken::new(10, [("b", 12)])?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_tracker(tracker: &Tracker) -> MultiWriterStreamToken {
        let stream = tracker.persisted_upto();
        let instance_map = tracker
            .positions()
            .into_iter()
            .filter(|&(_, position)| position > stream)
            .collect();
        MultiWriterStreamToken {
            stream,
            instance_map,
        }
    }

    /// The position every writer has reached.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// assert_eq!(MultiWriterStreamToken::from_stream(56).stream(), 56);
    /// ```
    pub fn stream(&self) -> i64 {
        self.stream
    }

    /// The writers ahead of [`stream`](Self::stream) and their positions; every value is
    /// `> stream`.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let t = MultiWriterStreamToken::new(56, [("a", 58)])?;
    /// assert_eq!(t.instance_map().get("a"), Some(&58));
    /// # Ok(())
    /// # }
    /// ```
    pub fn instance_map(&self) -> &BTreeMap<String, i64> {
        &self.instance_map
    }

    /// The position of `instance`: its entry, or [`stream`](Self::stream) without one
    /// (the original's `get_stream_pos_for_instance`).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let t = MultiWriterStreamToken::new(56, [("a", 58)])?;
    /// assert_eq!(t.pos_for_instance("a"), 58);
    /// assert_eq!(t.pos_for_instance("z"), 56);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pos_for_instance(&self, instance: &str) -> i64 {
        self.instance_map
            .get(instance)
            .copied()
            .unwrap_or(self.stream)
    }

    /// The largest position in the token: the largest entry, or
    /// [`stream`](Self::stream) without entries (the original's `get_max_stream_pos`).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// assert_eq!(MultiWriterStreamToken::new(56, [("a", 58), ("b", 57)])?.max_stream_pos(), 58);
    /// assert_eq!(MultiWriterStreamToken::from_stream(56).max_stream_pos(), 56);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_stream_pos(&self) -> i64 {
        // Every entry is > stream, so the maximum over entries and stream is the same.
        self.instance_map
            .values()
            .copied()
            .fold(self.stream, i64::max)
    }

    /// The least token at or after both `self` and `other` (their join): `stream` is the
    /// larger of the two, every instance gets the larger of its two positions, and only
    /// entries ahead of the new `stream` are kept.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let a = MultiWriterStreamToken::new(10, [("x", 15), ("y", 11)])?;
    /// let b = MultiWriterStreamToken::new(12, [("x", 13)])?;
    /// // y's 11 is behind the new stream 12 and disappears.
    /// assert_eq!(a.copy_and_advance(&b), MultiWriterStreamToken::new(12, [("x", 15)])?);
    /// # Ok(())
    /// # }
    /// ```
    pub fn copy_and_advance(&self, other: &MultiWriterStreamToken) -> MultiWriterStreamToken {
        let stream = self.stream.max(other.stream);
        let mut instance_map = BTreeMap::new();
        for instance in self.instance_map.keys().chain(other.instance_map.keys()) {
            let position = self
                .pos_for_instance(instance)
                .max(other.pos_for_instance(instance));
            if position > stream && !instance_map.contains_key(instance) {
                instance_map.insert(instance.clone(), position);
            }
        }
        MultiWriterStreamToken {
            stream,
            instance_map,
        }
    }

    /// Whether `self` is at or before `other` for every writer: `self.stream <=
    /// other.stream` and `self.pos_for_instance(i) <= other.pos_for_instance(i)` for every
    /// instance `i`. A partial order: two tokens may be incomparable, so `!a.is_before_or_eq(b)`
    /// does not imply `b.is_before_or_eq(a)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let a = MultiWriterStreamToken::new(10, [("x", 15)])?;
    /// let b = MultiWriterStreamToken::new(12, [("x", 15), ("y", 13)])?;
    /// let c = MultiWriterStreamToken::from_stream(14);
    /// assert!(a.is_before_or_eq(&b));
    /// assert!(!b.is_before_or_eq(&a));
    /// assert!(!a.is_before_or_eq(&c) && !c.is_before_or_eq(&a)); // x: 15 > 14; stream: 14 > 10
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_before_or_eq(&self, other: &MultiWriterStreamToken) -> bool {
        // Instances only in `other`'s map need no check: there `self` is at
        // `self.stream <= other.stream < other`'s entry.
        self.stream <= other.stream
            && self
                .instance_map
                .iter()
                .all(|(instance, &position)| position <= other.pos_for_instance(instance))
    }

    /// The token capped at `max`, the largest position allocated so far (spec §12.5): if
    /// [`max_stream_pos`](Self::max_stream_pos) `<= max`, the token unchanged; else `stream`
    /// and every entry become at most `max`, and entries no longer ahead of `stream` are
    /// dropped. A reader waits for the bounded token instead of for a position that can
    /// never be reached (upstream #17274).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let t = MultiWriterStreamToken::new(10, [("x", 20), ("y", 12)])?;
    /// assert_eq!(t.bound_stream_token(25), t);
    /// assert_eq!(t.bound_stream_token(15), MultiWriterStreamToken::new(10, [("x", 15), ("y", 12)])?);
    /// assert_eq!(t.bound_stream_token(8), MultiWriterStreamToken::from_stream(8));
    /// # Ok(())
    /// # }
    /// ```
    pub fn bound_stream_token(&self, max: i64) -> MultiWriterStreamToken {
        if self.max_stream_pos() <= max {
            return self.clone();
        }
        let stream = self.stream.min(max);
        let instance_map = self
            .instance_map
            .iter()
            .map(|(instance, &position)| (instance.clone(), position.min(max)))
            .filter(|&(_, position)| position > stream)
            .collect();
        MultiWriterStreamToken {
            stream,
            instance_map,
        }
    }

    /// The reader's filter (spec §11.2): whether a row written by `instance` at `pos` lies in
    /// `(low, high]`, that is `pos > low.pos_for_instance(instance)` and
    /// `pos <= high.pos_for_instance(instance)`. A row without instance compares with
    /// `stream`; a missing bound is unbounded.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken as Token;
    ///
    /// # fn main() -> Result<(), streamid_core::TokenError> {
    /// let low = Token::new(10, [("x", 12)])?;
    /// let high = Token::new(14, [("y", 16)])?;
    /// assert!(Token::is_stream_position_in_range(Some(&low), Some(&high), Some("y"), 15));
    /// assert!(!Token::is_stream_position_in_range(Some(&low), Some(&high), Some("x"), 12));
    /// assert!(Token::is_stream_position_in_range(Some(&low), Some(&high), Some("x"), 13));
    /// assert!(!Token::is_stream_position_in_range(Some(&low), Some(&high), None, 15));
    /// assert!(Token::is_stream_position_in_range(Some(&low), None, None, 1_000));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_stream_position_in_range(
        low: Option<&MultiWriterStreamToken>,
        high: Option<&MultiWriterStreamToken>,
        instance: Option<&str>,
        pos: i64,
    ) -> bool {
        let bound = |token: &MultiWriterStreamToken| {
            instance.map_or(token.stream, |i| token.pos_for_instance(i))
        };
        low.is_none_or(|low| pos > bound(low)) && high.is_none_or(|high| pos <= bound(high))
    }
}
