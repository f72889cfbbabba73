//! Plugin calls on one core: `cargo bench --bench plugins`.
//!
//! - `noop`: a plugin that does nothing (plugins/tests/noop), so this is the
//!   host's cost per call: a fresh Store, instantiation from the InstancePre,
//!   lowering the lead and event (attributes, properties and traits to JSON
//!   text), the call, lifting and checking the answer.
//! - `company-size`: the example plugin (plugins/company_size), a real call:
//!   the overhead plus the plugin's own work (JSON parsing in the guest).
//! - `evaluator`: one `identify` through the example rules with and without
//!   their two plugins.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nurture::eval::{Book, Evaluator};
use nurture::model::{Event, LeadState};
use nurture::plugins::{Host, Options};
use nurture::rules::{Diagnostic, Plugin, Ruleset};
use std::path::{Path, PathBuf};

fn plugin(name: &str, wasm: PathBuf) -> Plugin {
    Plugin {
        name: name.into(),
        wasm_at: Diagnostic {
            file: wasm.display().to_string(),
            pos: nurture::rules::source::Pos { line: 1, col: 1 },
            message: String::new(),
        },
        config_at: Diagnostic {
            file: "config".into(),
            pos: nurture::rules::source::Pos { line: 1, col: 1 },
            message: String::new(),
        },
        wasm,
        on: vec!["identify".into()],
        config_json: r#"{"enterprise_employees":1000}"#.into(),
        fuel: nurture::rules::DEFAULT_FUEL,
        memory_bytes: nurture::rules::DEFAULT_MEMORY,
        timeout: chrono::Duration::milliseconds(100),
    }
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let plugins = [
        plugin("noop", root.join("tests/plugins/noop.wasm")),
        plugin("company-size", root.join("plugins/company_size.wasm")),
    ];
    let opts = Options {
        cache_dir: None,
        ..Options::default()
    };
    let host = Host::new(&plugins, opts.clone()).expect("host");
    let ev: serde_json::Value = serde_json::from_str(
        r#"{"id":"e1","lead":"u1","type":"identify","at":"2026-01-05T10:00:00Z",
            "traits":{"email":"ann@acme.example","first_name":"Ann","industry":"software",
                      "employees":1500,"title":"Head of Engineering","consent":"opted_in"}}"#,
    )
    .unwrap();
    let ev = Event::from_json(&ev, None).unwrap();
    let mut lead = LeadState::new("u1", ev.at);
    lead.attributes = ev.traits.clone();

    let mut g = c.benchmark_group("plugins");
    g.throughput(Throughput::Elements(1));
    for p in &plugins {
        let r = host.call_report(p, &lead, &ev);
        assert!(r.result.is_ok(), "{:?}", r.result);
        g.bench_function(format!("call/{}", p.name), |b| {
            b.iter(|| host.call_report(p, &lead, &ev).result.is_ok())
        });
    }
    g.finish();

    let rules = Ruleset::load(&root.join("rules")).expect("example rules");
    let host = Host::new(&rules.plugins, opts).expect("host");
    let mut g = c.benchmark_group("evaluator");
    g.throughput(Throughput::Elements(1));
    g.bench_function("identify/without-plugins", |b| {
        let eval = Evaluator::new(&rules);
        b.iter(|| eval.on_event(None, &mut Book::default(), &ev).effects.len())
    });
    g.bench_function("identify/with-2-plugins", |b| {
        let eval = Evaluator::with_plugins(&rules, &host);
        b.iter(|| eval.on_event(None, &mut Book::default(), &ev).effects.len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
