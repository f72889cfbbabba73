//! `leftovers` with a 1 MiB static buffer: the plugin starts with more than
//! 1 MiB of memory, so the host resets memory by asking the kernel which
//! pages a call touched (engine/src/plugins/mod.rs). See `leftovers`.

const BUFFER_BYTES: usize = 1 << 20;

include!("../../leftovers/src/check.rs");
