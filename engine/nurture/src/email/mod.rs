//! Email: drip steps and sales notifications become real messages, sent once
//! each. Messages are composed in the core (`nurture_core::mail`, pure, when
//! the decision is made); here `transport` hands a message to an SMTP server
//! or the outbox folder, and `sender` drives delivery from the durable outbox.

pub mod sender;
mod smtp;
pub mod transport;

pub use nurture_core::mail::{compose, token};
pub use nurture_core::mail::{
    ComposeError, Composer, Links, Outgoing, Secret, TokenError, TokenKind,
};
pub use transport::Transport;
