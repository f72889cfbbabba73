//! The `nurture` binary: everything is in the library (`nurture::cli`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

fn main() -> std::process::ExitCode {
    nurture::cli::main()
}
