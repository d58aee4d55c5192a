//! The observation log: what readers acted on, as JSON Lines (one JSON object per line).
//!
//! Each reader appends one [`Observation`] per round, in order, and flushes it, so a log cut
//! short by a killed process loses at most its unfinished last line (which
//! [`read_observations`] skips). Several readers may share a file, or each have their own.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One round of one reader: "I acted on position `position`, and had by then read every row
/// I list in `seen`, here and in my earlier observations".
///
/// On the wire it is one JSON object on one line, e.g.
///
/// ```text
/// {"reader":"reader-1","position":57,"seen":[52,55,57]}
/// {"reader":"reader-1+tokens","position":57,"seen":[60],"token":"m57~3.60","writers":{"writer-b":60}}
/// ```
///
/// - `reader`: a name unique per reader; its observations are taken in file order.
/// - `position`: the persisted-up-to position `P` the reader read up to in this round (read
///   *before* the query). Every row with `id <= P` (backwards streams: `id >= P`) must have
///   been read by now, in this round or an earlier one.
/// - `seen`: the IDs read in this round, ascending. Each is covered by this observation:
///   `id <= P`, or a `writers` entry covers it.
/// - `token` (optional): the multi-writer token's string form, for the record.
/// - `writers` (optional): the token's writers that are ahead of `P` and their positions. A
///   row written by such a writer is covered when its ID is at or below that writer's
///   position, so token readers are audited against everything their token promised.
///
/// Unknown keys are ignored, so a log may carry extra fields (timestamps, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The reader's name.
    pub reader: String,
    /// The persisted-up-to position acted on (API form: negative on backwards streams).
    pub position: i64,
    /// The IDs read in this round, ascending.
    #[serde(default)]
    pub seen: Vec<i64>,
    /// The token's string form, if the reader tails with multi-writer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Writers ahead of `position` in the token, with their positions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub writers: BTreeMap<String, i64>,
}

impl Observation {
    /// A plain (non-token) observation.
    pub fn new(reader: impl Into<String>, position: i64, seen: Vec<i64>) -> Observation {
        Observation {
            reader: reader.into(),
            position,
            seen,
            token: None,
            writers: BTreeMap::new(),
        }
    }

    /// The observation as one line of JSON, with the final newline.
    pub fn to_json_line(&self) -> String {
        // Serialising plain strings, integers and maps cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Reads an observation log (JSON Lines). Blank lines are skipped; so is an unparsable last
/// line without a final newline (a writer killed mid-line), with a warning.
///
/// # Errors
///
/// [`Error::InvalidObservation`] with the 1-based line number for any other line that is not
/// an [`Observation`]; [`Error::Io`] if reading fails.
///
/// # Examples
///
/// ```
/// let log = "{\"reader\":\"r\",\"position\":3,\"seen\":[2,3]}\n{\"reader\":\"r\",\"posi";
/// let observations = streamid::read_observations(log.as_bytes())?;
/// assert_eq!(observations.len(), 1);
/// assert_eq!(observations[0].seen, [2, 3]);
/// # Ok::<(), streamid::Error>(())
/// ```
pub fn read_observations(mut input: impl BufRead) -> Result<Vec<Observation>, Error> {
    let mut observations = Vec::new();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = input.read_line(&mut line).map_err(|source| Error::Io {
            operation: "read the observations",
            path: "(input)".to_owned(),
            source,
        })?;
        if read == 0 {
            return Ok(observations);
        }
        number += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Observation>(text) {
            Ok(observation) => observations.push(observation),
            Err(e) if !line.ends_with('\n') => {
                tracing::warn!(line = number, error = %e, "skipped an unfinished last observation line");
            }
            Err(e) => {
                return Err(Error::InvalidObservation {
                    line: number,
                    problem: e.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let mut token = Observation::new("r+tokens", 57, vec![60]);
        token.token = Some("m57~3.60".to_owned());
        token.writers.insert("b".to_owned(), 60);
        let plain = Observation::new("r", 57, vec![52, 55]);
        let log = format!("{}\n{}", plain.to_json_line(), token.to_json_line());
        assert_eq!(
            plain.to_json_line(),
            "{\"reader\":\"r\",\"position\":57,\"seen\":[52,55]}\n"
        );
        let read = read_observations(log.as_bytes()).unwrap();
        assert_eq!(read, [plain, token]);
    }

    #[test]
    fn missing_seen_and_extra_keys_are_accepted() {
        let read =
            read_observations(&b"{\"reader\":\"r\",\"position\":-4,\"at\":\"now\"}\n"[..]).unwrap();
        assert_eq!(read, [Observation::new("r", -4, vec![])]);
    }

    #[test]
    fn a_bad_line_is_an_error_unless_it_is_an_unfinished_last_line() {
        let bad = b"{\"reader\":\"r\",\"position\":1}\n{\"reader\":\"r\"}\n{\"reader\":\"r\",\"position\":2}\n";
        match read_observations(&bad[..]) {
            Err(Error::InvalidObservation { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected line 2 to be rejected, got {other:?}"),
        }
        let cut = b"{\"reader\":\"r\",\"position\":1}\n{\"reader\":\"r\",\"pos";
        assert_eq!(read_observations(&cut[..]).unwrap().len(), 1);
        let cut_with_newline = b"{\"reader\":\"r\",\"position\":1}\n{\"reader\":\"r\",\"pos\n";
        assert!(read_observations(&cut_with_newline[..]).is_err());
    }
}
