//! The WASM plugin host against hostile plugins (tests/plugins/*.wasm, built
//! by plugins/build.sh from plugins/tests/*: each misbehaves in one way) and the
//! example plugins: every failure is contained and recorded, other leads
//! and rules are unaffected, each call ends within its limits, and fuel is
//! deterministic. Also `nurture check` and `nurture plugin run`.

use nurture::eval::{Effect, Evaluator, Note};
use nurture::model::{Event, LeadState};
use nurture::plugins::{Host, Options, LOG_MAX_BYTES, LOG_MAX_MESSAGES};
use nurture::rules::Ruleset;
use nurture::sim::{read_events_str, World};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn hostile(name: &str) -> PathBuf {
    repo().join("tests/plugins").join(format!("{name}.wasm"))
}

fn example(name: &str) -> PathBuf {
    repo().join("plugins").join(format!("{name}.wasm"))
}

fn opts() -> Options {
    Options {
        // Compile in memory: tests do not share a cache with anyone.
        cache_dir: None,
        ..Options::default()
    }
}

/// Rules with one hostile plugin (`limits` added to its entry) between a
/// scoring rule and the company-size example plugin.
fn rules_with(plugin: &str, limits: &str) -> (TempDir, Ruleset) {
    let tmp = TempDir::new().unwrap();
    let yaml = format!(
        "scoring:\n  - {{ name: hello, on: identify, points: 1 }}\n\
         plugins:\n  - {{ name: hostile, wasm: '{}', on: identify{limits} }}\n  \
         - {{ name: company-size, wasm: '{}', on: identify }}\n",
        hostile(plugin).display(),
        example("company_size").display()
    );
    std::fs::write(tmp.path().join("rules.yaml"), yaml).unwrap();
    let rules = Ruleset::load(tmp.path()).unwrap_or_else(|d| panic!("{d}"));
    (tmp, rules)
}

const EVENTS: &str = r#"
{"id":"e1","lead":"u1","type":"identify","at":"2026-01-05T10:00:00Z","traits":{"employees":1500,"boom":true}}
{"id":"e2","lead":"u2","type":"identify","at":"2026-01-05T10:01:00Z","traits":{"employees":1500,"boom":true}}
{"id":"e3","lead":"u3","type":"identify","at":"2026-01-05T10:02:00Z","traits":{"employees":1500,"boom":true}}
"#;

/// Runs EVENTS through rules with the hostile plugin: every lead still gets
/// the scoring rule and the good plugin; the hostile plugin's error is on
/// each lead's timeline. Returns the errors.
fn contained(plugin: &str, limits: &str, expect: &str, max_call: Duration) -> Vec<String> {
    let (_tmp, rules) = rules_with(plugin, limits);
    let host = Host::new(&rules.plugins, opts()).unwrap();
    let mut world = World::new(Evaluator::with_plugins(&rules, &host));
    world.keep_effects = true;
    let mut events = read_events_str("events", EVENTS).unwrap();
    let started = Instant::now();
    world.run(&mut events, None);
    let elapsed = started.elapsed();
    assert!(
        elapsed < max_call * 3,
        "{plugin}: 3 calls took {elapsed:?}, more than 3 x {max_call:?}"
    );
    let mut errors = vec![];
    for id in ["u1", "u2", "u3"] {
        let lead = &world.leads[id];
        assert_eq!(lead.score, 11, "{plugin}: {id}: hello 1 + company-size 10");
        assert_eq!(lead.attributes["company_size"], "enterprise");
        let notes: Vec<_> = world
            .effects
            .iter()
            .filter_map(|(l, _, e)| match e {
                Effect::Note(Note::PluginFailed { plugin, error }) if l == id => {
                    Some((plugin.clone(), error.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(notes.len(), 1, "{plugin}: {id}: {notes:?}");
        assert_eq!(notes[0].0, "hostile");
        assert!(
            notes[0].1.contains(expect),
            "{plugin}: {id}: expected {expect:?} in {:?}",
            notes[0].1
        );
        errors.push(notes[0].1.clone());
    }
    let stats = host.stats();
    let hostile = &stats.iter().find(|(n, _)| n == "hostile").unwrap().1;
    assert_eq!((hostile.calls, hostile.failures), (3, 3));
    let good = &stats.iter().find(|(n, _)| n == "company-size").unwrap().1;
    assert_eq!((good.calls, good.failures), (3, 0));
    errors
}

const QUICK: Duration = Duration::from_millis(250);

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    contained("loop", "", "out of fuel (limit 10000000)", QUICK);
}

#[test]
fn an_infinite_loop_with_fuel_to_spare_times_out() {
    let errors = contained(
        "loop",
        ", fuel: 1000000000000, timeout: 30ms",
        "timed out",
        Duration::from_millis(30) + QUICK,
    );
    assert!(errors[0].contains("limit 30 ms"), "{}", errors[0]);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    contained(
        "memory_bomb",
        ", memory: 8MiB",
        "memory limit exceeded",
        QUICK,
    );
}

#[test]
fn a_memory_limit_in_plain_bytes_holds() {
    let errors = contained(
        "memory_bomb",
        ", memory: 2097152",
        "memory limit exceeded",
        QUICK,
    );
    assert!(errors[0].ends_with("(limit 2 MiB)"), "{}", errors[0]);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    contained("recursion", "", "stack overflow", QUICK);
}

#[test]
fn deep_recursion_overflows_the_plugins_own_stack_in_its_memory() {
    contained(
        "recursion",
        ", config: { buffer: true }",
        "out of bounds memory access (or the plugin's own stack, in its memory, overflowed",
        QUICK,
    );
}

#[test]
fn a_panic_is_a_trap_with_its_message() {
    let errors = contained("trap", "", "trapped: plugin panicked", QUICK);
    assert!(errors[0].contains("boom for u1"), "{}", errors[0]);
}

#[test]
fn huge_output_is_refused() {
    contained("huge_output", "", "output too large", QUICK);
}

#[test]
fn invalid_output_is_refused() {
    contained("invalid_output", "", "invalid output", QUICK);
}

#[test]
fn an_import_the_host_does_not_give_is_refused() {
    let errors = contained("bad_import", "", "which Nurture does not provide", QUICK);
    assert!(
        errors[0].contains("wasi:clocks/wall-clock"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_plain_std_panic_is_a_trap_with_its_message() {
    // No SDK hook: std's own writes the message to stderr (after reading
    // RUST_BACKTRACE from the environment), which the host keeps.
    let errors = contained(
        "plain_panic",
        "",
        "trapped: plugin panicked: panicked at tests/plain-panic/src/lib.rs:",
        QUICK,
    );
    assert!(errors[0].ends_with(": plain panic for u1"), "{}", errors[0]);
    let (_tmp, rules) = rules_with("plain_panic", "");
    let host = Host::new(&rules.plugins, opts()).unwrap();
    let (lead, ev) = lead_and_event("{}");
    let r = host.call_report(&rules.plugins[0], &lead, &ev);
    let stderr: Vec<&str> = r
        .logs
        .iter()
        .filter(|(l, _)| nurture::plugins::level_name(*l) == "error")
        .map(|(_, m)| m.as_str())
        .collect();
    assert!(
        stderr.contains(&"stderr: plain panic for u1"),
        "{:?}",
        r.logs
    );
}

#[test]
fn an_import_of_a_function_the_host_lacks_is_refused_at_load() {
    // Built against a copy of the WIT whose `host` has an extra `now`: it
    // used to load, and then fail every call.
    let errors = contained(
        "extra_import",
        "",
        "cannot be loaded: imports `now` from `nurture:plugin/host@0.1.0`, which Nurture does not provide: its `nurture:plugin/host@0.1.0` has `level`, `log`",
        QUICK,
    );
    assert!(!errors[0].contains("called"), "{}", errors[0]);
}

#[test]
fn a_plugin_built_for_another_interface_version_is_refused_at_load() {
    contained(
        "wrong_version",
        "",
        "cannot be loaded: imports `nurture:plugin/host@0.2.0`, `nurture:plugin/types@0.2.0`, but this Nurture implements `nurture:plugin@0.1.0`",
        QUICK,
    );
}

#[test]
fn a_compilation_past_its_time_limit_is_refused_with_the_limit() {
    let (_tmp, rules) = rules_with("noop", "");
    let host = Host::new(
        &rules.plugins,
        Options {
            // No compilation finishes in a microsecond.
            compile_timeout: Duration::from_micros(1),
            ..opts()
        },
    )
    .unwrap();
    let err = host.load_error("hostile").unwrap();
    assert!(
        err.starts_with("compiling took longer than 0.000001 s (the limit)"),
        "{err}"
    );
}

#[test]
fn a_component_without_the_export_is_refused() {
    contained("no_export", "", "does not export", QUICK);
}

fn lead_and_event(traits: &str) -> (LeadState, Event) {
    let v: serde_json::Value = serde_json::from_str(&format!(
        r#"{{"id":"e1","lead":"u1","type":"identify","at":"2026-01-05T10:00:00Z","traits":{traits}}}"#
    ))
    .unwrap();
    let ev = Event::from_json(&v, None).unwrap();
    let mut lead = LeadState::new("u1", ev.at);
    for (k, v) in &ev.traits {
        lead.attributes.insert(k.clone(), v.clone());
    }
    (lead, ev)
}

/// No call ever sees memory an earlier call used: `leftovers` fails if its
/// statics or freshly grown pages are not as new, then dirties them. Many
/// more calls than the pool has instances, so slots are reused. Both ways
/// the host resets memory: memset (a plugin starting with one 64 KiB page)
/// and the kernel's page scan (one starting with over 1 MiB).
#[test]
fn no_call_sees_memory_an_earlier_call_used() {
    for name in ["leftovers", "leftovers_large"] {
        let (_tmp, rules) = rules_with(name, "");
        let host = Host::new(
            &rules.plugins,
            Options {
                max_concurrent: 2,
                ..opts()
            },
        )
        .unwrap();
        let (lead, ev) = lead_and_event("{}");
        for i in 0..40 {
            let r = host.call_report(&rules.plugins[0], &lead, &ev);
            let effects = r.result.unwrap_or_else(|e| panic!("{name}: call {i}: {e}"));
            assert_eq!(effects.len(), 1, "{name}: {effects:?}");
        }
    }
}

/// Plugins are linked with a small stack (plugins/.cargo/config.toml), which keeps
/// every call's memory small. It must still hold the SDK parsing the most
/// deeply nested JSON an event may bring: the deepest that the event parser
/// accepts (`model::bounds::MAX_DEPTH` in a trait).
#[test]
fn the_deepest_json_an_event_may_carry_fits_the_plugin_stack() {
    let (_tmp, rules) = rules_with("noop", "");
    let size = &rules.plugins[1];
    let host = Host::new(&rules.plugins, opts()).unwrap();
    let deepest = (1..200)
        .take_while(|depth| {
            let traits = format!(
                r#"{{"employees":1500,"deep":{}1{}}}"#,
                "[".repeat(*depth),
                "]".repeat(*depth)
            );
            let event = format!(r#"{{"id":"e1","lead":"u1","type":"identify","at":"2026-01-05T10:00:00Z","traits":{traits}}}"#);
            let v: serde_json::Value = serde_json::from_str(&event).unwrap();
            Event::from_json(&v, None).is_ok()
        })
        .last()
        .unwrap();
    assert_eq!(deepest, nurture::model::bounds::MAX_DEPTH);
    let traits = format!(
        r#"{{"employees":1500,"deep":{}{{"k":"v"}}{}}}"#,
        "[".repeat(deepest - 1),
        "]".repeat(deepest - 1)
    );
    let (lead, ev) = lead_and_event(&traits);
    // The SDK parses the attributes and the traits: both this deep.
    let r = host.call_report(size, &lead, &ev);
    let effects = r
        .result
        .unwrap_or_else(|e| panic!("nesting {deepest}: {e}"));
    assert_eq!(effects.len(), 2, "{effects:?}");
}

#[test]
fn log_spam_is_cut_to_the_budget_and_the_call_succeeds() {
    let (_tmp, rules) = rules_with("log_spam", "");
    let host = Host::new(&rules.plugins, opts()).unwrap();
    let (lead, ev) = lead_and_event("{}");
    let started = Instant::now();
    let r = host.call_report(&rules.plugins[0], &lead, &ev);
    assert!(started.elapsed() < QUICK);
    assert_eq!(r.result.unwrap().len(), 1);
    assert!(r.logs.len() <= LOG_MAX_MESSAGES);
    assert!(r.logs.iter().map(|(_, m)| m.len()).sum::<usize>() <= LOG_MAX_BYTES);
    assert_eq!(r.logs.len() as u64 + r.logs_dropped, 5000);

    // In a simulation the spam is just a plugin that works.
    let mut world = World::new(Evaluator::with_plugins(&rules, &host));
    world.run(&mut read_events_str("events", EVENTS).unwrap(), None);
    for id in ["u1", "u2", "u3"] {
        assert_eq!(
            world.leads[id].score, 12,
            "hello 1 + spam 1 + company-size 10"
        );
    }
}

#[test]
fn a_plugin_failing_again_and_again_is_switched_off_until_reload() {
    let (_tmp, rules) = rules_with("trap", "");
    let p = &rules.plugins[0];
    let host = Host::new(
        &rules.plugins,
        Options {
            failures_before_off: 3,
            ..opts()
        },
    )
    .unwrap();
    let (boom, ev) = lead_and_event(r#"{"boom":true}"#);
    let (calm, _) = lead_and_event(r#"{"boom":false}"#);
    // A success in between resets the count.
    for lead in [&boom, &boom, &calm, &boom, &boom] {
        let _ = host.call_report(p, lead, &ev);
    }
    assert!(host.call_report(p, &calm, &ev).result.is_ok());
    for _ in 0..3 {
        assert!(host.call_report(p, &boom, &ev).result.is_err());
    }
    let err = host.call_report(p, &calm, &ev).result.unwrap_err();
    assert!(err.contains("switched off after 3 failures"), "{err}");
    assert!(err.contains("boom for u1"), "{err}");
    let stats = host.stats();
    assert!(stats[1].1.off.is_some(), "{stats:?}");
    // Reloading the rules (a new host) switches it on again.
    let host = Host::new(&rules.plugins, opts()).unwrap();
    assert!(host.call_report(p, &calm, &ev).result.is_ok());
}

#[test]
fn fuel_is_deterministic() {
    let (_tmp, rules) = rules_with("loop", "");
    let size = &rules.plugins[1];
    let (lead, ev) = lead_and_event(r#"{"employees":1500}"#);
    let a = Host::new(&rules.plugins, opts()).unwrap();
    let b = Host::new(&rules.plugins, opts()).unwrap();
    let fuel: Vec<u64> = (0..5)
        .map(|i| {
            let host = if i % 2 == 0 { &a } else { &b };
            let r = host.call_report(size, &lead, &ev);
            assert!(r.result.is_ok(), "{:?}", r.result);
            r.fuel_used
        })
        .collect();
    assert!(fuel[0] > 0);
    assert!(fuel.iter().all(|f| *f == fuel[0]), "{fuel:?}");
    // Another lead costs another, but again the same, amount.
    let (small, _) = lead_and_event(r#"{"employees":12}"#);
    let f1 = a.call_report(size, &small, &ev).fuel_used;
    let f2 = b.call_report(size, &small, &ev).fuel_used;
    assert_eq!(f1, f2);
    // Running out is exact.
    let r = a.call_report(&rules.plugins[0], &lead, &ev);
    assert_eq!(r.fuel_used, rules.plugins[0].fuel);
}

#[test]
fn compiled_plugins_are_cached_on_disk_and_a_bad_entry_is_replaced() {
    let cache = TempDir::new().unwrap();
    let (_tmp, rules) = rules_with("trap", "");
    let opts = Options {
        cache_dir: Some(cache.path().to_path_buf()),
        ..opts()
    };
    let (lead, ev) = lead_and_event("{}");
    let host = Host::new(&rules.plugins, opts.clone()).unwrap();
    assert!(host
        .call_report(&rules.plugins[0], &lead, &ev)
        .result
        .is_ok());
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 2, "one entry per plugin: {entries:?}");
    for e in &entries {
        let name = e.file_name().unwrap().to_string_lossy();
        assert!(
            name.ends_with(".cwasm") && name.contains("-wasmtime48-"),
            "{name}"
        );
    }
    // From the cache.
    let host = Host::new(&rules.plugins, opts.clone()).unwrap();
    assert!(host
        .call_report(&rules.plugins[0], &lead, &ev)
        .result
        .is_ok());
    // A damaged entry is not loaded: the plugin is compiled again.
    for e in &entries {
        let mut bytes = std::fs::read(e).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(e, bytes).unwrap();
    }
    let host = Host::new(&rules.plugins, opts).unwrap();
    assert!(host
        .call_report(&rules.plugins[0], &lead, &ev)
        .result
        .is_ok());
}

// ---------------------------------------------------------------------------
// The command

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn nurture(args: &[&str]) -> Run {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    let out = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(repo())
        .env("NURTURE_CACHE_DIR", cache)
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!run.stderr.contains("panicked at"), "{}", run.stderr);
    run
}

#[test]
fn check_reports_a_bad_component_at_its_wasm_key() {
    let tmp = TempDir::new().unwrap();
    let core = tmp.path().join("core.wasm");
    // The smallest core module: a module, not a component.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(tmp.path().join("text.wasm"), "hello").unwrap();
    let yaml = format!(
        "plugins:\n  - name: clock\n    wasm: '{}'\n    on: identify\n  - name: core\n    wasm: core.wasm\n    on: identify\n  - name: text\n    wasm: text.wasm\n    on: identify\n  - name: good\n    wasm: '{}'\n    on: identify\n",
        hostile("bad_import").display(),
        example("free_mail").display()
    );
    std::fs::write(tmp.path().join("rules.yaml"), yaml).unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = nurture(&["check", dir]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stderr);
    let file = format!("{dir}/rules.yaml");
    assert!(
        lines[0].starts_with(&format!("{file}:3:11: plugin `clock`: ")),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("imports `wasi:clocks/"), "{}", lines[0]);
    assert!(
        lines[1].starts_with(&format!("{file}:6:11: plugin `core`: ")),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("not a component"), "{}", lines[1]);
    assert!(
        lines[2].starts_with(&format!("{file}:9:11: plugin `text`: ")),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains("not a WebAssembly component"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], format!("3 errors in {dir}"));

    // simulate still runs: the broken plugins fail on every call, with a
    // warning up front; the good one works.
    let events = tmp.path().join("events.jsonl");
    std::fs::write(
        &events,
        r#"{"id":"e1","lead":"u1","type":"identify","at":"2026-01-05T10:00:00Z","traits":{"email":"x@gmail.com"}}"#,
    )
    .unwrap();
    let run = nurture(&["simulate", dir, "--events", events.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("warning: plugin `clock`"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains(r#""score":-10"#), "{}", run.stdout);
}

/// Imports are checked exactly: one function the host lacks, or another
/// version of the interface, and `check` fails at the plugin's `wasm:` key,
/// naming the import and what the host has.
#[test]
fn check_refuses_imports_the_host_does_not_have_at_the_wasm_key() {
    let tmp = TempDir::new().unwrap();
    let yaml = format!(
        "plugins:\n  - name: extra\n    wasm: '{}'\n    on: identify\n  - name: version\n    wasm: '{}'\n    on: identify\n  - name: good\n    wasm: '{}'\n    on: identify\n",
        hostile("extra_import").display(),
        hostile("wrong_version").display(),
        example("free_mail").display()
    );
    std::fs::write(tmp.path().join("rules.yaml"), yaml).unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = nurture(&["check", dir]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stderr);
    let file = format!("{dir}/rules.yaml");
    assert!(
        lines[0].starts_with(&format!("{file}:3:11: plugin `extra`: ")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("imports `now` from `nurture:plugin/host@0.1.0`, which Nurture does not provide: its `nurture:plugin/host@0.1.0` has `level`, `log`"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!("{file}:6:11: plugin `version`: ")),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].ends_with("imports `nurture:plugin/host@0.2.0`, `nurture:plugin/types@0.2.0`, but this Nurture implements `nurture:plugin@0.1.0` (`nurture:plugin/host@0.1.0` and `nurture:plugin/types@0.1.0`): build the plugin against plugins/wit/plugin.wit of this version"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], format!("2 errors in {dir}"));
}

#[test]
fn check_asks_each_plugin_for_its_config_and_reports_a_refused_one_at_the_config_key() {
    let tmp = TempDir::new().unwrap();
    // A misspelt key (free-mail's config denies unknown fields), a number
    // as text, a good config, and none at all (the SDK's defaults).
    let yaml = format!(
        "plugins:\n  - name: typo\n    wasm: '{fm}'\n    on: identify\n    config: {{ penalti: -10 }}\n\
         \x20 - name: text\n    wasm: '{cs}'\n    on: [page_viewed, identify]\n    config: {{ enterprise_points: \"25\" }}\n\
         \x20 - name: good\n    wasm: '{cs}'\n    on: identify\n    config: {{ enterprise_points: 25 }}\n\
         \x20 - name: bare\n    wasm: '{fm}'\n    on: '*'\n",
        fm = example("free_mail").display(),
        cs = example("company_size").display(),
    );
    std::fs::write(tmp.path().join("rules.yaml"), yaml).unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = nurture(&["check", dir]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let file = format!("{dir}/rules.yaml");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{file}:5:13: plugin `typo`: its config is refused: unknown field `penalti`, expected `penalty` or `domains`"),
            format!("{file}:9:13: plugin `text`: its config is refused: invalid type: string \"25\", expected i64"),
            format!("2 errors in {dir}"),
        ],
        "{}",
        run.stderr
    );
}

/// A component of one core module whose functions have `sizes` bytes of
/// code each, less up to 10 (`i32.const 0; drop`, over and over).
fn component_with_functions(sizes: &[usize]) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, Component, Function, FunctionSection, Module, ModuleSection, TypeSection,
    };
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    for &size in sizes {
        funcs.function(0);
        let mut f = Function::new([]);
        f.raw([0x41, 0x00, 0x1a].repeat(size.saturating_sub(8) / 3));
        f.instructions().end();
        code.function(&f);
    }
    let mut module = Module::new();
    module.section(&types).section(&funcs).section(&code);
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

/// Compiling is bounded before Cranelift runs: a function over the limit
/// (an 850 KiB one took half a minute) and too much code in all are refused
/// at once, with the limit named.
#[test]
fn check_refuses_code_too_large_to_compile_with_the_limit() {
    let tmp = TempDir::new().unwrap();
    std::fs::write(
        tmp.path().join("huge.wasm"),
        component_with_functions(&[100, 850 << 10, 100]),
    )
    .unwrap();
    // Each function under the limit, but 8 MiB and more in all.
    std::fs::write(
        tmp.path().join("many.wasm"),
        component_with_functions(&[60 << 10; 140]),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("rules.yaml"),
        "plugins:\n  - name: huge\n    wasm: huge.wasm\n    on: identify\n  - name: many\n    wasm: many.wasm\n    on: identify\n",
    )
    .unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = nurture(&["check", dir]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stderr);
    assert_eq!(
        lines[0],
        format!("{dir}/rules.yaml:3:11: plugin `huge`: {dir}/huge.wasm: too large to compile: function 1 of core module 0 has 850 KiB of code (at most 64 KiB per function)")
    );
    assert!(
        lines[1].starts_with(&format!("{dir}/rules.yaml:6:11: plugin `many`: {dir}/many.wasm: too large to compile: 8.0 MiB of code (at most 8 MiB in all)")),
        "{}",
        lines[1]
    );
}

#[test]
fn plugin_run_prints_effects_fuel_time_and_memory() {
    let wasm = example("company_size");
    let run = nurture(&[
        "plugin",
        "run",
        wasm.to_str().unwrap(),
        "--lead",
        r#"{"id":"u1","attributes":{"employees":1500}}"#,
        "--event",
        r#"{"type":"identify"}"#,
        "--config",
        r#"{"enterprise_points":25}"#,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.starts_with("effects: 2\n"), "{out}");
    assert!(
        out.contains(r#"{"kind":"set_attribute","key":"company_size","value":"enterprise"}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"{"kind":"points","points":25,"reason":"enterprise: 1500 employees"}"#),
        "{out}"
    );
    assert!(
        out.contains("\nfuel: ") && out.contains(" of 10000000\n"),
        "{out}"
    );
    assert!(out.contains("\ntime: ") && out.contains(" ms\n"), "{out}");
    assert!(
        out.contains("\nmemory: ") && out.contains("peak (limit 16 MiB)"),
        "{out}"
    );

    let run = nurture(&[
        "plugin",
        "run",
        hostile("loop").to_str().unwrap(),
        "--event",
        r#"{"type":"identify"}"#,
        "--fuel",
        "1000",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .starts_with("error: out of fuel (limit 1000)\nfuel: 1000 of 1000\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_example_rules_run_their_plugins() {
    let rules = Ruleset::load(&repo().join("rules")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(rules.plugins.len(), 2);
    let host = Host::new(&rules.plugins, opts()).unwrap();
    for p in &rules.plugins {
        assert_eq!(host.load_error(&p.name), None);
    }
}
