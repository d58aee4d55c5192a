//! Deterministic; performs no I/O; reads no clock.
//!
//! `streamid-core` holds every decision streamid makes about stream positions, as pure
//! synchronous state machines that the async crate (`streamid`) drives:
//!
//! - [`Tracker`]: one process's view of a stream — its own unfinished and in-flight IDs,
//!   every writer's position and the persisted-up-to position `P` below which every ID is
//!   decided (committed or rolled back). The algorithms are those of the behaviour
//!   specification (`spec/behaviour.md` §3–§6), with `O(log n)` cost per operation.
//! - [`Startup`]: turns what startup read from the database (recorded positions, the
//!   writer's starting position, table rows) into a [`Tracker`] (spec §4.2 steps 9–14,
//!   §4.5).
//! - [`MultiWriterStreamToken`]: a vector-clock position readers carry (spec §11): every
//!   writer is at least at its `stream`, some are further ahead. Built from a tracker with
//!   [`MultiWriterStreamToken::from_tracker`], compared with `is_before_or_eq`, joined with
//!   `copy_and_advance`. Its string form (`56`, `m56~2.58~3.59`) is a [`RawToken`], which
//!   names writers by numeric instance id; the caller supplies the name ↔ id lookups (the
//!   `instance_map` table), so this crate still does no I/O. Errors are [`TokenError`]s.
//!
//! Everything here works on *internal* values: positive IDs, whatever the direction of the
//! stream. The async layer multiplies by the stream's sign at the API boundary.
//!
//! # Example
//!
//! ```
//! use streamid_core::Tracker;
//!
//! // One writer "w" whose stream is at 7.
//! let mut t = Tracker::new("w", ["w"], [("w", 7)], 7);
//!
//! // Allocate 8 and 9 (the async layer would ask the database sequence).
//! let ticket = t.begin_fetch();
//! t.register(ticket, &[8, 9]).unwrap();
//!
//! // 9 commits first: nothing below it is decided yet, so P stays at 7.
//! t.finish(&[9]);
//! assert_eq!(t.persisted_upto(), 7);
//!
//! // 8 commits: everything up to 9 is decided.
//! t.finish(&[8]);
//! assert_eq!(t.persisted_upto(), 9);
//! ```
#![doc(test(attr(deny(warnings))))]

mod startup;
mod token;
mod tracker;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use startup::Startup;
pub use token::{MultiWriterStreamToken, RawToken, TokenError, TokenErrorKind};
pub use tracker::{Advance, Changes, FetchTicket, Finish, RegisterError, Tracker};
