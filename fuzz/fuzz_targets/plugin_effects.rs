//! Plugin effects as the host receives them, from arbitrary bytes: one per
//! line, `p POINTS REASON`, `s KEY<TAB>JSON` (set-attribute, the value as the
//! JSON text a plugin returns) or `t TAG`. They go through the host's checks
//! (`eval::answer::lift`) and the evaluator's real path (a plugin host answering
//! with them), then the lead is turned into the rows the processor stores and
//! read back. It must read back equal to the lead as decided, and every text
//! value of its rows must be storable (no NUL, which PostgreSQL refuses) and
//! bounded (a plugin's reason within MAX_TEXT_BYTES); and the step's own last
//! guard (`LeadRows::check`) must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nurture_core::eval::answer::{lift, RawEffect};
use nurture_core::eval::{Book, Evaluator, PluginEffect, PluginHost};
use nurture_core::model::{bounds, Event, LeadState};
use nurture_core::rows::{parse_state, LeadRows};
use nurture_core::rules::{Plugin, Ruleset};
use std::path::Path;
use std::sync::OnceLock;

/// A plugin host that answers every call with the fuzzed effects.
struct Answer(Vec<PluginEffect>);

impl PluginHost for Answer {
    fn call(&self, _: &Plugin, _: &LeadState, _: &Event) -> Result<Vec<PluginEffect>, String> {
        Ok(self.0.clone())
    }
}

fn rules() -> &'static Ruleset {
    static RULES: OnceLock<Ruleset> = OnceLock::new();
    RULES.get_or_init(|| {
        // Never run: the host above stands in for it.
        let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/plugins/noop.wasm");
        let yaml = format!(
            "plugins:\n  - {{ name: p, wasm: {wasm:?}, on: '*' }}\nscoring:\n  - {{ name: r, on: '*', points: 1 }}\n"
        );
        Ruleset::from_text(Path::new("fuzz/rules.yaml"), &yaml).unwrap_or_else(|d| panic!("{d}"))
    })
}

fn parse(data: &[u8]) -> Option<Vec<RawEffect>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut out = Vec::new();
    for line in text.split('\n') {
        let (kind, rest) = line.split_at_checked(2)?;
        out.push(match kind {
            "p " => {
                let (points, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                RawEffect::Points {
                    points: points.parse().ok()?,
                    reason: reason.to_string(),
                }
            }
            "s " => {
                let (key, value) = rest.split_once('\t')?;
                RawEffect::SetAttribute {
                    key: key.to_string(),
                    value: value.to_string(),
                }
            }
            "t " => RawEffect::Tag(rest.to_string()),
            _ => return None,
        });
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some(raw) = parse(data) else { return };
    let Ok(effects) = lift(raw) else {
        return; // refused by the host: the call fails, nothing applies
    };
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let ev = Event::from_json(
        &serde_json::json!({"id": "e1", "lead": "u1", "type": "x", "at": "2026-01-01T00:00:00Z"}),
        None,
    )
    .unwrap();
    let host = Answer(effects);
    let eval = Evaluator::with_plugins(rules(), &host);
    let d = eval.on_event(Some(LeadState::new("u1", at)), &mut Book::default(), &ev);
    let rows = LeadRows::new(None, &d.lead, 0).expect("a lead can be written");
    let back = parse_state(rows.state())
        .unwrap_or_else(|e| panic!("stored state does not read back: {e}\n{}", rows.state()));
    // The history is stored in its own rows, not in the state.
    let mut stored = d.lead.clone();
    stored.history = Default::default();
    assert_eq!(back, stored, "stored as {}", rows.state());
    for (column, text) in rows.texts() {
        let max = match column {
            "ledger.reason" => bounds::MAX_TEXT_BYTES,
            "leads.state" => usize::MAX,
            _ => bounds::MAX_VALUE_BYTES,
        };
        if let Err(e) = bounds::check_text(column, text, max) {
            panic!("{column} would be stored out of bounds: {e}");
        }
    }
    rows.check().expect("the step's guard agrees");
});
