//! Evaluator throughput on the example rules in `rules/`, one core:
//! `cargo bench --bench evaluator`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nurture::eval::Evaluator;
use nurture::model::time;
use nurture::rules::Ruleset;
use nurture::sim::{gen, World};
use std::path::Path;

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let rules = Ruleset::load(&dir).expect("example rules load");
    let start = time::parse("2026-01-05T08:00:00Z").unwrap();
    let events = gen::generate(42, 2_000, 20_000, start);

    let mut g = c.benchmark_group("evaluator");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    // The whole pipeline as `simulate` runs it: events, due drips, SLA timers
    // and nightly schedule ticks, on 2,000 leads.
    g.bench_function("example-rules/20k-events", |b| {
        b.iter_batched(
            || events.clone(),
            |mut evs| {
                let mut w = World::new(Evaluator::new(&rules));
                w.run(&mut evs, None);
                w.leads.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
