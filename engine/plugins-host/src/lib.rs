//! The WASM plugin host (SPEC section 5): runs scoring plugins, WebAssembly
//! components built against `plugins/wit/plugin.wit`, for the evaluator's
//! step 4 through [`eval::PluginHost`](crate::eval::PluginHost).
//!
//! One [`Host`] per loaded ruleset: one wasmtime `Engine` (Cranelift, fuel,
//! epoch interruption, pooling allocator), each plugin compiled once (and
//! cached on disk, `cache.rs`) and linked once into an `InstancePre`. Every
//! call gets a fresh `Store` with the plugin's limits (`call.rs`), so no
//! state survives from one call to the next. A plugin that fails
//! [`FAILURES_BEFORE_OFF`] times in a row is switched off until the rules are
//! loaded again (a new `Host`).
//!
//! Calls are synchronous and may take up to the plugin's timeout: an async
//! shell must make them off its runtime's worker threads (`spawn_blocking`).
//! Fuel makes results deterministic; only a timeout depends on the machine.
//!
//! Files: `wit.rs` (the WIT world and conversions), `imports.rs` (what a
//! plugin may import, and the linker), `compile.rs` (compiling within
//! bounds), `call.rs` (one call), `cache.rs` (compiled components on disk),
//! `check.rs` (`nurture check`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

use nurture_core::{eval, model, rules};

mod cache;
mod call;
mod check;
mod compile;
mod imports;
mod wit;

pub use cache::default_dir as default_cache_dir;
pub use call::{bytes, Limits, Report, LOG_MAX_BYTES, LOG_MAX_MESSAGES, LOG_MAX_MESSAGE_BYTES};
pub use check::check;
pub use compile::{DEFAULT_COMPILE_TIMEOUT, MAX_CODE_BYTES, MAX_FUNCTION_BYTES};
pub use imports::{INERT_IMPORTS, PROVIDED};
pub use wit::{level_name, lift, Level, RawEffect, INTERFACE, MAX_EFFECTS, MAX_OUTPUT_BYTES};

use crate::eval::{PluginEffect, PluginHost};
use crate::model::{Event, LeadState};
use crate::rules::Plugin;
use call::CallState;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wit::ScorerPre;

/// Consecutive failures after which a plugin is switched off.
pub const FAILURES_BEFORE_OFF: u32 = 10;

/// How often the epoch advances: the granularity of timeouts.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How a host is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where compiled components are cached; `None`: compile in memory.
    pub cache_dir: Option<PathBuf>,
    /// Calls that may run at once (instances in the pool); more wait.
    pub max_concurrent: u32,
    pub failures_before_off: u32,
    /// How long loading waits for one plugin to compile (`compile.rs`).
    pub compile_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_dir: cache::default_dir(),
            max_concurrent: 16,
            failures_before_off: FAILURES_BEFORE_OFF,
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

/// Counters for one plugin, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls: u64,
    pub failures: u64,
    pub fuel_used: u64,
    /// Why the plugin was switched off, if it was.
    pub off: Option<String>,
}

/// Runs the plugins of one ruleset.
pub struct Host {
    engine: Engine,
    plugins: HashMap<String, Loaded>,
    slots: Slots,
    failures_before_off: u32,
    ticker: Arc<AtomicBool>,
}

struct Loaded {
    pre: Result<ScorerPre<CallState>, String>,
    consecutive: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    fuel_used: AtomicU64,
    off: Mutex<Option<String>>,
}

impl Host {
    /// Compiles (or loads from the cache) and links every plugin. Never
    /// fails as a whole: a plugin that cannot be loaded answers every call
    /// with the reason, so the other rules still run ([`check`] reports it).
    pub fn new(plugins: &[Plugin], opts: Options) -> Result<Host, String> {
        let max_memory = plugins
            .iter()
            .map(|p| p.memory_bytes)
            .max()
            .unwrap_or(0)
            .max(crate::rules::DEFAULT_MEMORY);
        let sources: Vec<_> = plugins.iter().map(read).collect();
        let initial = sources
            .iter()
            .filter_map(|s| s.as_deref().ok())
            .map(initial_memory)
            .max()
            .unwrap_or(0);
        let engine = engine(max_memory, initial, opts.max_concurrent)?;
        let ticker = Arc::new(AtomicBool::new(true));
        {
            let (engine, running) = (engine.weak(), ticker.clone());
            std::thread::Builder::new()
                .name("nurture-plugin-epoch".into())
                .spawn(move || {
                    while running.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| format!("cannot start the plugin timer thread: {e}"))?;
        }
        let mut loaded = HashMap::new();
        for (p, source) in plugins.iter().zip(sources) {
            let pre = source.and_then(|bytes| {
                load(
                    &engine,
                    opts.cache_dir.as_deref(),
                    &bytes,
                    opts.compile_timeout,
                )
            });
            loaded.insert(
                p.name.clone(),
                Loaded {
                    pre,
                    consecutive: AtomicU64::new(0),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    fuel_used: AtomicU64::new(0),
                    off: Mutex::new(None),
                },
            );
        }
        Ok(Host {
            engine,
            plugins: loaded,
            slots: Slots::new(opts.max_concurrent as usize),
            failures_before_off: opts.failures_before_off.max(1),
            ticker,
        })
    }

    /// Calls `plugin` once and reports everything about the call.
    pub fn call_report(&self, plugin: &Plugin, lead: &LeadState, event: &Event) -> Report {
        let failed = |msg: String| Report {
            result: Err(msg),
            fuel_used: 0,
            elapsed: Duration::ZERO,
            peak_memory: 0,
            logs: vec![],
            logs_dropped: 0,
        };
        let Some(p) = self.plugins.get(&plugin.name) else {
            return failed(format!("plugin `{}` is not loaded", plugin.name));
        };
        p.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(why) = p.off.lock().ok().and_then(|o| o.clone()) {
            p.failures.fetch_add(1, Ordering::Relaxed);
            return failed(why);
        }
        let report = match &p.pre {
            Err(e) => failed(format!("cannot be loaded: {e}")),
            Ok(pre) => {
                let limits = Limits {
                    fuel: plugin.fuel,
                    memory_bytes: plugin.memory_bytes,
                    timeout: plugin.timeout.to_std().unwrap_or(Duration::ZERO),
                };
                let _slot = self.slots.take();
                call::call(pre, limits, EPOCH_TICK, lead, event, &plugin.config_json)
            }
        };
        p.fuel_used.fetch_add(report.fuel_used, Ordering::Relaxed);
        match &report.result {
            Ok(_) => p.consecutive.store(0, Ordering::Relaxed),
            Err(e) => {
                p.failures.fetch_add(1, Ordering::Relaxed);
                let n = p.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= u64::from(self.failures_before_off) {
                    if let Ok(mut off) = p.off.lock() {
                        off.get_or_insert_with(|| {
                            format!(
                                "switched off after {n} failures in a row until the rules are reloaded (last: {e})"
                            )
                        });
                    }
                }
            }
        }
        report
    }

    /// Counters per plugin, by name.
    pub fn stats(&self) -> Vec<(String, Stats)> {
        let mut out: Vec<_> = self
            .plugins
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    Stats {
                        calls: p.calls.load(Ordering::Relaxed),
                        failures: p.failures.load(Ordering::Relaxed),
                        fuel_used: p.fuel_used.load(Ordering::Relaxed),
                        off: p.off.lock().ok().and_then(|o| o.clone()),
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Why a plugin could not be loaded, if it could not.
    pub fn load_error(&self, name: &str) -> Option<&str> {
        self.plugins
            .get(name)?
            .pre
            .as_ref()
            .err()
            .map(String::as_str)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}

impl PluginHost for Host {
    fn call(
        &self,
        plugin: &Plugin,
        lead: &LeadState,
        event: &Event,
    ) -> Result<Vec<PluginEffect>, String> {
        self.call_report(plugin, lead, event).result
    }
}

/// The one engine: Cranelift, fuel, epochs, and a pool of instances sized
/// for the largest memory limit. `initial` is the largest initial linear
/// memory of the plugins, in bytes: it decides how memory is reset.
fn engine(max_memory: u64, initial: u64, max_concurrent: u32) -> Result<Engine, String> {
    let mut cfg = Config::new();
    cfg.consume_fuel(true);
    cfg.epoch_interruption(true);
    cfg.wasm_component_model(true);
    // Deep recursion traps as a stack overflow well before the host's own
    // stack (2 MiB on tokio's blocking threads) is at risk.
    cfg.max_wasm_stack(512 << 10);
    let page = 64 << 10;
    let max_memory = usize::try_from(max_memory.div_ceil(page) * page)
        .map_err(|_| "plugin memory limit too large".to_string())?;
    let n = max_concurrent.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_core_instances_per_component(16)
        .max_memory_size(max_memory);
    // After every call a slot's memory is reset to the plugin's initial
    // image, so each call sees only a fresh instance's memory. This reset is
    // a large part of a call's cost, and the best way to do it depends on
    // the size:
    // - Small (our plugins are linked with a 32 KiB stack: one 64 KiB page):
    //   memset all of it and keep it resident. No page faults on the next
    //   call, no madvise (with its TLB-shootdown IPIs) on this one. Up to
    //   1 MiB stays resident; memory a call grew past that is decommitted
    //   (in batches of 16, as below).
    // - Large (a Rust plugin linked with the default 1 MiB stack starts at
    //   1.06 MiB): ask the kernel which pages the call touched
    //   (PAGEMAP_SCAN, Linux 6.7+) and reset just those. The scan has a
    //   fixed cost of over a microsecond, more than a memset of 128 KiB.
    // Measured with the noop plugin (docs/benchmarks.md): 64 KiB memset
    // 4.8-4.9 µs per call, the same scanned 6.2 µs; 128 KiB memset 5.7 µs,
    // scanned 6.2 µs; 1.06 MiB scanned 6.4-6.6 µs.
    if initial <= SMALL_MEMORY {
        pool.pagemap_scan(wasmtime::Enabled::No)
            .linear_memory_keep_resident(1 << 20);
    } else {
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(2 << 20);
    }
    pool.table_keep_resident(64 << 10).decommit_batch_size(16);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg).map_err(|e| format!("cannot set up the WebAssembly engine: {e:#}"))
}

/// Up to this initial memory, a plugin's memory is reset with memset.
const SMALL_MEMORY: u64 = 128 << 10;

/// The largest initial linear memory of the core modules in a component,
/// in bytes; 0 if it cannot be read (loading it will say why).
fn initial_memory(bytes: &[u8]) -> u64 {
    use wasmtime::wasmparser::{Parser, Payload};
    let mut largest = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::MemorySection(memories)) = payload else {
            continue;
        };
        for m in memories.into_iter().flatten() {
            let page = 1u64 << m.page_size_log2.unwrap_or(16).min(16);
            largest = largest.max(m.initial.saturating_mul(page));
        }
    }
    largest
}

fn read(p: &Plugin) -> Result<Vec<u8>, String> {
    std::fs::read(&p.wasm).map_err(|e| format!("cannot read {}: {e}", p.wasm.display()))
}

/// Compiles, checks and links one plugin.
fn load(
    engine: &Engine,
    cache_dir: Option<&std::path::Path>,
    bytes: &[u8],
    compile_timeout: Duration,
) -> Result<ScorerPre<CallState>, String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 0x01, 0]) => {}
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            return Err(
                "a core WebAssembly module, not a component: build it for wasm32-wasip2 (docs/plugins.md)"
                    .to_string(),
            )
        }
        _ => return Err("not a WebAssembly component".to_string()),
    }
    let component =
        compile::component(engine, cache_dir, bytes, compile_timeout).map_err(|e| e.to_string())?;
    let linker = imports::link(engine, &component).map_err(|e| e.to_string())?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| format!("cannot link: {e:#}"))?;
    ScorerPre::new(pre)
        .map_err(|e| format!("does not export the `{INTERFACE}` world's `score` function: {e:#}"))
}

/// A counting semaphore: no more calls at once than instances in the pool.
/// Releasing wakes a waiter only if there is one: a condvar's `notify_one`
/// is a futex system call even when nobody waits.
struct Slots {
    state: Mutex<SlotsState>,
    freed: Condvar,
}

struct SlotsState {
    free: usize,
    waiting: usize,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            state: Mutex::new(SlotsState {
                free: n.max(1),
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.free == 0 {
            s.waiting += 1;
            s = self.freed.wait(s).unwrap_or_else(|e| e.into_inner());
            s.waiting -= 1;
        }
        s.free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.free += 1;
        if s.waiting > 0 {
            self.0.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(path: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(path),
        )
        .unwrap()
    }

    #[test]
    fn initial_memory_is_read_from_the_core_modules() {
        // Linked with a 32 KiB stack: one page. 1 MiB of statics: 17 pages.
        assert_eq!(initial_memory(&wasm("tests/plugins/noop.wasm")), 64 << 10);
        assert_eq!(initial_memory(&wasm("plugins/company_size.wasm")), 64 << 10);
        assert_eq!(
            initial_memory(&wasm("tests/plugins/leftovers_large.wasm")),
            17 * (64 << 10)
        );
        assert_eq!(initial_memory(b"not wasm"), 0);
    }
}
