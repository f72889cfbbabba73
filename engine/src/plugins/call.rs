//! One plugin call: a fresh `Store` with its limits (memory, fuel, epoch
//! deadline, log budget), instantiate from the `InstancePre`, call `score`,
//! and turn whatever went wrong into one clear sentence.

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
    let state = CallState {
        memory_limit: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
        memory: 0,
        peak_memory: 0,
        memory_denied: None,
        logs: Vec::new(),
        log_bytes: 0,
        logs_dropped: 0,
    };
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
    let state = store.into_data();
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
                match panic {
                    Some((_, m)) => format!("trapped: {}", m.replace('\n', " ")),
                    None => "trapped: wasm `unreachable` executed (a panic or abort)".to_string(),
                }
            }
            other => format!("trapped: {other}"),
        };
    }
    let msg = format!("{e:#}");
    if let Some(rest) = msg.split("unknown import: `").nth(1) {
        let name = rest.split('`').next().unwrap_or(rest);
        return format!("called `{name}`, which Nurture does not provide to plugins");
    }
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
