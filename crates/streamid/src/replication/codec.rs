//! The announcement wire format: one JSON object per message, readable with any pub/sub
//! client (`redis-cli SUBSCRIBE`, `LISTEN` in psql), e.g.
//! `{"v":1,"stream":"events","instance":"writer-1","position":42,"epoch":"9f2c…"}`.
//!
//! Decoding never panics and rejects anything that is not exactly this shape; the driver
//! logs and drops what it rejects (a malformed message is never fatal).

use serde::{Deserialize, Serialize};

/// The format version written and accepted.
const VERSION: u32 = 1;

/// NOTIFY payloads are limited to 8000 bytes; longer names are refused at encoding.
pub(crate) const MAX_MESSAGE_BYTES: usize = 7900;

/// A writer's announced position (spec §12.1): the position is in internal (positive) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The stream.
    pub stream: String,
    /// The writer whose position this is.
    pub instance: String,
    /// Its announced position, internal form (positive; backwards streams negate at the API).
    pub position: i64,
    /// The writer's registration epoch (`stream_writers.epoch` on PostgreSQL; 0 where
    /// there is none): receivers drop announcements of an epoch older than one they heard.
    pub epoch: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    v: u32,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    instance: std::borrow::Cow<'a, str>,
    position: i64,
    /// Hex: JSON numbers above 2^53 lose precision in many readers.
    #[serde(borrow)]
    epoch: std::borrow::Cow<'a, str>,
}

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed announcement: {0}")]
pub struct DecodeError(String);

impl Announcement {
    /// The wire form; `None` if it would exceed what every transport can carry.
    pub fn encode(&self) -> Option<String> {
        let text = serde_json::to_string(&Wire {
            v: VERSION,
            stream: self.stream.as_str().into(),
            instance: self.instance.as_str().into(),
            position: self.position,
            epoch: format!("{:016x}", self.epoch).into(),
        })
        .ok()?;
        (text.len() <= MAX_MESSAGE_BYTES).then_some(text)
    }

    /// Parses the wire form.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for anything but a version-1 announcement with a non-empty stream and
    /// instance, a position `>= 1` and a hexadecimal epoch.
    pub fn decode(text: &str) -> Result<Announcement, DecodeError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError(format!("{} bytes is too long", text.len())));
        }
        let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))?;
        if wire.v != VERSION {
            return Err(DecodeError(format!("unsupported version {}", wire.v)));
        }
        if wire.stream.is_empty() || wire.instance.is_empty() {
            return Err(DecodeError("empty stream or instance".to_owned()));
        }
        if wire.position < 1 {
            return Err(DecodeError(format!(
                "position {} is not positive",
                wire.position
            )));
        }
        let epoch = u64::from_str_radix(&wire.epoch, 16)
            .map_err(|_| DecodeError(format!("epoch {:?} is not hexadecimal", wire.epoch)))?;
        Ok(Announcement {
            stream: wire.stream.into_owned(),
            instance: wire.instance.into_owned(),
            position: wire.position,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_rejections() {
        let a = Announcement {
            stream: "ev\"ents".into(),
            instance: "w-1 ✓".into(),
            position: 42,
            epoch: u64::MAX,
        };
        let text = a.encode().unwrap();
        assert_eq!(Announcement::decode(&text).unwrap(), a);
        for bad in [
            "",
            "{}",
            "null",
            "[1]",
            r#"{"v":2,"stream":"s","instance":"i","position":1,"epoch":"0"}"#,
            r#"{"v":1,"stream":"","instance":"i","position":1,"epoch":"0"}"#,
            r#"{"v":1,"stream":"s","instance":"i","position":0,"epoch":"0"}"#,
            r#"{"v":1,"stream":"s","instance":"i","position":-5,"epoch":"0"}"#,
            r#"{"v":1,"stream":"s","instance":"i","position":1,"epoch":"xyz"}"#,
            r#"{"v":1,"stream":"s","instance":"i","position":1.5,"epoch":"0"}"#,
            r#"{"v":1,"stream":"s","instance":"i","position":1,"epoch":"0","extra":1}"#,
            r#"{"v":1,"stream":"s","instance":"i","position":99999999999999999999,"epoch":"0"}"#,
        ] {
            assert!(Announcement::decode(bad).is_err(), "{bad:?} was accepted");
        }
        let long = Announcement {
            stream: "s".repeat(8000),
            ..a
        };
        assert_eq!(long.encode(), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(text in ".{0,300}") {
            let _ = Announcement::decode(&text);
        }

        #[test]
        fn decode_never_panics_on_near_misses(
            v in 0u32..3, stream in ".{0,20}", instance in ".{0,20}",
            position in any::<i64>(), epoch in "[0-9a-fA-Fxz]{0,20}", junk in ".{0,5}",
        ) {
            let text = format!(
                r#"{{"v":{v},"stream":{},"instance":{},"position":{position},"epoch":"{epoch}"}}{junk}"#,
                serde_json::to_string(&stream).unwrap(),
                serde_json::to_string(&instance).unwrap(),
            );
            if let Ok(a) = Announcement::decode(&text) {
                prop_assert!(a.position >= 1 && !a.stream.is_empty() && !a.instance.is_empty());
            }
        }

        #[test]
        fn encode_decode_round_trip(
            stream in ".{1,40}", instance in ".{1,40}", position in 1i64.., epoch in any::<u64>(),
        ) {
            let a = Announcement { stream, instance, position, epoch };
            let text = a.encode().unwrap();
            prop_assert_eq!(Announcement::decode(&text).unwrap(), a);
        }
    }
}
