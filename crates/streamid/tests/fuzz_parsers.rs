//! Structure-aware fuzzing of every parser that takes outside input (issue 5 item 7), with
//! proptest instead of cargo-fuzz (stable toolchain, no extra tooling): replication
//! messages (`Announcement::decode`), multi-writer tokens (`RawToken::from_str`),
//! configured identifiers (`StreamTable::new`, `StreamConfig::check`) and reader
//! observation logs (`read_observations`).
//!
//! Inputs are valid encodings put through random edits (character replacements, insertions,
//! deletions, truncations, splices) plus arbitrary strings, so most cases land near the
//! grammar where parser bugs live. Each property checks more than "no panic": whatever is
//! accepted must be well-formed and survive a round trip through its own encoding.
//! Cases per property: 4096, or `STREAMID_FUZZ_CASES` (RELIABILITY.md records a run with
//! 1,000,000).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use proptest::prelude::*;
use streamid::replication::Announcement;
use streamid::{Observation, StreamConfig, StreamTable, read_observations};
use streamid_core::RawToken;

/// Cases per property: `STREAMID_FUZZ_CASES`, default 4096.
fn fuzz_cases() -> u32 {
    std::env::var("STREAMID_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

/// Characters edits draw from: the syntax of all four formats, digits, signs, whitespace,
/// control and non-ASCII characters.
const ALPHABET: &[char] = &[
    '{',
    '}',
    '[',
    ']',
    '"',
    ':',
    ',',
    '.',
    '~',
    'm',
    's',
    '-',
    '+',
    'e',
    'E',
    '0',
    '1',
    '9',
    'a',
    'f',
    'x',
    '_',
    '$',
    ' ',
    '\n',
    '\t',
    '\\',
    '\0',
    'é',
    '✓',
    '\u{1F600}',
    'n',
    'u',
    'l',
    't',
    'r',
];

/// One random edit of a string.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
    Truncate(usize),
    /// Copies a range of the string to another position.
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let c = proptest::sample::select(ALPHABET);
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (any::<usize>(), c).prop_map(|(i, c)| Edit::Insert(i, c)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, b, c)| Edit::Splice(a, b, c)),
    ]
}

/// Applies `edits` to `text`, on character boundaries.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len();
        match *e {
            Edit::Replace(i, c) if n > 0 => chars[i % n] = c,
            Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
            Edit::Delete(i) if n > 0 => {
                chars.remove(i % n);
            }
            Edit::Truncate(i) => chars.truncate(i % (n + 1)),
            Edit::Splice(a, b, at) if n > 0 => {
                let (a, b) = (a % n, b % n);
                let piece: Vec<char> = chars[a.min(b)..=a.max(b)].to_vec();
                let at = at % (n + 1);
                chars.splice(at..at, piece);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9_-]{0,12}", ".{1,12}"]
}

fn announcement() -> impl Strategy<Value = Announcement> {
    (name(), name(), 1i64.., any::<u64>()).prop_map(|(stream, instance, position, epoch)| {
        Announcement {
            stream,
            instance,
            position,
            epoch,
        }
    })
}

fn token_text() -> impl Strategy<Value = String> {
    let entry = (0i32..50, 0i64..1000).prop_map(|(id, p)| format!("~{id}.{p}"));
    prop_oneof![
        (0i64..1000).prop_map(|s| s.to_string()),
        ((0i64..1000), proptest::collection::vec(entry, 0..4))
            .prop_map(|(s, entries)| format!("m{s}{}", entries.concat())),
    ]
}

fn observation() -> impl Strategy<Value = Observation> {
    (
        name(),
        any::<i64>(),
        proptest::collection::vec(any::<i64>(), 0..5),
        proptest::option::of(token_text()),
        proptest::collection::btree_map(name(), any::<i64>(), 0..3),
    )
        .prop_map(|(reader, position, seen, token, writers)| Observation {
            reader,
            position,
            seen,
            token,
            writers,
        })
}

/// Identifier-shaped strings with a few hostile characters mixed in.
fn identifier_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z_][A-Za-z0-9_$]{0,70}",
        "[A-Za-z_][A-Za-z0-9_$]{0,10}\\.[A-Za-z_][A-Za-z0-9_$]{0,10}",
        "[A-Za-z0-9_$.\"'; ()\\-\\\\\u{0}é]{0,20}",
        any::<String>(),
    ]
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    !s.is_empty()
        && s.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    #[test]
    fn announcements_survive_edits(a in announcement(), edits in proptest::collection::vec(edit(), 1..6)) {
        let text = mutate(&a.encode().unwrap(), &edits);
        if let Ok(decoded) = Announcement::decode(&text) {
            prop_assert!(decoded.position >= 1);
            prop_assert!(!decoded.stream.is_empty() && !decoded.instance.is_empty());
            let again = Announcement::decode(&decoded.encode().unwrap()).unwrap();
            prop_assert_eq!(again, decoded);
        }
    }

    #[test]
    fn tokens_survive_edits(text in token_text(), edits in proptest::collection::vec(edit(), 0..6)) {
        let text = mutate(&text, &edits);
        if let Ok(token) = text.parse::<RawToken>() {
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b"m~.".contains(&b)));
            let canonical = token.to_string();
            prop_assert_eq!(canonical.parse::<RawToken>().unwrap(), token);
        }
    }

    #[test]
    fn identifiers_are_accepted_only_when_safe(table in identifier_like(), column in identifier_like()) {
        let accepted = StreamTable::new(&table, &column, "id");
        let (schema, name) = table.split_once('.').map_or((None, table.as_str()), |(s, n)| (Some(s), n));
        let expected = schema.is_none_or(is_identifier) && is_identifier(name) && is_identifier(&column);
        prop_assert_eq!(accepted.is_ok(), expected, "{:?} / {:?}", table, column);
        if let Ok(t) = accepted {
            // Quoted forms are the names between double quotes, nothing to escape.
            prop_assert_eq!(t.quoted_instance_column(), format!("\"{column}\""));
            prop_assert_eq!(t.quoted_table().matches('"').count(), if schema.is_some() { 4 } else { 2 });
        }
        let config = StreamConfig::new(&table, &column).table(&table, &column, &column);
        let checked = config.check();
        prop_assert_eq!(
            checked.is_ok(),
            expected && !table.contains('\0') && !column.contains('\0')
        );
    }

    #[test]
    fn observation_logs_survive_edits(
        observations in proptest::collection::vec(observation(), 1..4),
        edits in proptest::collection::vec(edit(), 0..6),
    ) {
        let log: String = observations.iter().map(Observation::to_json_line).collect();
        let text = mutate(&log, &edits);
        if let Ok(parsed) = read_observations(text.as_bytes()) {
            // What was accepted writes back and reads again as itself.
            let again: String = parsed.iter().map(Observation::to_json_line).collect();
            prop_assert_eq!(read_observations(again.as_bytes()).unwrap(), parsed);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_parser(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Announcement::decode(&text);
        let _ = text.parse::<RawToken>();
        let _ = StreamTable::new(&text, &text, &text);
        let _ = read_observations(&bytes[..]);
    }
}

#[test]
fn unedited_encodings_parse() {
    let a = Announcement {
        stream: "s".into(),
        instance: "w".into(),
        position: 7,
        epoch: 3,
    };
    assert_eq!(Announcement::decode(&a.encode().unwrap()).unwrap(), a);
    assert_eq!(mutate("abc", &[]), "abc");
    assert_eq!(
        mutate("abc", &[Edit::Delete(1), Edit::Insert(0, 'x')]),
        "xac"
    );
    assert!("m5~1.7".parse::<RawToken>().is_ok());
}
