//! Property tests of multi-writer stream tokens (spec §11): the lattice laws of
//! `copy_and_advance` and `is_before_or_eq` (checked against literal readings of the spec),
//! bounding, the string form's round trip and grammar, tokens built from trackers, plus
//! named tests for every parse error and the spec's examples.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use streamid_core::testing::Sim;
use streamid_core::testing::strategy::{ops, sim_setup};
use streamid_core::{MultiWriterStreamToken as Token, RawToken, TokenErrorKind, Tracker};

// ----- strategies -----------------------------------------------------------------------

/// A position: mostly small (so tokens collide and compare), sometimes anything.
fn value() -> impl Strategy<Value = i64> {
    prop_oneof![6 => 0i64..24, 1 => any::<i64>(), 1 => Just(i64::MAX), 1 => Just(i64::MIN)]
}

/// An instance name from a small set, so maps overlap.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("d".to_owned()),
        Just("e".to_owned()),
    ]
}

/// `(stream, entries)` with every entry ahead of `stream` and distinct names.
fn parts(
    stream: impl Strategy<Value = i64>,
) -> impl Strategy<Value = (i64, BTreeMap<String, i64>)> {
    (stream, prop::collection::vec((name(), value()), 0..6)).prop_map(|(stream, entries)| {
        let map = entries.into_iter().filter(|&(_, p)| p > stream).collect();
        (stream, map)
    })
}

/// Any valid token, negative positions included.
fn token() -> impl Strategy<Value = Token> {
    parts(value()).prop_filter_map("valid by construction", |(s, m)| Token::new(s, m).ok())
}

/// A valid token the string form can express: `stream >= 0`.
fn expressible_token() -> impl Strategy<Value = Token> {
    parts(prop_oneof![4 => 0i64..24, 1 => 0..=i64::MAX])
        .prop_filter_map("valid by construction", |(s, m)| Token::new(s, m).ok())
}

/// Any valid raw token.
fn raw_token() -> impl Strategy<Value = RawToken> {
    let id = prop_oneof![4 => 0i32..8, 1 => 0..=i32::MAX];
    (
        prop_oneof![3 => 0i64..24, 1 => 0..=i64::MAX],
        prop::collection::vec((id, value()), 0..6),
    )
        .prop_filter_map("valid by construction", |(stream, entries)| {
            let map: BTreeMap<i32, i64> =
                entries.into_iter().filter(|&(_, p)| p > stream).collect();
            RawToken::new(stream, map).ok()
        })
}

/// The fixed name ↔ id mapping of the round-trip tests (ids not in name order).
const IDS: [(&str, i32); 5] = [("a", 7), ("b", 2), ("c", 40), ("d", 0), ("e", i32::MAX)];

fn id_of(name: &str) -> Option<i32> {
    IDS.iter().find(|(n, _)| *n == name).map(|&(_, id)| id)
}

fn name_of(id: i32) -> Option<String> {
    IDS.iter()
        .find(|&&(_, i)| i == id)
        .map(|(n, _)| (*n).to_owned())
}

/// Strings over the token alphabet, with junk mixed in.
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[m~.0-9]{0,24}",
        2 => "m[0-9]{0,3}(~[0-9]{0,3}\\.?[0-9]{0,3}){0,4}~?",
        1 => "[m~.0-9+\\- _,a-z\u{0660}-\u{0669}\u{ff10}-\u{ff19}é\u{0}]{0,24}",
        1 => "m?[0-9]{15,25}(~[0-9]{8,12}\\.[0-9]{15,25}){0,2}",
    ]
}

// ----- oracles: the spec's text, read literally -------------------------------------------

/// Every instance named in either token.
fn instances<'a>(a: &'a Token, b: &'a Token) -> BTreeSet<&'a str> {
    a.instance_map()
        .keys()
        .chain(b.instance_map().keys())
        .map(String::as_str)
        .collect()
}

/// Spec §11.2 `copy_and_advance`, literally.
fn join_model(a: &Token, b: &Token) -> Token {
    let s = a.stream().max(b.stream());
    let entries: Vec<(String, i64)> = instances(a, b)
        .into_iter()
        .map(|i| {
            (
                i.to_owned(),
                a.pos_for_instance(i).max(b.pos_for_instance(i)),
            )
        })
        .filter(|&(_, p)| p > s)
        .collect();
    Token::new(s, entries).unwrap_or_else(|e| panic!("join model built an invalid token: {e}"))
}

/// Spec §11.2 `is_before_or_eq`, literally.
fn le_model(a: &Token, b: &Token) -> bool {
    a.stream() <= b.stream()
        && instances(a, b)
            .into_iter()
            .all(|i| a.pos_for_instance(i) <= b.pos_for_instance(i))
}

/// A token is valid iff rebuilding it through the validating constructor succeeds
/// unchanged.
fn assert_valid(t: &Token) -> Result<(), TestCaseError> {
    let rebuilt = Token::new(t.stream(), t.instance_map().clone());
    prop_assert_eq!(rebuilt.as_ref(), Ok(t), "invalid token {:?}", t);
    Ok(())
}

/// A hand-written recogniser of the grammar of spec §11.5 (structure only, no ranges).
fn matches_grammar(s: &str) -> bool {
    fn number(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }
    if number(s) {
        return true;
    }
    let Some(rest) = s.strip_prefix('m') else {
        return false;
    };
    let mut parts = rest.split('~');
    number(parts.next().unwrap_or(""))
        && parts.all(|p| {
            p.is_empty()
                || matches!(p.split('.').collect::<Vec<_>>()[..], [i, q] if number(i) && number(q))
        })
}

// ----- the lattice ------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn join_matches_the_spec(a in token(), b in token()) {
        prop_assert_eq!(a.copy_and_advance(&b), join_model(&a, &b));
    }

    #[test]
    fn order_matches_the_spec(a in token(), b in token()) {
        prop_assert_eq!(a.is_before_or_eq(&b), le_model(&a, &b));
    }

    #[test]
    fn join_is_commutative(a in token(), b in token()) {
        prop_assert_eq!(a.copy_and_advance(&b), b.copy_and_advance(&a));
    }

    #[test]
    fn join_is_associative(a in token(), b in token(), c in token()) {
        prop_assert_eq!(
            a.copy_and_advance(&b).copy_and_advance(&c),
            a.copy_and_advance(&b.copy_and_advance(&c))
        );
    }

    #[test]
    fn join_is_idempotent(a in token()) {
        prop_assert_eq!(a.copy_and_advance(&a), a);
    }

    /// The join is valid, an upper bound of both, and the least one: any upper bound `c`
    /// of `a` and `b` is also above the join.
    #[test]
    fn join_is_the_least_upper_bound(a in token(), b in token(), c in token()) {
        let j = a.copy_and_advance(&b);
        assert_valid(&j)?;
        prop_assert!(a.is_before_or_eq(&j));
        prop_assert!(b.is_before_or_eq(&j));
        for i in instances(&a, &b) {
            prop_assert!(j.pos_for_instance(i) >= a.pos_for_instance(i).max(b.pos_for_instance(i)));
        }
        if a.is_before_or_eq(&c) && b.is_before_or_eq(&c) {
            prop_assert!(j.is_before_or_eq(&c));
        }
        // An upper bound built to exist: c joined with both.
        let above = c.copy_and_advance(&a).copy_and_advance(&b);
        prop_assert!(j.is_before_or_eq(&above));
    }

    #[test]
    fn order_is_reflexive(a in token()) {
        prop_assert!(a.is_before_or_eq(&a));
    }

    #[test]
    fn order_is_antisymmetric(a in token(), b in token()) {
        if a.is_before_or_eq(&b) && b.is_before_or_eq(&a) {
            prop_assert_eq!(&a, &b);
        }
        // Pairs that are ordered both ways by construction.
        let j = a.copy_and_advance(&b);
        let k = b.copy_and_advance(&a);
        prop_assert!(j.is_before_or_eq(&k) && k.is_before_or_eq(&j));
        prop_assert_eq!(j, k);
    }

    #[test]
    fn order_is_transitive(a in token(), b in token(), c in token(), x in token(), y in token()) {
        if a.is_before_or_eq(&b) && b.is_before_or_eq(&c) {
            prop_assert!(a.is_before_or_eq(&c));
        }
        // A chain built to exist: a <= a ⊔ x <= a ⊔ x ⊔ y.
        let ax = a.copy_and_advance(&x);
        let axy = ax.copy_and_advance(&y);
        prop_assert!(a.is_before_or_eq(&ax) && ax.is_before_or_eq(&axy));
        prop_assert!(a.is_before_or_eq(&axy));
    }

    /// `a <= b` iff `a ⊔ b == b`.
    #[test]
    fn order_is_consistent_with_join(a in token(), b in token()) {
        prop_assert_eq!(a.is_before_or_eq(&b), a.copy_and_advance(&b) == b);
        let j = a.copy_and_advance(&b);
        prop_assert_eq!(a.copy_and_advance(&j), j.clone());
    }

    #[test]
    fn max_stream_pos_bounds_every_position(a in token(), i in name()) {
        prop_assert!(a.stream() <= a.max_stream_pos());
        prop_assert!(a.pos_for_instance(&i) <= a.max_stream_pos());
        prop_assert!(a.pos_for_instance(&i) >= a.stream());
    }
}

// ----- bounding and the reader's filter ---------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Bounding yields a valid token at or below both the original and `max` everywhere,
    /// leaves tokens already within `max` alone, and is idempotent.
    #[test]
    fn bound_is_valid_and_below_max(a in token(), max in value(), i in name()) {
        let b = a.bound_stream_token(max);
        assert_valid(&b)?;
        prop_assert!(b.is_before_or_eq(&a));
        prop_assert_eq!(b.bound_stream_token(max), b.clone());
        if a.max_stream_pos() <= max {
            prop_assert_eq!(&b, &a);
        } else {
            prop_assert!(b.max_stream_pos() <= max);
            prop_assert!(b.stream() <= max);
            prop_assert_eq!(b.stream(), a.stream().min(max));
            prop_assert_eq!(b.pos_for_instance(&i), a.pos_for_instance(&i).min(max));
        }
    }

    /// Spec §11.2: a row is in `(low, high]` iff it is above `low`'s and at most `high`'s
    /// position for its instance; with no bounds everything is in range.
    #[test]
    fn range_filter_matches_the_spec(
        low in prop::option::of(token()),
        high in prop::option::of(token()),
        instance in prop::option::of(name()),
        pos in value(),
    ) {
        let at = |t: &Token| instance.as_deref().map_or(t.stream(), |i| t.pos_for_instance(i));
        let expected = low.as_ref().is_none_or(|l| pos > at(l))
            && high.as_ref().is_none_or(|h| pos <= at(h));
        prop_assert_eq!(
            Token::is_stream_position_in_range(low.as_ref(), high.as_ref(), instance.as_deref(), pos),
            expected
        );
        // Nothing lies in an empty interval (low, low].
        if let Some(low) = &low {
            prop_assert!(!Token::is_stream_position_in_range(Some(low), Some(low), instance.as_deref(), pos));
        }
    }
}

// ----- the string form --------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn raw_round_trips(raw in raw_token()) {
        let s = raw.to_string();
        prop_assert_eq!(s.parse::<RawToken>(), Ok(raw.clone()), "{}", s);
        prop_assert!(matches_grammar(&s), "{}", s);
        prop_assert_eq!(raw.entries().is_empty(), !s.starts_with('m'));
        // Entries in ascending id order.
        prop_assert!(raw.entries().windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn token_round_trips_through_names(t in expressible_token()) {
        let raw = t.to_raw(id_of).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let s = raw.to_string();
        let back = s.parse::<RawToken>().and_then(|r| r.resolve(name_of));
        prop_assert_eq!(back, Ok(t), "{}", s);
    }

    /// Any order of entries parses to the same token as ascending order.
    #[test]
    fn entry_order_does_not_matter(raw in raw_token(), seed in any::<u64>()) {
        let mut entries = raw.entries().to_vec();
        // Deterministic shuffle.
        let n = entries.len();
        for k in (1..n).rev() {
            let j = (seed.rotate_left(k as u32) % (k as u64 + 1)) as usize;
            entries.swap(k, j);
        }
        let s: String = std::iter::once(format!("m{}", raw.stream()))
            .chain(entries.iter().map(|(i, p)| format!("~{i}.{p}")))
            .collect();
        prop_assert_eq!(s.parse::<RawToken>(), Ok(raw));
    }

    /// Parsing never panics; what it accepts matches the grammar, is valid, and displays
    /// as a string that parses to the same value.
    #[test]
    fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
        check_parse(&s)?;
    }

    #[test]
    fn parse_never_panics_on_token_like_strings(s in token_like()) {
        check_parse(&s)?;
    }
}

fn check_parse(s: &str) -> Result<(), TestCaseError> {
    match s.parse::<RawToken>() {
        Ok(raw) => {
            prop_assert!(matches_grammar(s), "accepted outside the grammar: {:?}", s);
            prop_assert!(raw.stream() >= 0);
            prop_assert!(
                raw.entries()
                    .iter()
                    .all(|&(id, p)| id >= 0 && p > raw.stream())
            );
            let again = raw.to_string();
            prop_assert_eq!(again.parse::<RawToken>(), Ok(raw));
        }
        Err(e) => {
            prop_assert_eq!(e.input(), Some(s));
            let message = e.to_string();
            prop_assert!(message.starts_with("invalid token "), "{}", message);
            // Inputs inside the grammar fail only for range or semantic reasons.
            if matches_grammar(s) {
                prop_assert!(
                    matches!(
                        e.kind(),
                        TokenErrorKind::NumberOutOfRange { .. }
                            | TokenErrorKind::DuplicateInstanceId { .. }
                            | TokenErrorKind::IdEntryNotAhead { .. }
                    ),
                    "{:?} rejected: {}",
                    s,
                    message
                );
            }
        }
    }
    Ok(())
}

// ----- tokens from trackers ---------------------------------------------------------------

/// Checks `from_tracker` against the tracker it came from.
fn check_from_tracker(t: &Tracker) -> Result<Token, TestCaseError> {
    let token = Token::from_tracker(t);
    assert_valid(&token)?;
    prop_assert_eq!(token.stream(), t.persisted_upto());
    for (w, p) in t.positions() {
        prop_assert_eq!(token.pos_for_instance(&w), p.max(t.persisted_upto()));
    }
    prop_assert!(
        token
            .instance_map()
            .keys()
            .all(|w| t.positions().contains_key(w))
    );
    Ok(token)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every process's token is valid after every step of a multi-writer simulation, and a
    /// process's tokens never go backwards (spec I1, I11).
    #[test]
    fn from_tracker_is_valid_and_monotonic_in_a_simulation((writers, open) in sim_setup(), ops in ops(150)) {
        let mut sim = Sim::new(writers, open);
        let mut last: Vec<Token> = (0..writers)
            .map(|w| check_from_tracker(sim.tracker(w)))
            .collect::<Result<_, _>>()?;
        for op in &ops {
            sim.apply(op).map_err(TestCaseError::fail)?;
            for (w, before) in last.iter_mut().enumerate() {
                let now = check_from_tracker(sim.tracker(w))?;
                prop_assert!(before.is_before_or_eq(&now), "{:?} then {:?}", before, now);
                *before = now;
            }
        }
    }

    /// A reader hears arbitrary (truthful-looking) announcements, some below `P`.
    #[test]
    fn from_tracker_is_valid_after_advances(
        persisted in 1i64..20,
        advances in prop::collection::vec((name(), 1i64..40), 0..12),
    ) {
        let mut t = Tracker::new("r", ["a", "b", "c", "d", "e"], [("a", persisted)], persisted);
        let mut before = check_from_tracker(&t)?;
        for (w, p) in advances {
            t.advance(&w, p);
            let now = check_from_tracker(&t)?;
            prop_assert!(before.is_before_or_eq(&now));
            before = now;
        }
    }
}

// ----- named tests: spec examples ---------------------------------------------------------

fn parse(s: &str) -> Result<RawToken, TokenErrorKind> {
    s.parse::<RawToken>().map_err(|e| e.kind().clone())
}

#[test]
fn spec_11_4_examples() {
    let plain = parse("56").unwrap();
    assert_eq!((plain.stream(), plain.entries()), (56, &[][..]));
    assert_eq!(plain.to_string(), "56");

    let multi = parse("m56~2.58~3.59").unwrap();
    assert_eq!(multi.stream(), 56);
    assert_eq!(multi.entries(), &[(2, 58), (3, 59)]);
    assert_eq!(multi.to_string(), "m56~2.58~3.59");

    // Any order parses; ascending id order is written.
    assert_eq!(parse("m56~3.59~2.58").unwrap(), multi);

    // Through names.
    let token = multi.resolve(|id| Some(format!("worker{id}"))).unwrap();
    assert_eq!(
        token,
        Token::new(56, [("worker2", 58), ("worker3", 59)]).unwrap()
    );
    let back = token
        .to_raw(|name| name.strip_prefix("worker")?.parse().ok())
        .unwrap();
    assert_eq!(back.to_string(), "m56~2.58~3.59");
}

/// An old bug of the original produced `m5~`; it parses as `5` (spec §11.5).
#[test]
fn trailing_and_empty_tilde_parts_are_skipped() {
    assert_eq!(parse("m5~").unwrap(), RawToken::from_stream(5).unwrap());
    assert_eq!(parse("m5~").unwrap().to_string(), "5");
    assert_eq!(parse("m5").unwrap().to_string(), "5");
    assert_eq!(parse("m5~~").unwrap().to_string(), "5");
    assert_eq!(parse("m5~~1.6~~2.7~").unwrap().to_string(), "m5~1.6~2.7");
}

#[test]
fn extremes_parse() {
    assert_eq!(parse("0").unwrap().stream(), 0);
    assert_eq!(parse("007").unwrap().stream(), 7);
    assert_eq!(parse("9223372036854775807").unwrap().stream(), i64::MAX);
    let raw = parse("m0~0.1~2147483647.9223372036854775807").unwrap();
    assert_eq!(raw.entries(), &[(0, 1), (i32::MAX, i64::MAX)]);
}

/// Upstream #17438 (https://github.com/element-hq/synapse/issues/17438): tokens with
/// entries at or below `stream` were serialised and left sync stuck. They are rejected
/// at construction and parsing, and every operation filters them out.
#[test]
fn synapse_17438_entries_not_ahead_of_stream() {
    // Construction names the instance.
    let err = Token::new(5, [("a", 7), ("b", 5)]).unwrap_err();
    assert_eq!(
        err.kind(),
        &TokenErrorKind::EntryNotAhead {
            instance: "b".to_owned(),
            position: 5,
            stream: 5
        }
    );
    assert!(err.to_string().contains("\"b\""), "{err}");
    assert!(Token::new(5, [("a", 4)]).is_err());

    // Parsing.
    assert_eq!(
        parse("m5~1.5"),
        Err(TokenErrorKind::IdEntryNotAhead {
            id: 1,
            position: 5,
            stream: 5
        })
    );
    assert_eq!(
        parse("m5~1.7~2.3"),
        Err(TokenErrorKind::IdEntryNotAhead {
            id: 2,
            position: 3,
            stream: 5
        })
    );
    assert!(RawToken::new(5, [(1, 5)]).is_err());

    // Operations filter: the join drops entries behind the new stream...
    let a = Token::new(5, [("a", 7)]).unwrap();
    let b = Token::new(8, [("b", 9)]).unwrap();
    assert_eq!(a.copy_and_advance(&b), b);
    // ...bounding drops entries capped to the stream...
    let c = Token::new(5, [("a", 7), ("b", 9)]).unwrap();
    assert_eq!(c.bound_stream_token(5), Token::from_stream(5));
    // ...and from_tracker drops writers at or below P.
    let t = Tracker::new("a", ["a", "b", "c"], [("a", 10), ("b", 10), ("c", 12)], 10);
    assert_eq!(
        Token::from_tracker(&t),
        Token::new(10, [("c", 12)]).unwrap()
    );
}

/// Upstream #17274 (https://github.com/element-hq/synapse/issues/17274): a token from the
/// future is bounded by the largest allocated position instead of waited for forever.
#[test]
fn synapse_17274_bound_future_token() {
    let t = Token::new(100, [("a", 150)]).unwrap();
    assert_eq!(
        t.bound_stream_token(120),
        Token::new(100, [("a", 120)]).unwrap()
    );
    assert_eq!(t.bound_stream_token(90), Token::from_stream(90));
    assert_eq!(t.bound_stream_token(150), t);
}

// ----- named tests: every grammar error (spec §11.5) --------------------------------------

#[test]
fn error_empty_input() {
    let err = "".parse::<RawToken>().unwrap_err();
    assert_eq!(err.kind(), &TokenErrorKind::Empty);
    assert_eq!(err.input(), Some(""));
    assert_eq!(err.to_string(), r#"invalid token "": empty string"#);
}

#[test]
fn error_bad_first_character() {
    for s in [
        "s56", "t1-2", "M5", " 5", "+5", "-5", "~5", ".5", "é", "\u{0}",
    ] {
        assert_eq!(parse(s), Err(TokenErrorKind::BadStart), "{s:?}");
    }
}

#[test]
fn error_malformed_number() {
    let malformed = |n: &str| {
        Err(TokenErrorKind::MalformedNumber {
            number: n.to_owned(),
        })
    };
    // The whole of a plain token is one number.
    assert_eq!(parse("5 "), malformed("5 "));
    assert_eq!(parse("5~1.6"), malformed("5~1.6"));
    assert_eq!(parse("1_000"), malformed("1_000"));
    assert_eq!(parse("5m"), malformed("5m"));
    // The stream of an m-token.
    assert_eq!(parse("m"), malformed(""));
    assert_eq!(parse("m~1.2"), malformed(""));
    assert_eq!(parse("m+5"), malformed("+5"));
    assert_eq!(parse("m-5~1.2"), malformed("-5"));
    assert_eq!(parse("m 5"), malformed(" 5"));
    assert_eq!(parse("m٥"), malformed("٥")); // Arabic-Indic digit five
    // Instance ids and positions.
    assert_eq!(parse("m5~.6"), malformed(""));
    assert_eq!(parse("m5~1."), malformed(""));
    assert_eq!(parse("m5~x.6"), malformed("x"));
    assert_eq!(parse("m5~1.+6"), malformed("+6"));
    assert_eq!(parse("m5~-1.6"), malformed("-1"));
    assert_eq!(parse("m5~1.6 "), malformed("6 "));
}

#[test]
fn error_number_out_of_range() {
    let range = |n: &str| {
        Err(TokenErrorKind::NumberOutOfRange {
            number: n.to_owned(),
        })
    };
    assert_eq!(parse("9223372036854775808"), range("9223372036854775808"));
    assert_eq!(parse("m9223372036854775808"), range("9223372036854775808"));
    assert_eq!(
        parse("m5~1.9223372036854775808"),
        range("9223372036854775808")
    );
    // Instance ids must fit the 32-bit `instance_id` column.
    assert_eq!(parse("m5~2147483648.6"), range("2147483648"));
    assert_eq!(
        parse("m5~99999999999999999999.6"),
        range("99999999999999999999")
    );
}

#[test]
fn error_entry_without_exactly_one_dot() {
    let entry = |e: &str| {
        Err(TokenErrorKind::MalformedEntry {
            entry: e.to_owned(),
        })
    };
    assert_eq!(parse("m5~6"), entry("6"));
    assert_eq!(parse("m5~1.6.7"), entry("1.6.7"));
    assert_eq!(parse("m5~1..6"), entry("1..6"));
    assert_eq!(parse("m5~1.6~2"), entry("2"));
}

#[test]
fn error_duplicate_instance_id() {
    assert_eq!(
        parse("m5~1.6~1.7"),
        Err(TokenErrorKind::DuplicateInstanceId { id: 1 })
    );
    assert_eq!(
        parse("m5~01.6~1.7"),
        Err(TokenErrorKind::DuplicateInstanceId { id: 1 })
    );
}

#[test]
fn error_entry_not_ahead_of_stream() {
    assert_eq!(
        parse("m5~1.4"),
        Err(TokenErrorKind::IdEntryNotAhead {
            id: 1,
            position: 4,
            stream: 5
        })
    );
}

#[test]
fn error_unknown_instance_id() {
    let raw = parse("m5~1.6~9.7").unwrap();
    let err = raw
        .resolve(|id| (id == 1).then(|| "a".to_owned()))
        .unwrap_err();
    assert_eq!(err.kind(), &TokenErrorKind::UnknownInstanceId { id: 9 });
    assert_eq!(err.to_string(), "invalid token: unknown instance id 9");
}

#[test]
fn error_two_ids_resolve_to_one_name() {
    let raw = parse("m5~1.6~2.7").unwrap();
    let err = raw.resolve(|_| Some("a".to_owned())).unwrap_err();
    assert_eq!(
        err.kind(),
        &TokenErrorKind::DuplicateInstance {
            instance: "a".to_owned()
        }
    );
}

#[test]
fn to_raw_errors() {
    let t = Token::new(5, [("a", 6), ("b", 7)]).unwrap();
    assert_eq!(
        t.to_raw(|n| (n == "a").then_some(1)).unwrap_err().kind(),
        &TokenErrorKind::UnknownInstance {
            instance: "b".to_owned()
        }
    );
    assert_eq!(
        t.to_raw(|_| Some(1)).unwrap_err().kind(),
        &TokenErrorKind::DuplicateInstanceId { id: 1 }
    );
    assert_eq!(
        t.to_raw(|_| Some(-1)).unwrap_err().kind(),
        &TokenErrorKind::NegativeInstanceId { id: -1 }
    );
    assert_eq!(
        Token::from_stream(-3).to_raw(|_| None).unwrap_err().kind(),
        &TokenErrorKind::NegativeStream { stream: -3 }
    );
}

#[test]
fn duplicate_instance_name_is_rejected() {
    let err = Token::new(5, [("a", 6), ("a", 7)]).unwrap_err();
    assert_eq!(
        err.kind(),
        &TokenErrorKind::DuplicateInstance {
            instance: "a".to_owned()
        }
    );
}

#[test]
fn error_is_a_std_error() {
    fn takes(_: &dyn std::error::Error) {}
    let err = "x".parse::<RawToken>().unwrap_err();
    takes(&err);
    assert_eq!(
        err.to_string(),
        r#"invalid token "x": must start with a digit or 'm'"#
    );
}
