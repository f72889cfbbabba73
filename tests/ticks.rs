//! `schedule` ticks over stored leads, driven in process with the time of
//! each step given: a tick visits only the leads it can change (eval::Wake,
//! stored as `leads.tick_at`), a wake stored under other rules (or before
//! the column existed) counts as due and is computed again, and the leads
//! end exactly as `simulate` leaves them.

use crate::support::backends;
use nurture::clock::Clock;
use nurture::daemon::metrics::Metrics;
use nurture::daemon::processor::Processor;
use nurture::daemon::rules::{Active, RulesHandle};
use nurture::email::{Links, Secret};
use nurture::eval::Evaluator;
use nurture::model::{time, Event, LeadState};
use nurture::rules::Ruleset;
use nurture::sim::World;
use nurture::store::Store;
use serde_json::json;
use std::sync::Arc;

const RULES: &str = r#"
scoring:
  - name: view
    on: page_view
    points: 10
  - name: decay
    schedule: "0 3 * * *"
    if: 'now - lead.last_activity_at > duration("72h") && lead.score > 0'
    points: -5
stages:
  lead: 'lead.email != ""'
  mql: 'lead.score >= 30'
"#;

const PARTS: u32 = 4;

/// 240 leads: a quarter sign up only (score 0, no tick can change them),
/// the rest view pages on one to three days within the first ten.
fn events(base: time::Timestamp) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..240 {
        let lead = format!("l{i:03}");
        let start = base + chrono::Duration::days(i % 10) + chrono::Duration::minutes(i * 7);
        let mut push = |kind: &str, at: time::Timestamp| {
            let v = json!({
                "id": format!("e{}", out.len()), "lead": lead, "type": kind,
                "at": time::format(&at), "traits": {"email": format!("{lead}@example.com")},
            });
            out.push(Event::from_json(&v, None).unwrap());
        };
        if i % 4 == 0 {
            push("signup", start);
        } else {
            for d in 0..(i % 4) {
                push("page_view", start + chrono::Duration::days(d));
            }
        }
    }
    // Stored in the order they happened: none comes late.
    out.sort_by_key(|e| e.at);
    out
}

/// Every partition stepped at `now` until none has anything left.
async fn step_all(p: &Processor, now: time::Timestamp) {
    loop {
        let mut applied = 0;
        for part in 0..i64::from(PARTS) {
            applied += p.step_up_to(part, now, 100).await.unwrap().applied;
        }
        if applied == 0 {
            return;
        }
    }
}

fn decays(w: &World<'_>, after: time::Timestamp) -> u64 {
    w.leads
        .values()
        .flat_map(|l| &l.history.ledger)
        .filter(|e| e.rule == "decay" && e.at > after)
        .count() as u64
}

/// The daemon's leads against `simulate`'s up to `until`.
async fn same_as_simulated<'r>(
    store: &Store,
    rules: &'r Ruleset,
    events: &[Event],
    until: time::Timestamp,
) -> World<'r> {
    let mut w = World::new(Evaluator::new(rules));
    w.run(&mut events.to_vec(), Some(until));
    let ids: Vec<String> = w.leads.keys().cloned().collect();
    let stored = store.load_leads(&ids).await.unwrap();
    assert_eq!(stored.len(), ids.len());
    let view = |l: &LeadState| {
        (
            l.id.clone(),
            l.score,
            l.stage,
            l.memory.counts.ledger,
            l.last_activity_at,
        )
    };
    for s in stored {
        let got = s.state.unwrap();
        assert_eq!(
            view(&got),
            view(&w.leads[&got.id]),
            "lead {} as of {until}",
            got.id
        );
    }
    w
}

#[test]
fn a_tick_visits_only_the_leads_it_can_change_and_ends_as_simulate_does() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("r.yaml"), RULES).unwrap();
    let rules = Ruleset::load(&rules_dir).unwrap_or_else(|d| panic!("{d}"));
    let base = time::parse("2026-03-01T10:00:00Z").unwrap();
    let events = events(base);
    for db in backends("ticks_wake", dir.path()) {
        rt.block_on(async {
            let store = Store::connect(&db).await.unwrap();
            store.migrate_with(PARTS).await.unwrap();
            let links = Links {
                base_url: "http://localhost".into(),
                secret: Secret::new(vec![7; 32]),
            };
            let loaded = Ruleset::load(&rules_dir).unwrap();
            let active = Active::new(loaded, &links).unwrap();
            let metrics = Arc::new(Metrics::default());
            let p = Processor {
                store: store.clone(),
                rules: RulesHandle::new(active),
                metrics: metrics.clone(),
                clock: Clock::system(),
                max_batch: 1_600,
                routing_window_ms: None,
                allowed_lateness_ms: 3_600_000,
            };
            store.insert_events(&events, base).await.unwrap();

            // Twelve nights: a lead is visited only on the nights its decay
            // takes points; the 60 that only signed up, never.
            let first = base + chrono::Duration::days(12);
            step_all(&p, first).await;
            let w = same_as_simulated(&store, &rules, &events, first).await;
            let scored = decays(&w, base);
            assert!(scored > 100, "{db}: {scored} decays");
            assert_eq!(
                metrics.tick_leads.get(),
                scored,
                "{db}: leads visited by ticks"
            );

            // Wakes stored before the column existed (NULL) or under other
            // rules (another key) count as due: every lead is visited at the
            // next tick, and its wake is written again.
            sqlx::any::install_default_drivers();
            let raw = sqlx::AnyPool::connect(&db).await.unwrap();
            sqlx::query("UPDATE leads SET tick_rules = NULL WHERE id < 'l120'")
                .execute(&raw)
                .await
                .unwrap();
            sqlx::query("UPDATE leads SET tick_rules = 42, tick_at = NULL WHERE id >= 'l120'")
                .execute(&raw)
                .await
                .unwrap();
            let visited = metrics.tick_leads.get();
            let then = first + chrono::Duration::days(10);
            step_all(&p, then).await;
            let w = same_as_simulated(&store, &rules, &events, then).await;
            // The first tick after `first` visits all 240; later ones only
            // those that lose points.
            let next_tick = time::parse("2026-03-14T03:00:00Z").unwrap();
            assert_eq!(
                metrics.tick_leads.get() - visited,
                240 + decays(&w, next_tick),
                "{db}: leads visited by ticks after the wakes went stale"
            );
            let (stale,): (i64,) = sqlx::query_as(&format!(
                "SELECT COUNT(*) FROM leads WHERE tick_rules IS NULL OR tick_rules <> {}",
                rules.wake_key
            ))
            .fetch_one(&raw)
            .await
            .unwrap();
            assert_eq!(stale, 0, "{db}: every wake computed again");
            raw.close().await;
        });
    }
}
