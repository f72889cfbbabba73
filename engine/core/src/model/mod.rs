//! The data the engine reasons about: leads, events and the records a lead
//! accumulates (ledger, transitions, emails, assignments, enrollments).
//!
//! Plain data only: no rules, no I/O. Both the evaluator and every shell
//! (simulate, the daemon) share these types.

pub mod bounds;
mod cache;
mod event;
mod lead;
pub mod partition;
pub mod time;

pub use cache::ConditionCache;
pub use event::{Event, EventError, FeedbackStatus, BUILT_IN_TYPES, SUBSCRIBED, UNSUBSCRIBED};
pub use lead::{
    Assignment, Consent, Counts, EmailRecord, Enrollment, EnrollmentStatus, FeedbackRecord,
    History, LeadState, LedgerEntry, Memory, Stage, Transition,
};
