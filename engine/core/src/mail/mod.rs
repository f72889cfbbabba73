//! Email composition, pure: drip steps and sales notifications rendered from
//! the rules' templates when the decision is made (`compose`), and signed
//! unsubscribe links (`token`). Sending lives in the daemon (`nurture::email`).

pub mod compose;
pub mod token;

pub use compose::{ComposeError, Composer, Links, Outgoing};
pub use token::{Secret, TokenError, TokenKind};
