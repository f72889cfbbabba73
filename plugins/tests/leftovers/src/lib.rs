//! Hostile plugin: looks for anything an earlier call left in its memory.
//!
//! Every call must see a fresh instance. So each call first checks that its
//! statics (a counter and `BUFFER`) are as new and that memory it grows
//! arrives zeroed, then dirties all of it. If the host ever handed a call
//! memory an earlier call had used, the call fails and says what it found.
//!
//! `BUFFER` is small here (the plugin starts with one 64 KiB page, and the
//! host resets memory with memset); `leftovers-large` is the same code with
//! a 1 MiB buffer (the host then resets memory with the kernel's help).

const BUFFER_BYTES: usize = 16 << 10;

include!("check.rs");
