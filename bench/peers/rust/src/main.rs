//! Nurture's evaluator side by side with other rules engines on one scoring
//! decision (docs/benchmarks.md, "Evaluator against peers"). Driven by
//! bench/peers/zen.sh and bench/peers/json-rules-engine.sh:
//!
//! ```text
//! peer-bench gen --leads N --events M --seed S [--start RFC3339]
//!     the events of `nurture gen` with the same arguments (JSON Lines, stdout)
//! peer-bench nurture --rules DIR --events FILE --reps R --out FILE
//!     times Nurture; prints `nurture <median events/s> <events/s of each rep>`
//!     and writes every event's points and every lead's score to FILE (JSON)
//! peer-bench zen --rules DIR --zen DIR --events FILE --reps R
//!     times Nurture and zen-engine in turns, checks that they agree and
//!     prints one summary line
//! ```
//!
//! Every engine evaluates one event at a time on one thread. Reading and
//! parsing the events is not timed; each engine gets them parsed into its own
//! input type first.

use nurture::eval::Evaluator;
use nurture::model::Event;
use nurture::rules::Ruleset;
use nurture::sim::World;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gen") => Opts::parse(&args[1..]).and_then(|o| gen(&o)),
        Some("nurture") => Opts::parse(&args[1..]).and_then(|o| nurture_only(&o)),
        Some("zen") => Opts::parse(&args[1..]).and_then(|o| zen::compare(&o)),
        _ => Err("usage: peer-bench gen|nurture|zen [--key value ...] (see src/main.rs)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--key value` pairs.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --key, got {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), v.clone());
        }
        Ok(Opts(map))
    }

    fn str(&self, key: &str) -> Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        self.str(key).map(PathBuf::from)
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let s = self.str(key)?;
        s.parse()
            .map_err(|_| format!("--{key} {s:?}: not a whole number"))
    }
}

/// The same events as `nurture gen` with the same arguments: the same
/// generator (`nurture::sim::gen`), written the same way.
fn gen(o: &Opts) -> Result<()> {
    let start =
        o.0.get("start")
            .map_or("2026-01-01T00:00:00Z", String::as_str);
    let start = nurture::model::time::parse(start).map_err(|_| format!("--start {start:?}"))?;
    let gen = nurture::sim::gen::Gen::new(o.num("seed")?, o.num("leads")?, start);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in gen.take(o.num("events")?) {
        writeln!(out, "{}", e.to_json()).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// What a scoring decision gave: points per event (in file order) and the
/// score per lead.
#[derive(PartialEq)]
struct Scores {
    events: Vec<i64>,
    leads: BTreeMap<String, i64>,
}

impl Scores {
    /// Per-lead sums of per-event points, for the engines without lead state.
    fn from_events(points: Vec<i64>, leads: &[String]) -> Scores {
        let mut by_lead = BTreeMap::new();
        for (p, lead) in points.iter().zip(leads) {
            *by_lead.entry(lead.clone()).or_insert(0) += p;
        }
        Scores {
            events: points,
            leads: by_lead,
        }
    }

    /// Fails, naming the first differences, unless `other` is the same.
    fn check_same(&self, name: &str, other: &Scores, other_name: &str) -> Result<()> {
        if self == other {
            return Ok(());
        }
        let mut diffs = Vec::new();
        if self.events.len() != other.events.len() {
            diffs.push(format!(
                "{} events against {}",
                self.events.len(),
                other.events.len()
            ));
        }
        for (i, (a, b)) in self.events.iter().zip(&other.events).enumerate() {
            if a != b {
                diffs.push(format!("event {} (line {}): {a} against {b}", i, i + 1));
            }
        }
        for (lead, a) in &self.leads {
            let b = other.leads.get(lead);
            if b != Some(a) {
                diffs.push(format!("lead {lead}: score {a} against {b:?}"));
            }
        }
        if other.leads.len() != self.leads.len() {
            diffs.push(format!(
                "{} leads against {}",
                self.leads.len(),
                other.leads.len()
            ));
        }
        let n = diffs.len();
        diffs.truncate(10);
        Err(format!(
            "RESULTS DIFFER: {name} against {other_name}, {n} differences, first: {}",
            diffs.join("; ")
        ))
    }

    fn total(&self) -> i64 {
        self.events.iter().sum()
    }
}

fn load_rules(dir: &Path) -> Result<Ruleset> {
    Ruleset::load(dir).map_err(|d| {
        let lines: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
        format!("rules {}: {}", dir.display(), lines.join("; "))
    })
}

fn load_events(path: &Path) -> Result<Vec<Event>> {
    nurture::sim::read_events_file(path).map_err(|e| e.join("; "))
}

/// One timed run of Nurture over all events: a fresh in-memory world (no
/// leads yet), every event through the evaluator's full `on_event` path as
/// `nurture simulate` and the daemon run it (duplicate check, lead state,
/// traits, scoring with a ledger entry per rule that applies, fit, stages,
/// campaigns, routing). Returns the seconds and what it scored.
fn run_nurture(rules: &Ruleset, events: &[Event]) -> Result<(f64, Scores)> {
    let mut evs = events.to_vec();
    let t = Instant::now();
    let mut world = World::new(Evaluator::new(rules));
    world.run(&mut evs, None);
    let secs = t.elapsed().as_secs_f64();

    let index: HashMap<&str, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    let mut per_event = vec![0; events.len()];
    let mut leads = BTreeMap::new();
    for lead in world.leads.values() {
        let mut sum = 0;
        for entry in &lead.history.ledger {
            sum += entry.points;
            let id = entry
                .event
                .as_deref()
                .ok_or("a ledger entry without an event")?;
            per_event[*index.get(id).ok_or("a ledger entry for an unknown event")?] += entry.points;
        }
        if sum != lead.score {
            return Err(format!(
                "nurture: lead {}: score {} but ledger sums to {sum}",
                lead.id, lead.score
            ));
        }
        leads.insert(lead.id.clone(), lead.score);
    }
    Ok((
        secs,
        Scores {
            events: per_event,
            leads,
        },
    ))
}

fn median(rates: &[f64]) -> f64 {
    let mut v = rates.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// 1234567.8 as "1,234,568".
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rates_list(rates: &[f64]) -> String {
    let v: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    v.join(",")
}

/// Nurture alone, for the json-rules-engine comparison (the other side runs
/// in Node.js and checks its results against the file written here).
fn nurture_only(o: &Opts) -> Result<()> {
    let rules = load_rules(&o.path("rules")?)?;
    let events = load_events(&o.path("events")?)?;
    let reps: usize = o.num("reps")?;
    let (_, scores) = run_nurture(&rules, &events)?; // warm-up
    let mut rates = Vec::new();
    for _ in 0..reps {
        let (secs, s) = run_nurture(&rules, &events)?;
        s.check_same("nurture", &scores, "nurture (warm-up)")?;
        rates.push(events.len() as f64 / secs);
    }
    let out = serde_json::json!({
        "events": events.len(),
        "total": scores.total(),
        "points": scores.events,
        "leads": scores.leads,
    });
    std::fs::write(o.path("out")?, out.to_string()).map_err(|e| format!("--out: {e}"))?;
    println!("nurture {:.0} {}", median(&rates), rates_list(&rates));
    Ok(())
}

mod zen {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use zen_engine::model::DecisionContent;
    use zen_engine::{Decision, DecisionEngine, Variable};

    /// The decision in `file`, created once and compiled ahead of time
    /// (zen-engine's fastest documented path: no loader, bytecode and
    /// decision-table indexes built up front).
    fn load(file: &Path) -> Result<Decision> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let content: DecisionContent =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut decision = DecisionEngine::default()
            .create_decision(Arc::new(content))
            .map_err(|e| format!("{}: {e:?}", file.display()))?;
        decision.compile();
        decision
            .validate()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(decision)
    }

    /// The points in a decision's result: `{"points": n}` (expression node)
    /// or a list of them (decision table, collect hit policy).
    fn points(v: &Variable) -> Option<i64> {
        match v {
            Variable::Array(rows) => rows.borrow().iter().map(points).sum(),
            Variable::Object(_) => match v.dot("points")? {
                Variable::Number(n) => i64::try_from(n).ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// One timed run of a zen decision over all events, one `evaluate` at a
    /// time on a current-thread runtime. The inputs are made before the
    /// clock starts.
    fn run(
        decision: &Decision,
        rt: &tokio::runtime::Runtime,
        events: &[serde_json::Value],
    ) -> Result<(f64, Vec<i64>)> {
        let inputs: Vec<Variable> = events.iter().map(Variable::from).collect();
        let mut out = vec![0; inputs.len()];
        let t = Instant::now();
        rt.block_on(async {
            for (input, slot) in inputs.into_iter().zip(out.iter_mut()) {
                let r = decision
                    .evaluate(input)
                    .await
                    .map_err(|e| format!("zen-engine: {e}"))?;
                *slot = points(&r.result).ok_or_else(|| {
                    format!("zen-engine: unexpected result {:?}", r.result.to_value())
                })?;
            }
            Ok::<(), String>(())
        })?;
        Ok((t.elapsed().as_secs_f64(), out))
    }

    pub fn compare(o: &Opts) -> Result<()> {
        let rules = load_rules(&o.path("rules")?)?;
        let file = o.path("events")?;
        let events = load_events(&file)?;
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        let values: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let leads: Vec<String> = events.iter().map(|e| e.lead.clone()).collect();
        if values.len() != events.len() {
            return Err("events: JSON lines and events differ in number".into());
        }
        let reps: usize = o.num("reps")?;

        // Nothing here reads `$nodes` (other nodes' results in the context):
        // leave them out, as zen-engine's configuration allows.
        zen_engine::ZEN_CONFIG
            .nodes_in_context
            .store(false, Ordering::Relaxed);
        let dir = o.path("zen")?;
        let variants = [
            ("decision table", load(&dir.join("scoring-table.json"))?),
            (
                "expression node",
                load(&dir.join("scoring-expression.json"))?,
            ),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;

        // Warm-up, and the check that every engine scores every event alike.
        let (_, expected) = run_nurture(&rules, &events)?;
        for (name, d) in &variants {
            let (_, p) = run(d, &rt, &values)?;
            Scores::from_events(p, &leads).check_same(
                &format!("zen-engine ({name})"),
                &expected,
                "nurture",
            )?;
        }

        // Timed runs, the engines in turns so that a load elsewhere on the
        // machine hits all of them alike; every run is checked again.
        let mut nurture_rates = Vec::new();
        let mut zen_rates = vec![Vec::new(); variants.len()];
        for _ in 0..reps {
            let (secs, s) = run_nurture(&rules, &events)?;
            s.check_same("nurture", &expected, "nurture (warm-up)")?;
            nurture_rates.push(events.len() as f64 / secs);
            for ((name, d), rates) in variants.iter().zip(zen_rates.iter_mut()) {
                let (secs, p) = run(d, &rt, &values)?;
                Scores::from_events(p, &leads).check_same(
                    &format!("zen-engine ({name})"),
                    &expected,
                    "nurture",
                )?;
                rates.push(events.len() as f64 / secs);
            }
        }

        let n = median(&nurture_rates);
        eprintln!("nurture events/s: {}", rates_list(&nurture_rates));
        let mut best = (0.0, "");
        let mut others = Vec::new();
        for ((name, _), rates) in variants.iter().zip(&zen_rates) {
            eprintln!("zen-engine ({name}) events/s: {}", rates_list(rates));
            let m = median(rates);
            others.push(format!("{name} {}", grouped(m)));
            if m > best.0 {
                best = (m, name);
            }
        }
        let ratio = n / best.0;
        println!(
            "evaluator vs zen-engine: nurture {} events/s, zen-engine {} events/s ({}), ratio {ratio:.2}x (target >= 2x: {}); median of {reps}, {} events, {} leads, total {} points, results agree",
            grouped(n),
            grouped(best.0),
            others.join(", "),
            if ratio >= 2.0 { "met" } else { "NOT met" },
            grouped(events.len() as f64),
            grouped(expected.leads.len() as f64),
            grouped(expected.total() as f64),
        );
        Ok(())
    }
}
