//! One plugin call: a fresh `Store` with its limits (memory, fuel, epoch
//! deadline, log budget), instantiate from the `InstancePre`, call `score`,
//! and turn whatever went wrong into one clear sentence.

use super::imports::{Exited, Unprovided};
use super::wit::{self, Level, ScorerPre};
use crate::eval::PluginEffect;
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, Store, Trap};

/// At most this many log messages are kept per call...
pub const LOG_MAX_MESSAGES: usize = 64;
/// ...of at most this many bytes each (longer ones are cut)...
pub const LOG_MAX_MESSAGE_BYTES: usize = 1024;
/// ...and this many bytes in all. Past that, messages are counted and dropped.
pub const LOG_MAX_BYTES: usize = 16 * 1024;

/// Limits of one call, from the plugin's entry in the rules.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout: Duration,
}

/// Everything one call did: the developer's test bench prints all of it.
#[derive(Debug)]
pub struct Report {
    pub result: Result<Vec<PluginEffect>, String>,
    /// Fuel used (instantiation included). Deterministic for the same plugin,
    /// lead, event and config.
    pub fuel_used: u64,
    pub elapsed: Duration,
    /// The largest the plugin's linear memory got, in bytes.
    pub peak_memory: u64,
    pub logs: Vec<(Level, String)>,
    /// Log messages over the budget, not kept.
    pub logs_dropped: u64,
}

/// What a `Store` holds during a call.
pub struct CallState {
    memory_limit: usize,
    memory: usize,
    peak_memory: usize,
    memory_denied: Option<usize>,
    logs: Vec<(Level, String)>,
    log_bytes: usize,
    logs_dropped: u64,
    /// The line being written to stdout and to stderr (WASI, `imports.rs`).
    stdout_line: Vec<u8>,
    stderr_line: Vec<u8>,
    /// The last bytes written to stderr: where std's panic hook puts the
    /// panic message, the reason the call then traps.
    stderr_tail: Vec<u8>,
}

/// The output streams a plugin may write to; lines go to the call's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How much of stderr's end is kept for the panic message.
const STDERR_TAIL: usize = 2048;

impl CallState {
    fn new(memory_limit: usize) -> CallState {
        CallState {
            memory_limit,
            memory: 0,
            peak_memory: 0,
            memory_denied: None,
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
            stdout_line: Vec::new(),
            stderr_line: Vec::new(),
            stderr_tail: Vec::new(),
        }
    }

    /// Bytes a plugin wrote to stdout or stderr: each line becomes a log
    /// message (`info` for stdout, `error` for stderr), within the log's
    /// budget; a line longer than a message is cut.
    pub fn output(&mut self, stream: Stream, bytes: &[u8]) {
        if stream == Stream::Stderr {
            self.stderr_tail.extend_from_slice(bytes);
            let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
            self.stderr_tail.drain(..excess);
        }
        for &b in bytes {
            if b == b'\n' {
                self.flush_line(stream);
                continue;
            }
            let line = match stream {
                Stream::Stdout => &mut self.stdout_line,
                Stream::Stderr => &mut self.stderr_line,
            };
            if line.len() < LOG_MAX_MESSAGE_BYTES {
                line.push(b);
            }
        }
    }

    fn flush_line(&mut self, stream: Stream) {
        let (line, level, name) = match stream {
            Stream::Stdout => (std::mem::take(&mut self.stdout_line), Level::Info, "stdout"),
            Stream::Stderr => (
                std::mem::take(&mut self.stderr_line),
                Level::Error,
                "stderr",
            ),
        };
        if !line.is_empty() {
            let text = format!("{name}: {}", String::from_utf8_lossy(&line));
            wit::HostImports::log(self, level, text);
        }
    }

    /// The panic message std's own panic hook wrote to stderr, if it did:
    /// `panicked at src/lib.rs:9:9: the message`.
    fn std_panic(&self) -> Option<String> {
        let tail = String::from_utf8_lossy(&self.stderr_tail);
        let at = tail.rfind("panicked at ")?;
        let msg = tail[at..].split("\nnote: ").next().unwrap_or_default();
        Some(msg.trim().replace('\n', " "))
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory - current + desired;
        if total > self.memory_limit {
            self.memory_denied = Some(total);
            // A trap, not a failed `memory.grow`: the call ends here, with
            // this reason, instead of in an allocator's abort.
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        self.memory = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

impl wit::HostImports for CallState {
    fn log(&mut self, level: Level, message: String) {
        let message = wit::truncate(&message, LOG_MAX_MESSAGE_BYTES);
        if self.logs.len() >= LOG_MAX_MESSAGES || self.log_bytes + message.len() > LOG_MAX_BYTES {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += message.len();
        self.logs.push((level, message.to_string()));
    }
}

impl wit::TypesImports for CallState {}

/// Instantiates and calls a plugin once. `epoch_tick` is how often the
/// host's ticker advances the engine's epoch.
pub fn call(
    pre: &ScorerPre<CallState>,
    limits: Limits,
    epoch_tick: Duration,
    lead: &crate::model::LeadState,
    event: &crate::model::Event,
    config: &str,
) -> Report {
    let started = Instant::now();
    let state = CallState::new(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    let fuel_set = store.set_fuel(limits.fuel).is_ok();
    // Ticks are counted from now; one more covers the tick already under way.
    let ticks = limits
        .timeout
        .as_nanos()
        .div_ceil(epoch_tick.as_nanos().max(1)) as u64
        + 1;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();

    let json = wit::Json::new(lead, event);
    let (lead, event) = (wit::lead(lead, &json), wit::event(event, &json));
    let outcome = pre
        .instantiate(&mut store)
        .and_then(|scorer| scorer.call_score(&mut store, lead, event, config));
    let fuel_left = if fuel_set {
        store.get_fuel().unwrap_or(0)
    } else {
        0
    };
    let elapsed = started.elapsed();
    let mut state = store.into_data();
    // A last line without its newline is still the plugin's output.
    state.flush_line(Stream::Stdout);
    state.flush_line(Stream::Stderr);
    let result = match outcome {
        Ok(out) => wit::effects(out),
        Err(e) => Err(explain(&e, &state, limits, elapsed)),
    };
    Report {
        result,
        fuel_used: limits.fuel.saturating_sub(fuel_left),
        elapsed,
        peak_memory: state.peak_memory as u64,
        logs: state.logs,
        logs_dropped: state.logs_dropped,
    }
}

/// One sentence for what went wrong in wasmtime.
fn explain(e: &wasmtime::Error, state: &CallState, limits: Limits, elapsed: Duration) -> String {
    if let Some(total) = state.memory_denied {
        return format!(
            "memory limit exceeded: tried to grow to {} (limit {})",
            bytes(total as u64),
            bytes(limits.memory_bytes)
        );
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => format!("out of fuel (limit {})", limits.fuel),
            Trap::Interrupt => format!(
                "timed out after {} ms (limit {} ms)",
                elapsed.as_millis(),
                limits.timeout.as_millis()
            ),
            Trap::StackOverflow => "stack overflow (call stack exhausted)".to_string(),
            // Rust and C keep part of their stack in linear memory, placed
            // first: overflowing it runs off address 0 and lands here.
            Trap::MemoryOutOfBounds => "trapped: out of bounds memory access (or the plugin's own stack, in its memory, overflowed: docs/plugins.md)".to_string(),
            Trap::UnreachableCodeReached => {
                let panic = state
                    .logs
                    .iter()
                    .rev()
                    .find(|(_, m)| m.starts_with("plugin panicked"));
                match (panic, state.std_panic()) {
                    (Some((_, m)), _) => format!("trapped: {}", m.replace('\n', " ")),
                    // Without the SDK's hook, std's own wrote it to stderr.
                    (None, Some(m)) => format!("trapped: plugin panicked: {m}"),
                    (None, None) => {
                        "trapped: wasm `unreachable` executed (a panic or abort)".to_string()
                    }
                }
            }
            other => format!("trapped: {other}"),
        };
    }
    if let Some(u) = e.downcast_ref::<Unprovided>() {
        return u.to_string();
    }
    if let Some(x) = e.downcast_ref::<Exited>() {
        return x.to_string();
    }
    let msg = format!("{e:#}");
    format!("failed: {}", wit::truncate(&msg, 1024))
}

/// `16 MiB`, `640 KiB`, `12 B`.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{} KiB", n.div_ceil(1 << 10))
    } else {
        format!("{n} B")
    }
}
