//! Email: drip steps and sales notifications become real messages, sent once
//! each. `compose` renders them when the decision is made (pure), `token`
//! signs unsubscribe links, `transport` hands a message to an SMTP server or
//! the outbox folder, `sender` drives delivery from the durable outbox.

pub mod compose;
pub mod sender;
mod smtp;
pub mod token;
pub mod transport;

pub use compose::{ComposeError, Composer, Links, Outgoing};
pub use token::{Secret, TokenError, TokenKind};
pub use transport::Transport;
