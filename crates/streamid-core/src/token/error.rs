//! [`TokenError`], the core's invalid-token error (spec §2.4, §11).
//!
//! It owns nothing but a description of what was wrong: the offending input string (for
//! parse errors) and a [`TokenErrorKind`] naming the offending number, entry or instance.
//! Display never prints more than a bounded prefix of caller-supplied text, so a huge
//! hostile token cannot flood a log line.

use std::fmt;

/// At most this many characters of caller-supplied text appear in a `Display`ed error.
const SHOWN_CHARS: usize = 64;

/// A token could not be built, parsed or converted (the spec's *invalid token* error).
///
/// Raised by [`MultiWriterStreamToken::new`](crate::MultiWriterStreamToken::new),
/// [`RawToken::new`](crate::RawToken::new), parsing a [`RawToken`](crate::RawToken) and
/// the conversions between the two forms. [`kind`](Self::kind) says what was wrong;
/// [`input`](Self::input) is the string being parsed, if any.
///
/// `Display` is lowercase, without a final period: `invalid token "<input>": <detail>`,
/// or `invalid token: <detail>` when no string was involved.
///
/// # Examples
///
/// ```
/// use streamid_core::{RawToken, TokenErrorKind};
///
/// let err = "m5~x.7".parse::<RawToken>().unwrap_err();
/// assert_eq!(err.input(), Some("m5~x.7"));
/// assert_eq!(
///     err.kind(),
///     &TokenErrorKind::MalformedNumber { number: "x".to_owned() }
/// );
/// assert_eq!(err.to_string(), r#"invalid token "m5~x.7": malformed number "x""#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    /// The string being parsed; `None` for errors of construction or conversion.
    input: Option<String>,
    kind: TokenErrorKind,
}

/// What was wrong with a token; see [`TokenError`].
///
/// Variants carry the offending value. Instance ids appear in the string form and in
/// [`RawToken`](crate::RawToken); instance names in
/// [`MultiWriterStreamToken`](crate::MultiWriterStreamToken).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The string is empty.
    Empty,
    /// The string starts with neither an ASCII digit nor `m`.
    BadStart,
    /// A number is empty or holds something other than ASCII digits (signs, spaces,
    /// separators and non-ASCII digits included).
    MalformedNumber {
        /// The offending text.
        number: String,
    },
    /// A number does not fit its type: `i64` for positions, `i32` for instance ids.
    NumberOutOfRange {
        /// The offending digits.
        number: String,
    },
    /// An entry between `~` separators does not contain exactly one `.`.
    MalformedEntry {
        /// The offending entry.
        entry: String,
    },
    /// An instance name appears twice (construction, or two ids resolved to one name).
    DuplicateInstance {
        /// The repeated name.
        instance: String,
    },
    /// An instance id appears twice (parsing, or two names mapped to one id).
    DuplicateInstanceId {
        /// The repeated id.
        id: i32,
    },
    /// An entry is not strictly ahead of the token's `stream` (spec §11.1; upstream
    /// #17438).
    EntryNotAhead {
        /// The instance name.
        instance: String,
        /// Its position.
        position: i64,
        /// The token's `stream`.
        stream: i64,
    },
    /// An entry of a raw token is not strictly ahead of its `stream` (spec §11.5).
    IdEntryNotAhead {
        /// The instance id.
        id: i32,
        /// Its position.
        position: i64,
        /// The token's `stream`.
        stream: i64,
    },
    /// No instance id is known for this name (conversion to the string form).
    UnknownInstance {
        /// The name without an id.
        instance: String,
    },
    /// No instance name is known for this id (resolving a parsed token).
    UnknownInstanceId {
        /// The id without a name.
        id: i32,
    },
    /// The stream position is negative, which the string form cannot express.
    NegativeStream {
        /// The position.
        stream: i64,
    },
    /// The instance id is negative, which the string form cannot express.
    NegativeInstanceId {
        /// The id.
        id: i32,
    },
}

impl TokenError {
    /// An error of construction or conversion, with no input string.
    pub(crate) fn new(kind: TokenErrorKind) -> TokenError {
        TokenError { input: None, kind }
    }

    /// A parse error of `input`.
    pub(crate) fn parsing(input: &str, kind: TokenErrorKind) -> TokenError {
        TokenError {
            input: Some(input.to_owned()),
            kind,
        }
    }

    /// What was wrong.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::{RawToken, TokenErrorKind};
    ///
    /// let err = "".parse::<RawToken>().unwrap_err();
    /// assert_eq!(err.kind(), &TokenErrorKind::Empty);
    /// ```
    pub fn kind(&self) -> &TokenErrorKind {
        &self.kind
    }

    /// The string that failed to parse; `None` for errors of construction or conversion.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid_core::MultiWriterStreamToken;
    ///
    /// let err = MultiWriterStreamToken::new(5, [("a", 5)]).unwrap_err();
    /// assert_eq!(err.input(), None);
    /// ```
    pub fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.input {
            Some(input) => write!(f, "invalid token {}: {}", Shown(input), self.kind),
            None => write!(f, "invalid token: {}", self.kind),
        }
    }
}

impl std::error::Error for TokenError {}

impl fmt::Display for TokenErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenErrorKind::Empty => write!(f, "empty string"),
            TokenErrorKind::BadStart => write!(f, "must start with a digit or 'm'"),
            TokenErrorKind::MalformedNumber { number } => {
                write!(f, "malformed number {}", Shown(number))
            }
            TokenErrorKind::NumberOutOfRange { number } => {
                write!(f, "number {} out of range", Shown(number))
            }
            TokenErrorKind::MalformedEntry { entry } => {
                write!(f, "entry {} must be <instance id>.<position>", Shown(entry))
            }
            TokenErrorKind::DuplicateInstance { instance } => {
                write!(f, "instance {} appears twice", Shown(instance))
            }
            TokenErrorKind::DuplicateInstanceId { id } => {
                write!(f, "instance id {id} appears twice")
            }
            TokenErrorKind::EntryNotAhead {
                instance,
                position,
                stream,
            } => write!(
                f,
                "instance {} at {position} is not ahead of stream {stream}",
                Shown(instance)
            ),
            TokenErrorKind::IdEntryNotAhead {
                id,
                position,
                stream,
            } => write!(
                f,
                "instance id {id} at {position} is not ahead of stream {stream}"
            ),
            TokenErrorKind::UnknownInstance { instance } => {
                write!(f, "instance {} has no instance id", Shown(instance))
            }
            TokenErrorKind::UnknownInstanceId { id } => write!(f, "unknown instance id {id}"),
            TokenErrorKind::NegativeStream { stream } => {
                write!(f, "negative stream position {stream}")
            }
            TokenErrorKind::NegativeInstanceId { id } => write!(f, "negative instance id {id}"),
        }
    }
}

/// Caller-supplied text, quoted and escaped, cut after [`SHOWN_CHARS`] characters.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(
                f,
                "{:?}… ({} bytes)",
                &self.0[..cut], // `cut` is a char boundary
                self.0.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_cut_in_display() {
        let input = "é".repeat(1000);
        let err = TokenError::parsing(&input, TokenErrorKind::BadStart);
        let shown = err.to_string();
        assert!(shown.len() < 300, "{shown}");
        assert!(shown.contains("(2000 bytes)"), "{shown}");
        assert_eq!(err.input(), Some(input.as_str()));
    }

    #[test]
    fn messages_are_lowercase_without_final_period() {
        let err = TokenError::new(TokenErrorKind::UnknownInstanceId { id: 3 });
        assert_eq!(err.to_string(), "invalid token: unknown instance id 3");
    }
}
