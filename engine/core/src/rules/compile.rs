//! From what was read to what runs: CEL compiled once, references resolved to
//! indexes, templates syntax-checked, every problem reported at its place.

use super::config::{self, OnBreach, Strategy, WebhookEvent, ZoneSpec};
use super::load::{Item, Loaded, Loc};
use super::Diagnostics;
use crate::cel::{CelEnv, Condition};
use crate::model::{time::Timestamp, Stage};
use chrono::Duration;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A checked, compiled rules directory: what the evaluator runs.
#[derive(Debug)]
pub struct Ruleset {
    /// `lists:` by name, as conditions read them (`lists.<name>`).
    pub lists: BTreeMap<String, Vec<serde_json::Value>>,
    pub scoring: Vec<ScoringRule>,
    /// Scoring rules per event type, `*` rules merged in file order.
    by_type: foldhash::HashMap<String, Vec<usize>>,
    /// Rules for event types no rule names: the `*` rules.
    any_type: Vec<usize>,
    /// Indexes of `schedule` rules.
    pub scheduled: Vec<usize>,
    pub fit: Vec<FitRule>,
    pub plugins: Vec<Plugin>,
    /// Highest stage first.
    pub stages: Vec<(Stage, Condition)>,
    pub templates: BTreeMap<String, config::Template>,
    pub campaigns: Vec<Campaign>,
    pub owners: Vec<Owner>,
    pub route_rules: Vec<RouteRule>,
    pub sla: Option<Sla>,
    pub recycle_score: i64,
    pub webhooks: Vec<WebhookTarget>,
    pub settings: Settings,
    /// Identifies these rules, so cached condition results on a lead are
    /// reused only with the rules that produced them.
    pub fingerprint: u64,
    /// Whether a condition after scoring (fit, stages, campaigns, routing)
    /// reads `now`: if none does, a schedule tick that scored nothing changes nothing.
    pub settle_reads_now: bool,
    /// Identifies what a lead's stored tick wake (eval::Wake) was computed
    /// from: the `schedule` rules' names and conditions, the lists they
    /// read and whether settling reads the clock. The same across releases
    /// and restarts; a wake stored
    /// under another key is computed again.
    pub wake_key: i64,
    /// The files the rules came from (for reloads and summaries).
    pub files: Vec<PathBuf>,
    pub(crate) cel: CelEnv,
}

impl std::fmt::Debug for CelEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CelEnv")
    }
}

#[derive(Debug, Clone)]
pub enum Trigger {
    /// Event types; `*` is any.
    Events(Vec<String>),
    Schedule(Box<cron::Schedule>),
}

#[derive(Debug, Clone)]
pub struct ScoringRule {
    pub name: String,
    pub trigger: Trigger,
    pub condition: Option<Condition>,
    pub points: i64,
    /// (times, window); no window = lifetime.
    pub limit: Option<(u32, Option<Duration>)>,
    /// Where each of `on`'s event types was written (messages empty), for
    /// `nurture check --events`.
    pub on_at: Vec<super::Diagnostic>,
}

#[derive(Debug, Clone)]
pub struct FitRule {
    pub name: String,
    pub condition: Condition,
    pub points: i64,
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: String,
    pub wasm: PathBuf,
    /// Event types; `*` is any.
    pub on: Vec<String>,
    /// The config as a JSON string, as plugins receive it.
    pub config_json: String,
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout: Duration,
    /// Where `wasm:` was written (message empty): problems with the file
    /// found later (`nurture check` loading it) are reported there.
    pub wasm_at: super::Diagnostic,
    /// Where `config:` was written (the plugin's entry, without one): a
    /// config the plugin refuses (`nurture check` asks it) is reported there.
    pub config_at: super::Diagnostic,
}

#[derive(Debug, Clone)]
pub struct Campaign {
    pub name: String,
    pub enroll: Condition,
    pub exit: Option<Condition>,
    pub window: Option<cron::Schedule>,
    pub zone: Option<ZoneSpec>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub timing: Timing,
    pub template: String,
    pub condition: Option<Condition>,
}

/// When a drip step is due (docs/rules.md, Drip timing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// `after`: this long after the previous step was sent or skipped (the
    /// first step: after enrolling).
    After(Duration),
    /// `at`: this long after enrolling, so a late step does not delay the
    /// ones after it; never before the previous step was sent or skipped.
    At(Duration),
}

impl Step {
    /// When the step is due for an enrollment made at `enrolled_at`, the
    /// step before it sent or skipped at `previous` (the first step: the
    /// enrollment itself).
    pub fn due(&self, enrolled_at: Timestamp, previous: Timestamp) -> Timestamp {
        match self.timing {
            Timing::After(d) => previous + d,
            Timing::At(d) => (enrolled_at + d).max(previous),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Owner {
    pub id: String,
    pub email: String,
    pub capacity: Option<u32>,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct RouteRule {
    pub name: String,
    pub condition: Option<Condition>,
    /// Indexes into `Ruleset::owners`, in the rule's order.
    pub owners: Vec<usize>,
    pub strategy: Strategy,
    /// `claim` rules: how long an offer stands before it expires.
    pub claim_within: Option<Duration>,
    /// Who gets a lead whose offer expired (an index into `Ruleset::owners`);
    /// `None`: it falls through to the next rule.
    pub fallback: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Sla {
    pub accept_within: Duration,
    pub notify: Option<String>,
    pub on_breach: OnBreach,
    /// Breaches that restart the clock; the next one stops it for good.
    pub max_reassign: u32,
    /// Who gets the lead when the clock stops (an index into `Ruleset::owners`).
    pub fallback: Option<usize>,
}

/// `routing.sla.max_reassign` when not given: a lead nobody answers sees
/// three owners' turns at most (the first and two more), then stops.
pub const DEFAULT_MAX_REASSIGN: u32 = 2;

#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub name: String,
    pub url: String,
    pub on: Vec<WebhookEvent>,
    pub secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub from: Option<String>,
    pub require_consent: bool,
    pub frequency_cap: Option<(u32, Duration)>,
    /// `settings.numbers`: attribute keys whose text values are read as
    /// numbers when traits merge (`"1,500"` → 1500), without repeats.
    pub numbers: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            from: None,
            require_consent: true,
            frequency_cap: None,
            numbers: Vec::new(),
        }
    }
}

pub const DEFAULT_FUEL: u64 = 10_000_000;
pub const DEFAULT_MEMORY: u64 = 16 << 20;
pub const DEFAULT_TIMEOUT_MS: i64 = 100;

impl Ruleset {
    /// Loads and compiles every rules file under `dir`.
    pub fn load(dir: &Path) -> Result<Ruleset, Diagnostics> {
        compile(super::load_dir(dir))
    }

    /// Compiles one rules file given as text; `path` names it in diagnostics.
    pub fn from_text(path: &Path, text: &str) -> Result<Ruleset, Diagnostics> {
        compile(super::load_text(path, text))
    }

    /// A scoring rule's `limit: times`, if it has a limit.
    pub fn limit_times(&self, rule: &str) -> Option<u32> {
        self.scoring
            .iter()
            .find(|r| r.name == rule)
            .and_then(|r| r.limit.map(|(times, _)| times))
    }

    /// How many sends the frequency cap counts (`max`), if there is one.
    pub fn cap_max(&self) -> Option<u32> {
        self.settings.frequency_cap.map(|(max, _)| max)
    }

    /// Scoring rules triggered by an event type, in file order.
    pub fn scoring_for(&self, kind: &str) -> &[usize] {
        self.by_type
            .get(kind)
            .map(Vec::as_slice)
            .unwrap_or(&self.any_type)
    }

    pub fn owner_index(&self, id: &str) -> Option<usize> {
        self.owners.iter().position(|o| o.id == id)
    }

    pub fn webhooks_for(&self, ev: WebhookEvent) -> impl Iterator<Item = &WebhookTarget> {
        self.webhooks.iter().filter(move |w| w.on.contains(&ev))
    }

    pub fn cel_context(&self) -> cel::Context<'static, 'static> {
        self.cel.context()
    }

    /// One line for `nurture check`.
    pub fn summary(&self) -> String {
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        format!(
            "{}: {}, {}, {}, {}, {}, {}, {}, {}, {}",
            n(self.files.len(), "file", "files"),
            n(self.scoring.len(), "scoring rule", "scoring rules"),
            n(self.fit.len(), "fit rule", "fit rules"),
            n(self.plugins.len(), "plugin", "plugins"),
            n(self.stages.len(), "stage", "stages"),
            n(self.templates.len(), "template", "templates"),
            n(self.campaigns.len(), "campaign", "campaigns"),
            n(self.owners.len(), "owner", "owners"),
            n(self.route_rules.len(), "routing rule", "routing rules"),
            n(self.webhooks.len(), "webhook", "webhooks"),
        )
    }
}

/// Compiles what was loaded, adding every problem found to its diagnostics.
/// Sections are compiled in this order, each by its own method, so their
/// diagnostics come in the same order (then sorted into file order).
pub fn compile(mut l: Loaded) -> Result<Ruleset, Diagnostics> {
    // Lists first: conditions are compiled against them.
    let lists = compile_lists(&mut l);
    let cel = CelEnv::with_lists(&lists);
    let mut c = Compiler {
        l: &mut l,
        cel: &cel,
    };
    let scoring = c.scoring_rules();
    let fit = c.fit_rules();
    let plugins = c.plugins();
    let stages = c.stages();
    let templates = c.templates();
    let campaigns = c.campaigns(&templates);
    let owners = c.owners();
    let route_rules = c.route_rules(&owners);
    let sla = c.sla(&owners);
    let recycle_score = c.l.recycle_score.take().map(|i| i.value).unwrap_or(0);
    let webhooks = c.webhooks();
    let mut settings = c.settings();
    settings.numbers = c.numbers();

    if !l.diagnostics.is_empty() {
        // Shapes are checked before references: put it all in file order.
        let rank = |file: &str| l.order.iter().position(|f| f == file).unwrap_or(usize::MAX);
        l.diagnostics
            .sort_by_key(|d| (rank(&d.file), d.pos.line, d.pos.col));
        return Err(Diagnostics(l.diagnostics));
    }

    let (by_type, any_type, scheduled) = index_triggers(&scoring);
    // A fresh number per compiled ruleset: condition slots are only
    // meaningful within one compilation.
    static COMPILATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let fingerprint = COMPILATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let settle_reads_now = settle_reads_now(&fit, &stages, &campaigns, &route_rules);

    let wake_key = wake_key(&scoring, &scheduled, &lists, settle_reads_now);
    Ok(Ruleset {
        lists,
        fingerprint,
        settle_reads_now,
        wake_key,
        scoring,
        by_type,
        any_type,
        scheduled,
        fit,
        plugins,
        stages,
        templates,
        campaigns,
        owners,
        route_rules,
        sla,
        recycle_score,
        webhooks,
        settings,
        files: l.files.iter().map(|f| f.path.clone()).collect(),
        cel,
    })
}

/// Scoring rules by the event type that triggers them (with the `*` rules),
/// the `*` rules, and the scheduled ones.
fn index_triggers(
    scoring: &[ScoringRule],
) -> (
    foldhash::HashMap<String, Vec<usize>>,
    Vec<usize>,
    Vec<usize>,
) {
    let mut by_type: foldhash::HashMap<String, Vec<usize>> = foldhash::HashMap::default();
    let mut any_type = Vec::new();
    let mut scheduled = Vec::new();
    for (i, r) in scoring.iter().enumerate() {
        match &r.trigger {
            Trigger::Schedule(_) => scheduled.push(i),
            Trigger::Events(types) if types.iter().any(|t| t == "*") => any_type.push(i),
            Trigger::Events(types) => {
                for t in types {
                    by_type.entry(t.clone()).or_default().push(i);
                }
            }
        }
    }
    // A type's list holds its own rules and the `*` rules, in file order.
    for list in by_type.values_mut() {
        list.extend(&any_type);
        list.sort_unstable();
        list.dedup();
    }
    (by_type, any_type, scheduled)
}

/// See [`Ruleset::wake_key`]. The version string changes whenever the
/// analysis (cel::wake) does.
fn wake_key(
    scoring: &[ScoringRule],
    scheduled: &[usize],
    lists: &BTreeMap<String, Vec<serde_json::Value>>,
    settle_reads_now: bool,
) -> i64 {
    use crate::model::partition::{fnv1a, FNV_OFFSET};
    let mut h = fnv1a(FNV_OFFSET, b"tick-wake-1");
    h = fnv1a(h, &[u8::from(settle_reads_now)]);
    let part = |h: u64, part: &str| {
        let h = fnv1a(h, &(part.len() as u64).to_le_bytes());
        fnv1a(h, part.as_bytes())
    };
    let mut reads_lists = false;
    for &i in scheduled {
        let r = &scoring[i];
        let cond = r.condition.as_ref().map_or("", |c| &c.source);
        reads_lists |= r.condition.as_ref().is_some_and(|c| c.reads_lists());
        h = part(h, &r.name);
        h = part(h, cond);
    }
    // A list changes what a `schedule` condition means, hence its wakes.
    // Only then: rules without lists keep the key they had.
    if reads_lists {
        for (name, values) in lists {
            h = part(h, name);
            h = part(h, &serde_json::Value::from(values.clone()).to_string());
        }
    }
    h as i64
}

/// `lists:`: names that conditions can read (`lists.<name>`), each once
/// across files. The values were checked when read (config::ListSpec).
fn compile_lists(l: &mut Loaded) -> BTreeMap<String, Vec<serde_json::Value>> {
    let items = std::mem::take(&mut l.lists);
    let mut out = BTreeMap::new();
    let mut first: HashMap<&str, &Loc> = HashMap::new();
    for it in &items {
        let name = it.value.0.as_str();
        let pos = l.files[it.loc.file].map.key_pos(&it.loc.path);
        let ident = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            let d = l.diag(
                &it.loc,
                pos,
                format!("lists: list name `{name}` must be letters, digits and `_` (conditions read it as `lists.{name}`), e.g. `target_countries`"),
            );
            l.diagnostics.push(d);
            continue;
        }
        if let Some(at) = first.get(name) {
            let msg = format!(
                "duplicate list name `{name}` (first defined at {})",
                l.describe(at)
            );
            let d = l.diag(&it.loc, pos, msg);
            l.diagnostics.push(d);
            continue;
        }
        first.insert(name, &it.loc);
        out.insert(name.to_string(), it.value.1 .0.clone());
    }
    out
}

/// Whether a condition evaluated while a lead settles reads `now`.
fn settle_reads_now(
    fit: &[FitRule],
    stages: &[(Stage, Condition)],
    campaigns: &[Campaign],
    route_rules: &[RouteRule],
) -> bool {
    let settle_conditions = fit
        .iter()
        .map(|r: &FitRule| &r.condition)
        .chain(stages.iter().map(|(_, c)| c))
        .chain(campaigns.iter().flat_map(|c: &Campaign| {
            std::iter::once(&c.enroll)
                .chain(c.exit.iter())
                .chain(c.steps.iter().filter_map(|s| s.condition.as_ref()))
        }))
        .chain(
            route_rules
                .iter()
                .filter_map(|r: &RouteRule| r.condition.as_ref()),
        );
    settle_conditions.into_iter().any(|c| c.deps.now)
}

struct Compiler<'a> {
    l: &'a mut Loaded,
    cel: &'a CelEnv,
}

impl Compiler<'_> {
    /// `scoring:`
    fn scoring_rules(&mut self) -> Vec<ScoringRule> {
        let scoring_items = std::mem::take(&mut self.l.scoring);
        self.unique(&scoring_items, "scoring rule", |r| &r.name);
        scoring_items
            .iter()
            .filter_map(|it| self.scoring(it))
            .collect()
    }

    /// `fit:`
    fn fit_rules(&mut self) -> Vec<FitRule> {
        let fit_items = std::mem::take(&mut self.l.fit);
        self.unique(&fit_items, "fit rule", |r| &r.name);
        fit_items
            .iter()
            .filter_map(|it| {
                let condition = self.cel(&it.loc.key("if"), &it.value.condition, &it.value.name)?;
                Some(FitRule {
                    name: it.value.name.clone(),
                    condition,
                    points: it.value.points,
                })
            })
            .collect()
    }

    /// `plugins:`
    fn plugins(&mut self) -> Vec<Plugin> {
        let plugin_items = std::mem::take(&mut self.l.plugins);
        self.unique(&plugin_items, "plugin", |r| &r.name);
        plugin_items
            .iter()
            .filter_map(|it| self.plugin(it))
            .collect()
    }

    /// `stages:`, highest first.
    fn stages(&mut self) -> Vec<(Stage, Condition)> {
        let mut stages = Vec::new();
        for (stage, item) in std::mem::take(&mut self.l.stages) {
            if let Some(cond) = self.cel(&item.loc, &item.value, &format!("stages.{stage}")) {
                stages.push((stage, cond));
            }
        }
        stages.sort_by_key(|s| std::cmp::Reverse(s.0));
        stages
    }

    /// `templates:`, each checked; the first of a name is kept.
    fn templates(&mut self) -> BTreeMap<String, config::Template> {
        let template_items = std::mem::take(&mut self.l.templates);
        self.unique(&template_items, "template", |t| &t.name);
        let mut templates = BTreeMap::new();
        for it in &template_items {
            self.template(&it.loc.key("subject"), &it.value.subject);
            self.template(&it.loc.key("text"), &it.value.text);
            if let Some(html) = &it.value.html {
                self.template(&it.loc.key("html"), html);
            }
            templates
                .entry(it.value.name.clone())
                .or_insert_with(|| it.value.clone());
        }
        templates
    }

    /// `campaigns:`, their steps' templates resolved.
    fn campaigns(&mut self, templates: &BTreeMap<String, config::Template>) -> Vec<Campaign> {
        let campaign_items = std::mem::take(&mut self.l.campaigns);
        self.unique(&campaign_items, "campaign", |x| &x.name);
        campaign_items
            .iter()
            .filter_map(|it| self.campaign(it, templates))
            .collect()
    }

    /// `owners:`; the first of an id is kept.
    fn owners(&mut self) -> Vec<Owner> {
        let owner_items = std::mem::take(&mut self.l.owners);
        self.unique(&owner_items, "owner", |o| &o.id);
        let mut owners: Vec<Owner> = Vec::new();
        for it in &owner_items {
            let o = &it.value;
            if !o.email.contains('@') {
                self.l.error(
                    &it.loc.key("email"),
                    format!("owner `{}`: {:?} is not an email address", o.id, o.email),
                );
            }
            if o.weight == Some(0) {
                self.l
                    .error(&it.loc.key("weight"), "weight must be at least 1");
            }
            if owners.iter().any(|x| x.id == o.id) {
                continue;
            }
            owners.push(Owner {
                id: o.id.clone(),
                email: o.email.clone(),
                capacity: o.capacity,
                weight: o.weight.unwrap_or(1),
            });
        }
        owners
    }

    /// `routing.rules:`, their owners resolved.
    fn route_rules(&mut self, owners: &[Owner]) -> Vec<RouteRule> {
        let rule_items = std::mem::take(&mut self.l.route_rules);
        self.unique(&rule_items, "routing rule", |r| &r.name);
        rule_items
            .iter()
            .filter_map(|it| self.route_rule(it, owners))
            .collect()
    }

    /// `routing.sla:`
    fn sla(&mut self, owners: &[Owner]) -> Option<Sla> {
        self.l.sla.take().map(|it| {
            let fallback = it.value.fallback.as_ref().and_then(|f| {
                self.owner_ref(&it.loc.key("fallback"), "routing.sla: fallback", f, owners)
            });
            if let Some(n) = &it.value.notify {
                if !n.contains('@') {
                    self.l.error(
                        &it.loc.key("notify"),
                        format!("{n:?} is not an email address"),
                    );
                }
            }
            Sla {
                accept_within: it.value.accept_within.0,
                notify: it.value.notify.clone(),
                on_breach: it.value.on_breach.unwrap_or(OnBreach::Notify),
                max_reassign: it.value.max_reassign.unwrap_or(DEFAULT_MAX_REASSIGN),
                fallback,
            }
        })
    }

    /// `webhooks:`
    fn webhooks(&mut self) -> Vec<WebhookTarget> {
        let webhook_items = std::mem::take(&mut self.l.webhooks);
        self.unique(&webhook_items, "webhook", |w| &w.name);
        webhook_items
            .iter()
            .map(|it| {
                let w = &it.value;
                if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                    self.l.error(
                        &it.loc.key("url"),
                        format!(
                            "webhook `{}`: url must start with http:// or https://",
                            w.name
                        ),
                    );
                }
                if w.on.is_empty() {
                    self.l.error(
                        &it.loc.key("on"),
                        format!("webhook `{}`: list at least one event", w.name),
                    );
                }
                WebhookTarget {
                    name: w.name.clone(),
                    url: w.url.clone(),
                    on: w.on.clone(),
                    secret: w.secret.clone(),
                }
            })
            .collect()
    }

    /// `email:` settings.
    fn settings(&mut self) -> Settings {
        match self.l.email.take() {
            None => Settings::default(),
            Some(it) => {
                let e = &it.value;
                if !e.from.contains('@') {
                    self.l.error(
                        &it.loc.key("from"),
                        format!("{:?} is not an email address", e.from),
                    );
                }
                if let Some(cap) = &e.frequency_cap {
                    if cap.max == 0 {
                        self.l.error(
                            &it.loc.key("frequency_cap").key("max"),
                            "max must be at least 1",
                        );
                    }
                }
                Settings {
                    from: Some(e.from.clone()),
                    require_consent: e.require_consent.unwrap_or(true),
                    frequency_cap: e.frequency_cap.as_ref().map(|f| (f.max, f.per.0)),
                    numbers: Vec::new(),
                }
            }
        }
    }

    fn cel(&mut self, loc: &Loc, source: &str, label: &str) -> Option<Condition> {
        match self.cel.compile(source) {
            Ok(c) => Some(c.labeled(label)),
            Err(errors) => {
                for e in errors {
                    self.l.error_inside(
                        loc,
                        e.line,
                        e.col,
                        format!("{}: CEL: {}", loc.path, e.message),
                    );
                }
                None
            }
        }
    }

    fn opt_cel(
        &mut self,
        loc: &Loc,
        source: &Option<String>,
        label: &str,
    ) -> Result<Option<Condition>, ()> {
        match source {
            None => Ok(None),
            Some(s) => self.cel(loc, s, label).map(Some).ok_or(()),
        }
    }

    fn unique<T>(&mut self, items: &[Item<T>], kind: &str, name: impl Fn(&T) -> &String) {
        let mut seen: HashMap<&str, &Loc> = HashMap::new();
        for it in items {
            let n = name(&it.value);
            let key = if kind == "owner" { "id" } else { "name" };
            if let Some(first) = seen.get(n.as_str()) {
                let msg = format!(
                    "duplicate {kind} name `{n}` (first defined at {})",
                    self.l.describe(&first.key(key))
                );
                self.l.error(&it.loc.key(key), msg);
            } else {
                seen.insert(n, &it.loc);
            }
        }
    }

    fn scoring(&mut self, it: &Item<config::ScoringRule>) -> Option<ScoringRule> {
        let r = &it.value;
        let trigger = match (&r.on, &r.schedule) {
            (Some(on), None) => Some(Trigger::Events(on.0.clone())),
            (None, Some(s)) => Some(Trigger::Schedule(Box::new(s.schedule.clone()))),
            (Some(_), Some(_)) => {
                self.l.error(
                    &it.loc.key("schedule"),
                    format!(
                        "scoring rule `{}`: give `on` or `schedule`, not both",
                        r.name
                    ),
                );
                None
            }
            (None, None) => {
                self.l.error(
                    &it.loc,
                    format!(
                        "scoring rule `{}`: needs `on` (event types) or `schedule` (cron)",
                        r.name
                    ),
                );
                None
            }
        };
        let condition = self.opt_cel(&it.loc.key("if"), &r.condition, &r.name);
        let limit = match &r.limit {
            Some(l) if l.times == 0 => {
                self.l.error(
                    &it.loc.key("limit").key("times"),
                    "times must be at least 1",
                );
                None
            }
            Some(l) => Some((l.times, l.per.map(|p| p.0))),
            None => None,
        };
        let on_at = match &r.on {
            Some(on) if on.0.len() > 1 => (0..on.0.len())
                .map(|i| self.l.at_value(&it.loc.key("on").index(i)))
                .collect(),
            Some(_) => vec![self.l.at_value(&it.loc.key("on"))],
            None => Vec::new(),
        };
        Some(ScoringRule {
            on_at,
            name: r.name.clone(),
            trigger: trigger?,
            condition: condition.ok()?,
            points: r.points,
            limit,
        })
    }

    fn plugin(&mut self, it: &Item<config::PluginRule>) -> Option<Plugin> {
        let p = &it.value;
        let base = self.l.files[it.loc.file]
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let wasm = base.join(&p.wasm);
        let mut ok = true;
        if !wasm.is_file() {
            self.l.error(
                &it.loc.key("wasm"),
                format!("plugin `{}`: no file at {}", p.name, wasm.display()),
            );
            ok = false;
        }
        let config_json = match &p.config {
            None => "{}".to_string(),
            Some(v) => match serde_json::to_value(v) {
                Ok(j) => j.to_string(),
                Err(e) => {
                    self.l.error(
                        &it.loc.key("config"),
                        format!("plugin `{}`: config cannot be JSON: {e}", p.name),
                    );
                    ok = false;
                    String::new()
                }
            },
        };
        let wasm_at = self.l.at_value(&it.loc.key("wasm"));
        let config_at = match &p.config {
            Some(_) => self.l.at_value(&it.loc.key("config")),
            None => self.l.at_value(&it.loc),
        };
        ok.then(|| Plugin {
            wasm_at,
            config_at,
            name: p.name.clone(),
            wasm,
            on: p.on.0.clone(),
            config_json,
            fuel: p.fuel.unwrap_or(DEFAULT_FUEL),
            memory_bytes: p.memory.map(|m| m.0).unwrap_or(DEFAULT_MEMORY),
            timeout: p
                .timeout
                .map(|t| t.0)
                .unwrap_or(Duration::milliseconds(DEFAULT_TIMEOUT_MS)),
        })
    }

    fn template(&mut self, loc: &Loc, source: &str) {
        let env = minijinja::Environment::new();
        match env.template_from_str(source) {
            Ok(t) => {
                for p in super::templates::check(&env, &t, source) {
                    let (line, col) = line_col(source, p.offset);
                    self.l.error_inside(
                        loc,
                        line,
                        col,
                        format!("{}: template: {}", loc.path, p.message),
                    );
                }
            }
            Err(e) => self.template_syntax(loc, source, &e),
        }
    }

    fn template_syntax(&mut self, loc: &Loc, source: &str, e: &minijinja::Error) {
        {
            let (line, col) = match e.range() {
                Some(r) => line_col(source, r.start),
                None => (e.line().unwrap_or(1), 1),
            };
            let detail = e
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| e.kind().to_string());
            self.l.error_inside(
                loc,
                line,
                col,
                format!("{}: template syntax: {detail}", loc.path),
            );
        }
    }

    fn campaign(
        &mut self,
        it: &Item<config::Campaign>,
        templates: &BTreeMap<String, config::Template>,
    ) -> Option<Campaign> {
        let c = &it.value;
        let enroll = self.cel(
            &it.loc.key("enroll"),
            &c.enroll,
            &format!("campaigns.{}.enroll", c.name),
        );
        let exit = self.opt_cel(
            &it.loc.key("exit"),
            &c.exit,
            &format!("campaigns.{}.exit", c.name),
        );
        if c.steps.is_empty() {
            self.l.error(
                &it.loc.key("steps"),
                format!("campaign `{}`: needs at least one step", c.name),
            );
        }
        let mut steps = Vec::new();
        let mut ok = true;
        // The earliest a step can be due, after enrolling: what an `at`
        // earlier than that would never mean.
        let mut earliest = Some(Duration::zero());
        for (i, s) in c.steps.iter().enumerate() {
            let sloc = it.loc.key("steps").index(i);
            if !templates.contains_key(&s.template) {
                let hint = super::suggest(&s.template, templates.keys().map(String::as_str))
                    .map(|t| format!(" (did you mean `{t}`?)"))
                    .unwrap_or_default();
                self.l.error(
                    &sloc.key("template"),
                    format!(
                        "campaign `{}` step {}: unknown template `{}`{hint}",
                        c.name,
                        i + 1,
                        s.template
                    ),
                );
                ok = false;
            }
            let timing = self.timing(&sloc, s, &c.name, i, &mut earliest);
            let condition = self.opt_cel(
                &sloc.key("if"),
                &s.condition,
                &format!("campaigns.{}.steps[{}].if", c.name, i + 1),
            );
            match (timing, condition) {
                (Some(timing), Ok(condition)) => steps.push(Step {
                    timing,
                    template: s.template.clone(),
                    condition,
                }),
                _ => ok = false,
            }
        }
        let (enroll, exit) = (enroll?, exit.ok()?);
        (ok && !steps.is_empty()).then(|| Campaign {
            name: c.name.clone(),
            enroll,
            exit,
            window: c.window.as_ref().map(|w| w.schedule.clone()),
            zone: c.timezone.clone(),
            steps,
        })
    }

    /// A step's `after` or `at` (exactly one). `earliest` is how soon after
    /// enrolling the step before could be due (`None` if unknown), and
    /// becomes this step's.
    fn timing(
        &mut self,
        sloc: &Loc,
        s: &config::Step,
        campaign: &str,
        i: usize,
        earliest: &mut Option<Duration>,
    ) -> Option<Timing> {
        let what = format!("campaign `{campaign}` step {}", i + 1);
        let timing = match (s.after, s.at) {
            (Some(after), None) => Timing::After(after.0),
            (None, Some(at)) => Timing::At(at.0),
            (Some(_), Some(_)) => {
                self.l.error(
                    &sloc.key("at"),
                    format!("{what}: give `after` (since the previous step) or `at` (since enrolling), not both"),
                );
                *earliest = None;
                return None;
            }
            (None, None) => {
                self.l.error(
                    sloc,
                    format!("{what}: needs `after` (time since the previous step, e.g. `after: 3d`) or `at` (time since enrolling, e.g. `at: 7d`)"),
                );
                *earliest = None;
                return None;
            }
        };
        *earliest = match (timing, *earliest) {
            (Timing::After(d), e) => e.and_then(|e| e.checked_add(&d)),
            (Timing::At(d), Some(e)) if d < e => {
                self.l.error(
                    &sloc.key("at"),
                    format!(
                        "{what}: `at: {}` comes before the step above can (at the earliest {} after enrolling), so it would always go out right after it; write `at: {}` or later",
                        crate::model::time::format_span(&d),
                        crate::model::time::format_span(&e),
                        crate::model::time::format_span(&e),
                    ),
                );
                Some(e)
            }
            (Timing::At(d), _) => Some(d),
        };
        Some(timing)
    }

    /// `settings.numbers`: attribute keys, each non-empty; repeats are harmless.
    fn numbers(&mut self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for it in std::mem::take(&mut self.l.numbers) {
            if it.value.trim().is_empty() {
                self.l.error(
                    &it.loc,
                    "settings.numbers: an attribute key must not be empty",
                );
            } else if !out.contains(&it.value) {
                out.push(it.value);
            }
        }
        out
    }

    fn route_rule(&mut self, it: &Item<config::RouteRule>, owners: &[Owner]) -> Option<RouteRule> {
        let r = &it.value;
        let condition = self.opt_cel(
            &it.loc.key("if"),
            &r.condition,
            &format!("routing.{}", r.name),
        );
        let mut idx = Vec::new();
        if r.owners.is_empty() {
            self.l.error(
                &it.loc.key("owners"),
                format!("routing rule `{}`: list at least one owner", r.name),
            );
        }
        let what = format!("routing rule `{}`", r.name);
        for (i, o) in r.owners.iter().enumerate() {
            if let Some(p) = self.owner_ref(&it.loc.key("owners").index(i), &what, o, owners) {
                idx.push(p);
            }
        }
        // Keys that would read nothing at run time are errors, not silence.
        if r.claim_within.is_some() && r.strategy != Strategy::Claim {
            self.l.error(
                &it.loc.key("claim_within"),
                format!("{what}: claim_within is only for `strategy: claim` (an offer that nobody claimed)"),
            );
        }
        if r.claim_within.is_some_and(|d| d.0 <= Duration::zero()) {
            self.l.error(
                &it.loc.key("claim_within"),
                format!("{what}: claim_within must be longer than 0s"),
            );
        }
        let fallback = match &r.fallback {
            None => None,
            Some(_) if r.claim_within.is_none() => {
                self.l.error(
                    &it.loc.key("fallback"),
                    format!("{what}: fallback needs claim_within (it is who gets a lead nobody claimed in time)"),
                );
                None
            }
            Some(f) => self.owner_ref(
                &it.loc.key("fallback"),
                &format!("{what}: fallback"),
                f,
                owners,
            ),
        };
        let condition = condition.ok()?;
        (idx.len() == r.owners.len() && !idx.is_empty()).then(|| RouteRule {
            name: r.name.clone(),
            condition,
            owners: idx,
            strategy: r.strategy,
            claim_within: r.claim_within.map(|d| d.0),
            fallback,
        })
    }

    /// An owner named at `at`: its index, or an error there (with the
    /// nearest known id as a hint). `what` names the place in the message.
    fn owner_ref(&mut self, at: &Loc, what: &str, id: &str, owners: &[Owner]) -> Option<usize> {
        let p = owners.iter().position(|x| x.id == id);
        if p.is_none() {
            let hint = super::suggest(id, owners.iter().map(|x| x.id.as_str()))
                .map(|t| format!(" (did you mean `{t}`?)"))
                .unwrap_or_default();
            self.l
                .error(at, format!("{what}: unknown owner `{id}`{hint}"));
        }
        p
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(s: &str, offset: usize) -> (usize, usize) {
    let before = &s[..offset.min(s.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}
