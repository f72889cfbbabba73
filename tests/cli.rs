//! End-to-end tests of the `nurture` binary: the commands of SPEC section 4
//! as users run them, on the example rules in `rules/` and on scratch rules
//! directories written by each test.
//!
//! Rules errors are checked by their exact `file:line:col:` place, where the
//! file is the path as given on the command line.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// The repository root, where `rules/` and `tests/` live.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_no_panic(&self) {
        assert_ne!(
            self.code,
            Some(101),
            "the binary panicked:\n{}",
            self.stderr
        );
        assert!(
            self.code.is_some(),
            "the binary was killed by a signal:\n{}",
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the binary panicked:\n{}",
            self.stderr
        );
    }
}

/// Runs `nurture args...` in `cwd`.
fn nurture_in(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        // Compiled plugins of the example rules: cached per test build.
        .env(
            "NURTURE_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"),
        )
        .output()
        .expect("the nurture binary runs");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    };
    run.assert_no_panic();
    run
}

/// Runs `nurture args...` at the repository root.
fn nurture(args: &[&str]) -> Run {
    nurture_in(&repo(), args)
}

/// A scratch directory holding a rules directory `rules/`.
struct Scratch {
    tmp: TempDir,
}

impl Scratch {
    /// Writes `files` (path relative to `rules/`, content) into `rules/`.
    fn new(files: &[(&str, &str)]) -> Scratch {
        let tmp = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(tmp.path().join("rules")).expect("rules/ is created");
        let s = Scratch { tmp };
        for (name, content) in files {
            s.write(name, content.as_bytes());
        }
        s
    }

    fn write(&self, name: &str, content: &[u8]) {
        let path = self.rules().join(name);
        std::fs::create_dir_all(path.parent().expect("a file has a parent"))
            .expect("dirs are created");
        std::fs::write(path, content).expect("the file is written");
    }

    /// The rules directory, an absolute path.
    fn rules(&self) -> PathBuf {
        self.tmp.path().join("rules")
    }

    fn rules_arg(&self) -> String {
        self.rules().display().to_string()
    }

    /// `nurture check <absolute rules dir>`.
    fn check(&self) -> Run {
        nurture(&["check", &self.rules_arg()])
    }

    /// The place `<rules dir>/<file>:<line>:<col>:` as printed.
    fn at(&self, file: &str, line: usize, col: usize) -> String {
        format!("{}/{file}:{line}:{col}:", self.rules_arg())
    }
}

/// Asserts that `check` failed with exactly `expected` errors, in order:
/// each line starts with its place and contains the given part of the
/// message; a last line counts them.
#[track_caller]
fn assert_errors(s: &Scratch, expected: &[(String, &str)]) {
    let run = s.check();
    assert_eq!(run.code, Some(1), "check should fail:\n{run:#?}");
    assert_eq!(run.stdout, "", "nothing on stdout when rules are bad");
    let lines: Vec<&str> = run.stderr.lines().collect();
    let (summary, errors) = lines.split_last().expect("stderr has lines");
    assert_eq!(errors.len(), expected.len(), "error lines:\n{}", run.stderr);
    for (line, (place, part)) in errors.iter().zip(expected) {
        let rest = line
            .strip_prefix(place.as_str())
            .unwrap_or_else(|| panic!("expected the place {place}, got:\n{line}"));
        assert!(rest.starts_with(' '), "a space follows the place: {line}");
        assert!(rest.contains(part), "expected {part:?} in:\n{line}");
    }
    let n = expected.len();
    let plural = if n == 1 { "" } else { "s" };
    assert_eq!(*summary, format!("{n} error{plural} in {}", s.rules_arg()));
}

/// The single error of a scratch directory holding one file, `a.yaml`.
#[track_caller]
fn assert_one_error(yaml: &str, line: usize, col: usize, part: &str) {
    let s = Scratch::new(&[("a.yaml", yaml)]);
    assert_errors(&s, &[(s.at("a.yaml", line, col), part)]);
}

const TEMPLATES: &str = "\
templates:
  - name: welcome
    subject: Hi
    text: Hello
";

// ---------------------------------------------------------------------------
// 1. `check` on the example rules

#[test]
fn check_accepts_the_example_rules_with_a_one_line_summary() {
    let run = nurture(&["check", "rules"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stderr, "");
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with("rules ok: 4 files: 6 scoring rules, 3 fit rules, 2 plugins"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 campaign, 3 owners, 2 routing rules"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_reads_the_rules_dir_by_default() {
    assert_eq!(nurture(&["check"]).code, Some(0));
}

#[test]
fn check_of_a_missing_or_empty_dir_fails() {
    let s = Scratch::new(&[]);
    assert_errors(
        &s,
        &[(
            format!("{}:1:1:", s.rules_arg()),
            "no *.yaml rules files here",
        )],
    );
    let run = nurture(&["check", "/nonexistent/rules"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with("/nonexistent/rules:1:1: not a directory"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// 2. `simulate`: the golden file

const SIMULATE: [&str; 6] = [
    "simulate",
    "rules",
    "--events",
    "rules/events.jsonl",
    "--until",
    "2026-02-20T00:00:00Z",
];

/// The golden file was made by the binary and checked by hand against SPEC
/// sections 3 and 4. When the example rules or events change, regenerate it
/// (`cargo run -q --bin nurture -- simulate rules --events rules/events.jsonl
/// --until 2026-02-20T00:00:00Z > tests/golden/simulate.jsonl`) and read the
/// diff before committing it.
#[test]
fn simulate_matches_the_golden_file() {
    let run = nurture(&SIMULATE);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stderr, "");
    let golden = std::fs::read_to_string(repo().join("tests/golden/simulate.jsonl"))
        .expect("the golden file");
    assert!(
        run.stdout == golden,
        "simulate output differs from tests/golden/simulate.jsonl\n--- got:\n{}--- want:\n{golden}",
        run.stdout
    );
}

#[test]
fn simulate_is_deterministic() {
    let a = nurture(&SIMULATE);
    let b = nurture(&SIMULATE);
    assert_eq!(a.code, Some(0));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn simulate_prints_one_line_per_lead_ordered_by_id_with_the_spec_keys() {
    const KEYS: [&str; 10] = [
        "lead",
        "stage",
        "score",
        "fit",
        "owner",
        "consent",
        "ledger",
        "transitions",
        "emails",
        "assignments",
    ];
    let run = nurture(&SIMULATE);
    let leads: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(leads.len(), 3);
    let ids: Vec<&str> = leads
        .iter()
        .map(|l| l["lead"].as_str().expect("lead is a string"))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "lines are ordered by lead id");
    for lead in &leads {
        let keys: Vec<&str> = lead
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, KEYS, "{lead}");
        // Times print as RFC 3339 UTC, whole seconds, `Z`.
        for list in ["ledger", "transitions", "emails", "assignments"] {
            for entry in lead[list].as_array().expect("a list") {
                let at = entry["at"].as_str().expect("at is a string");
                assert!(at.len() == 20 && at.ends_with('Z'), "{at}");
            }
        }
        // The score is the sum of the ledger.
        let sum: i64 = lead["ledger"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["points"].as_i64().unwrap())
            .sum();
        assert_eq!(lead["score"].as_i64(), Some(sum), "{lead}");
    }
}

#[test]
fn simulate_without_until_stops_at_the_last_event() {
    let run = nurture(&["simulate", "rules", "--events", "rules/events.jsonl"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    // The nightly decay needs 30 quiet days: none pass before the last event.
    assert!(!run.stdout.contains("inactivity-decay"), "{}", run.stdout);
    let u1: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        u1["score"], 115,
        "105 from rules, 10 from the company-size plugin"
    );
    assert_eq!(u1["stage"], "opportunity");
}

// ---------------------------------------------------------------------------
// 3. Bad rules: every error at its place

#[test]
fn yaml_syntax_error() {
    assert_one_error(
        "scoring:\n  - name: a\n    on: x: y\n",
        3,
        10,
        "YAML syntax: mapping values are not allowed",
    );
}

#[test]
fn a_quote_that_ends_a_condition_early_says_how_to_write_it() {
    assert_one_error(
        "scoring:\n  - name: a\n    on: x\n    if: 'event.properties.path == '/pricing''\n    points: 1\n",
        4,
        36,
        "YAML syntax: did not find expected key; the `'` before this ends the quoted value: inside '...' write a quote as `''`",
    );
}

#[test]
fn repeated_key_is_reported_where_it_repeats() {
    assert_one_error(
        "stages:\n  mql: lead.score > 1\n  mql: lead.score > 2\n",
        3,
        3,
        "duplicate entry with key \"mql\"",
    );
}

#[test]
fn unknown_section_suggests_the_right_one() {
    assert_one_error(
        "scoring: []\nscorng:\n  - name: x\n",
        2,
        1,
        "unknown section `scorng` (did you mean `scoring`?)",
    );
}

#[test]
fn unknown_key_in_a_scoring_rule_suggests_points() {
    assert_one_error(
        "scoring:\n  - name: pricing\n    on: page_viewed\n    pionts: 10\n",
        4,
        5,
        "scoring[0]: unknown key `pionts` (did you mean `points`?)",
    );
}

#[test]
fn wrong_type() {
    assert_one_error(
        "scoring:\n  - name: pricing\n    on: page_viewed\n    points: \"ten\"\n",
        4,
        13,
        "scoring[0].points: expected a whole number, e.g. 25, found the text \"ten\"",
    );
}

#[test]
fn a_number_in_quotes_or_a_bare_limit_says_what_to_write() {
    let s = Scratch::new(&[(
        "a.yaml",
        "scoring:\n  - name: pricing\n    on: page_viewed\n    points: \"25\"\n    limit: 3\n",
    )]);
    assert_errors(
        &s,
        &[
            (
                s.at("a.yaml", 4, 13),
                "scoring[0].points: expected a whole number, e.g. 25, found the text \"25\" (write it without quotes)",
            ),
            (
                s.at("a.yaml", 5, 12),
                "scoring[0].limit: expected a limit: `times` (how many) and optional `per` (a duration), e.g. `{ times: 3, per: 7d }`, found the number 3",
            ),
        ],
    );
}

#[test]
fn cel_parse_error_points_inside_the_expression_whatever_the_yaml_style() {
    // Each `)` is where CEL stops; the place is that `)` in the file.
    let cases = [
        // Single-quoted: `''` is one character of the expression.
        ("stages:\n  mql: 'lead.email != '''' && )'\n", 2, 31),
        // Double-quoted: `\"` is one character of the expression.
        ("stages:\n  mql: \"lead.email != \\\"\\\" && )\"\n", 2, 31),
        ("stages:\n  mql: lead.score >= )\n", 2, 22),
        // Literal block: lines and their extra indentation are kept.
        ("stages:\n  mql: |\n    lead.score >= 50 &&\n      lead.fit >= )\n", 4, 19),
        // Folded block and multi-line plain scalar: the lines join into one.
        ("stages:\n  mql: >\n    lead.score >= 50 &&\n    lead.fit >= )\n", 4, 17),
        ("stages:\n  mql:\n    lead.score >= 50 &&\n    lead.fit >= )\n", 4, 17),
        ("scoring:\n  - name: a\n    on: x\n    if: \"lead.score >= 50 &&\n      lead.fit >= )\"\n    points: 1\n", 5, 19),
    ];
    for (yaml, line, col) in cases {
        let s = Scratch::new(&[("a.yaml", yaml)]);
        let path = if yaml.starts_with("stages") {
            "stages.mql"
        } else {
            "scoring[0].if"
        };
        assert_errors(
            &s,
            &[(
                s.at("a.yaml", line, col),
                &format!("{path}: CEL: Syntax error"),
            )],
        );
    }
}

#[test]
fn cel_error_at_the_end_points_after_the_last_character() {
    assert_one_error(
        "stages:\n  mql: 'lead.score >= '\n",
        2,
        22,
        "mismatched input '<EOF>'",
    );
    assert_one_error(
        "stages:\n  mql: |\n    lead.score >=\n\n",
        3,
        18,
        "mismatched input '<EOF>'",
    );
}

#[test]
fn unknown_variable_in_cel() {
    assert_one_error(
        "stages:\n  mql: 'lead.fit > 1 && leads.score > 1'\n",
        2,
        25,
        "unknown variable `leads` (did you mean `lead`?)",
    );
}

/// What passed `check` and then read nothing at run time (issue 17): every
/// one is an error, all in one pass, each at its place.
#[test]
fn misspelt_fields_bad_durations_and_unknown_filters_fail_check() {
    let s = Scratch::new(&[(
        "a.yaml",
        "scoring:
  - name: decay
    schedule: '0 3 * * *'
    if: 'now - lead.last_activity_at > duration(\"21d\")'
    points: -5
  - name: pricing
    on: page_viewed
    if: event.propertis.path == '/pricing'
    points: 5
fit:
  - name: big
    if: lead.attribute.employees >= 1000
    points: 10
stages:
  mql: lead.scores >= 60
templates:
  - name: hi
    subject: 'Hi {{ lead.attributes.first_name | titlecase }}'
    text: |
      Hello {{ lead.emial }},
      {{ unsubscribe_url }}
",
    )]);
    assert_errors(
        &s,
        &[
            (
                s.at("a.yaml", 4, 49),
                "scoring[0].if: CEL: duration(\"21d\") cannot be read: CEL durations count in h, m, s, ms, us and ns (no days or weeks); write \"504h\"",
            ),
            (
                s.at("a.yaml", 8, 15),
                "scoring[1].if: CEL: `event` has no field `propertis` (did you mean `event.properties`?)",
            ),
            (
                s.at("a.yaml", 12, 14),
                "fit[0].if: CEL: `lead` has no field `attribute` (did you mean `lead.attributes`?)",
            ),
            (
                s.at("a.yaml", 15, 13),
                "stages.mql: CEL: `lead` has no field `scores` (did you mean `lead.score`?)",
            ),
            (
                s.at("a.yaml", 18, 50),
                "templates[0].subject: template: unknown filter `titlecase`",
            ),
            (
                s.at("a.yaml", 20, 21),
                "templates[0].text: template: `lead` has no field `emial` (did you mean `lead.email`?)",
            ),
        ],
    );
}

#[test]
fn sql_and_javascript_operators_in_cel_get_the_fix() {
    let s = Scratch::new(&[(
        "a.yaml",
        "stages:\n  mql: lead.score >= 60 AND lead.fit >= 10\n  sql: lead.stage = 'mql'\n  customer: lead.stage === 'sql'\n",
    )]);
    assert_errors(
        &s,
        &[
            (
                s.at("a.yaml", 2, 25),
                "stages.mql: CEL: CEL uses `&&`, not `AND`",
            ),
            (
                s.at("a.yaml", 3, 19),
                "stages.sql: CEL: CEL compares with `==`",
            ),
            (
                s.at("a.yaml", 4, 26),
                "stages.customer: CEL: CEL compares with `==`",
            ),
        ],
    );
}

#[test]
fn check_with_events_warns_about_rules_that_never_fire_and_unread_types() {
    let s = Scratch::new(&[(
        "a.yaml",
        "scoring:\n  - name: webinar\n    on: webinar_atended\n    points: 5\n  - name: pricing\n    on: [page_viewed, demo_requested]\n    points: 1\n",
    )]);
    let events = s.tmp.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"id":"e1","lead":"u1","type":"identify","at":"2026-01-05T10:00:00Z"}"#,
            "\n",
            r#"{"id":"e2","lead":"u1","type":"page_viewed","at":"2026-01-05T10:01:00Z"}"#,
            "\n",
            r#"{"id":"e3","lead":"u1","type":"webinar_attended","at":"2026-01-05T10:02:00Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let ev = events.display().to_string();
    let run = nurture(&["check", &s.rules_arg(), "--events", &ev]);
    assert_eq!(run.code, Some(0), "warnings do not fail check:\n{run:#?}");
    assert_eq!(
        run.stderr,
        format!(
            "{} warning: scoring rule `webinar` never fires: no event in {ev} has type `webinar_atended` (did you mean `webinar_attended`?)\n\
             {ev}:3:1: warning: no rule reads event type `webinar_attended` (did you mean `webinar_atended`?) (1 event)\n",
            s.at("a.yaml", 3, 9)
        )
    );
    assert!(run.stdout.contains(" ok: "), "{}", run.stdout);
}

#[test]
fn unknown_template_in_a_campaign_step() {
    let yaml = format!(
        "{TEMPLATES}campaigns:
  - name: drip
    enroll: 'lead.stage == \"lead\"'
    steps:
      - {{ after: 0d, template: welcome }}
      - {{ after: 3d, template: welcom }}
      - after: 7d
        template: pricing
"
    );
    let s = Scratch::new(&[("a.yaml", &yaml)]);
    assert_errors(
        &s,
        &[
            (
                s.at("a.yaml", 10, 32),
                "campaign `drip` step 2: unknown template `welcom` (did you mean `welcome`?)",
            ),
            (
                s.at("a.yaml", 12, 19),
                "campaign `drip` step 3: unknown template `pricing`",
            ),
        ],
    );
}

#[test]
fn unknown_owner_in_a_routing_rule() {
    assert_one_error(
        "routing:
  owners:
    - { id: anna, email: anna@example.com }
  rules:
    - name: default
      owners: [anna, ana]
      strategy: round_robin
",
        6,
        22,
        "routing rule `default`: unknown owner `ana` (did you mean `anna`?)",
    );
}

#[test]
fn bad_cron() {
    let s = Scratch::new(&[(
        "a.yaml",
        "scoring:
  - name: nightly
    schedule: \"0 3 * *\"
    points: -5
  - name: hourly
    schedule: \"0 24 * * *\"
    points: -1
  - name: weekly
    schedule: 0 3 * * 8
    points: -1
  - name: never
    schedule: 0 0 31 4 *
    points: -1
  - name: typo
    schedule: 0 3 * * Mon-Fro
    points: -1
",
    )]);
    assert_errors(
        &s,
        &[
            (
                s.at("a.yaml", 3, 15),
                "scoring[0].schedule: cron \"0 3 * *\" has 4 fields; write five",
            ),
            (
                s.at("a.yaml", 6, 15),
                "cron \"0 24 * * *\": hour 24 is out of range (0-23)",
            ),
            (s.at("a.yaml", 9, 15), "day of week 8 is out of range (0-7)"),
            (
                s.at("a.yaml", 12, 15),
                "cron \"0 0 31 4 *\" never matches a date",
            ),
            (
                s.at("a.yaml", 15, 15),
                "the day of week field \"Mon-Fro\" is not valid",
            ),
        ],
    );
}

#[test]
fn bad_duration() {
    assert_one_error(
        "scoring:\n  - name: pricing\n    on: page_viewed\n    points: 10\n    limit: { times: 3, per: 3x }\n",
        5,
        29,
        "scoring[0].limit.per: invalid duration \"3x\"",
    );
}

#[test]
fn bad_time_zone() {
    let yaml = format!(
        "{TEMPLATES}campaigns:
  - name: drip
    enroll: 'true'
    timezone: Europe/Berln
    steps:
      - {{ after: 0d, template: welcome }}
"
    );
    assert_one_error(
        &yaml,
        8,
        15,
        "campaigns[0].timezone: unknown time zone \"Europe/Berln\"",
    );
}

#[test]
fn duplicate_names_across_files_name_the_first_place() {
    let s = Scratch::new(&[
        ("a.yaml", "scoring:\n  - name: pricing\n    on: page_viewed\n    points: 10\n"),
        (
            "more/b.yaml",
            "scoring:\n  - name: docs\n    on: page_viewed\n    points: 2\n  - { name: pricing, on: x, points: 5 }\n",
        ),
    ]);
    let first = s.at("a.yaml", 2, 11);
    let first = first.trim_end_matches(':');
    assert_errors(
        &s,
        &[(
            s.at("more/b.yaml", 5, 13),
            &format!("duplicate scoring rule name `pricing` (first defined at {first})"),
        )],
    );
}

#[test]
fn template_syntax_error_points_inside_the_template() {
    let s = Scratch::new(&[(
        "a.yaml",
        "templates:
  - name: welcome
    subject: 'Hi {{ lead.email }'
    text: |
      Hello,
      {{ unsubscribe_url }
",
    )]);
    assert_errors(
        &s,
        &[
            (
                s.at("a.yaml", 3, 32),
                "templates[0].subject: template syntax:",
            ),
            (s.at("a.yaml", 6, 26), "templates[0].text: template syntax:"),
        ],
    );
}

#[test]
fn on_and_schedule_together() {
    assert_one_error(
        "scoring:\n  - name: nightly\n    on: page_viewed\n    schedule: \"0 3 * * *\"\n    points: 1\n",
        4,
        15,
        "scoring rule `nightly`: give `on` or `schedule`, not both",
    );
}

/// A missing key used to hide the item's other errors: the item was
/// dropped at the first, so its references were never checked. Now every
/// error of the item is reported, each at its place; the missing key at the
/// item's.
#[test]
fn a_missing_key_does_not_hide_the_items_other_errors() {
    let s = Scratch::new(&[(
        "a.yaml",
        "routing:
  owners:
    - { id: anna, email: anna@example.com }
  rules:
    - name: default
      owners: [anna, ana]
    - name: other
      owners: [bob]
      strategy: round_robbin
      extra: 1
scoring:
  - on: identify
    points: lots
    limit: { times: 0 }
  - name: later
    points: 1
    schedule: 'bad cron'
",
    )]);
    assert_errors(
        &s,
        &[
            (s.at("a.yaml", 5, 7), "routing.rules[0]: missing key `strategy`"),
            (
                s.at("a.yaml", 6, 22),
                "routing rule `default`: unknown owner `ana` (did you mean `anna`?)",
            ),
            (s.at("a.yaml", 8, 16), "routing rule `other`: unknown owner `bob`"),
            (
                s.at("a.yaml", 9, 17),
                "routing.rules[1].strategy: unknown value `round_robbin` (did you mean `round_robin`?)",
            ),
            (s.at("a.yaml", 10, 7), "routing.rules[1]: unknown key `extra`"),
            (s.at("a.yaml", 12, 5), "scoring[0]: missing key `name`"),
            (
                s.at("a.yaml", 13, 13),
                "scoring[0].points: expected a whole number, e.g. 25, found the text \"lots\"",
            ),
            (s.at("a.yaml", 14, 21), "times must be at least 1"),
            // Not also "needs `on` or `schedule`": the schedule is there, bad.
            (s.at("a.yaml", 17, 15), "scoring[1].schedule: cron \"bad cron\" has 2 fields"),
        ],
    );
}

#[test]
fn plugin_memory_is_bytes_or_a_size_with_a_unit() {
    let wasm = repo().join("plugins/company_size.wasm");
    let plugin = |name: &str, memory: &str| {
        format!(
            "  - {{ name: {name}, wasm: '{}', on: identify, memory: {memory} }}\n",
            wasm.display()
        )
    };
    let good = Scratch::new(&[(
        "a.yaml",
        &format!(
            "plugins:\n{}{}",
            plugin("bytes", "2097152"),
            plugin("unit", "16MiB")
        ),
    )]);
    let run = good.check();
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines = [plugin("negative", "-1"), plugin("unit", "16 apples")];
    let bad = Scratch::new(&[("a.yaml", &format!("plugins:\n{}{}", lines[0], lines[1]))]);
    // Each error at the value of its `memory:`.
    let col = |line: &str| line.find("memory: ").unwrap() + "memory: ".len() + 1;
    assert_errors(
        &bad,
        &[
            (
                bad.at("a.yaml", 2, col(&lines[0])),
                "plugins[0].memory: invalid memory size -1: it cannot be negative",
            ),
            (
                bad.at("a.yaml", 3, col(&lines[1])),
                "plugins[1].memory: invalid memory size \"16 apples\"",
            ),
        ],
    );
}

#[test]
fn plugin_wasm_file_missing() {
    let s = Scratch::new(&[(
        "a.yaml",
        "plugins:\n  - name: company-size\n    wasm: ../plugins/missing.wasm\n    on: identify\n",
    )]);
    let missing = s.rules().join("../plugins/missing.wasm");
    assert_errors(
        &s,
        &[(
            s.at("a.yaml", 3, 11),
            &format!("plugin `company-size`: no file at {}", missing.display()),
        )],
    );
}

#[test]
fn every_error_of_a_run_is_printed_in_file_order() {
    let s = Scratch::new(&[
        ("a.yaml", "scoring:\n  - name: a\n    on: x\n    if: 'lead.score >'\n    points: 1\n    pionts: 2\n"),
        ("b.yaml", "stages:\n  mql: 'leads.score > 1'\nfitt: []\n"),
        ("c/d.yaml", "routing:\n  rules:\n    - { name: r, owners: [nobody], strategy: claim }\n"),
        ("e.yaml", "scoring: [\n"),
    ]);
    assert_errors(
        &s,
        &[
            // Both errors of the item, not just the first serde meets.
            (s.at("a.yaml", 4, 22), "scoring[0].if: CEL: Syntax error"),
            (s.at("a.yaml", 6, 5), "unknown key `pionts`"),
            (s.at("b.yaml", 2, 9), "unknown variable `leads`"),
            (
                s.at("b.yaml", 3, 1),
                "unknown section `fitt` (did you mean `fit`?)",
            ),
            (s.at("c/d.yaml", 3, 27), "unknown owner `nobody`"),
            (s.at("e.yaml", 2, 1), "YAML syntax"),
        ],
    );
}

#[test]
fn places_name_the_dir_as_given_on_the_command_line() {
    let s = Scratch::new(&[(
        "a.yaml",
        "scoring:\n  - name: a\n    on: x\n    points: ten\n",
    )]);
    for given in ["rules", "./rules", "rules/"] {
        let run = nurture_in(s.tmp.path(), &["check", given]);
        assert_eq!(run.code, Some(1));
        let want = format!("{}/a.yaml:4:13: ", given.trim_end_matches('/'));
        assert!(
            run.stderr.starts_with(&want),
            "given {given}, want {want}, got:\n{}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// 4. `simulate` with bad input

#[test]
fn simulate_reports_every_bad_event_line_naming_the_field() {
    let file = "tests/fixtures/bad-events.jsonl";
    let run = nurture(&["simulate", "rules", "--events", file]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.stdout, "", "no lead lines when the events are bad");
    let expected = [
        ("2:45:", "`at`: not an RFC 3339 time"),
        (
            "3:98:",
            "`traits.consent`: must be \"unknown\", \"opted_in\" or \"opted_out\"",
        ),
        ("5:24:", "`type`: must not be empty"),
        ("6:90:", "`properties.status`: must be"),
        ("7:73:", "`colour`: unknown field"),
        ("8:24:", "invalid JSON"),
        ("9:1:", "an event must be a JSON object"),
    ];
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{}", run.stderr);
    for (line, (place, part)) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{file}:{place} ")),
            "want {file}:{place}, got:\n{line}"
        );
        assert!(line.contains(part), "want {part:?} in:\n{line}");
    }
}

#[test]
fn simulate_rejects_a_garbage_until() {
    let run = nurture(&[
        "simulate",
        "rules",
        "--events",
        "rules/events.jsonl",
        "--until",
        "next tuesday",
    ]);
    assert!(matches!(run.code, Some(c) if c != 0), "{run:#?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(
            "--until: \"next tuesday\" is neither a date (2026-02-20) nor an RFC 3339 time"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn simulate_explain_tells_every_decision_and_its_reason() {
    let args = |explain: &str| {
        nurture(&[
            "simulate",
            "rules",
            "--events",
            "rules/events.jsonl",
            "--until",
            "2026-02-20",
            explain,
        ])
    };
    let text = args("--explain");
    text.assert_no_panic();
    assert_eq!(text.code, Some(0), "{text:#?}");
    let out = &text.stdout;
    for line in [
        // A header with the score and fit rule by rule.
        "u1: opportunity, score 45 (company-size +10, pricing-page +30, form-fill +30, demo-request +40, email-click +5, inactivity-decay -70), fit 30 (target-industry +20, decision-maker +10), owner anna, consent opted_in\n",
        "  2026-01-06T09:30:00Z  stage lead -> mql because lead.score >= 50\n",
        "  2026-01-06T09:40:00Z  assigned to anna by routing rule enterprise (round_robin)\n",
        "  2026-01-06T09:40:00Z  notice to anna@example.com: \"New lead for you: Ann\"\n",
        "  2026-01-06T15:00:00Z  stage sql -> opportunity: sales answered accepted\n",
        // Emails rendered, and a skipped step with the condition that failed.
        "  2026-01-05T11:00:00Z  email sent: campaign nurture-immature step 1 (welcome): \"Welcome, there\"\n",
        "  2026-01-08T11:00:00Z  campaign nurture-immature step 2 skipped: its `if` does not hold: lead.attributes.industry == \"software\"\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    // As JSON: the simulate line's keys, breakdowns and the timeline; the
    // same leads in the same states as without --explain.
    let json = args("--explain=json");
    assert_eq!(json.code, Some(0), "{json:#?}");
    let plain = nurture(&[
        "simulate",
        "rules",
        "--events",
        "rules/events.jsonl",
        "--until",
        "2026-02-20T00:00:00Z",
    ]);
    assert_eq!(plain.code, Some(0), "{plain:#?}");
    let lines: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let plain: Vec<serde_json::Value> = plain
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), plain.len());
    for (l, p) in lines.iter().zip(&plain) {
        for (k, v) in p.as_object().unwrap() {
            assert_eq!(&l[k], v, "{k} of {}", p["lead"]);
        }
    }
    let u2 = &lines[1];
    assert_eq!(u2["fit_breakdown"][0]["rule"], "free-mail");
    let welcome = u2["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "email")
        .unwrap();
    assert_eq!(welcome["template"], "welcome");
    assert_eq!(welcome["messages"][0]["subject"], "Welcome, there");
    assert!(
        welcome["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Unsubscribe: http://localhost:8080/"),
        "{welcome}"
    );
}

#[test]
fn a_failing_plugin_is_told_by_simulate_explain_and_under_a_failed_test() {
    let wasm = repo().join("tests/plugins/plain_panic.wasm");
    let rules = format!(
        "plugins:\n  - {{ name: boom, wasm: '{}', on: identify }}\n\
         scoring:\n  - {{ name: signup, on: identify, points: 5 }}\n",
        wasm.display()
    );
    let s = Scratch::new(&[
        ("a.yaml", &rules),
        (
            "tests/boom.test.yaml",
            "tests:
  - name: the plugin gives points
    events:
      - { lead: u1, type: identify, at: \"2026-01-05T10:00:00Z\" }
    expect:
      u1: { score: 15 }
  - name: no plugin fails
    events:
      - { lead: u1, type: identify, at: \"2026-01-05T10:00:00Z\" }
    expect:
      u1: { plugin_errors: [] }
  - name: this plugin is known to fail
    events:
      - { lead: u1, type: identify, at: \"2026-01-05T10:00:00Z\" }
    expect:
      u1: { score: 5, plugin_errors: [boom] }
",
        ),
        (
            "events.jsonl",
            "{\"id\":\"e1\",\"lead\":\"u1\",\"type\":\"identify\",\"at\":\"2026-01-05T10:00:00Z\"}\n",
        ),
    ]);
    let run = nurture(&["test", &s.rules_arg()]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1), "{run:#?}");
    let out = &run.stdout;
    assert!(
        out.contains("  u1.score: expected 15, got 5 (signup +5)\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "  at run time: u1: 2026-01-05T10:00:00Z: plugin boom failed: trapped: plugin panicked"
        ),
        "{out}"
    );
    assert!(
        out.contains("  u1.plugin_errors: expected [], got [boom: trapped: plugin panicked"),
        "{out}"
    );
    assert!(out.contains("PASS this plugin is known to fail\n"), "{out}");
    assert!(out.ends_with("rule tests: 1 passed, 2 failed\n"), "{out}");

    let events = s.rules().join("events.jsonl");
    let run = nurture(&[
        "simulate",
        &s.rules_arg(),
        "--events",
        &events.display().to_string(),
        "--explain",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout
            .contains("  2026-01-05T10:00:00Z  plugin boom FAILED: trapped: plugin panicked"),
        "{}",
        run.stdout
    );
}

#[test]
fn simulate_compare_reports_what_a_candidate_changes() {
    // The candidate raises the MQL bar from 50 to 60 and doubles the
    // pricing page's points.
    let cand = tempfile::tempdir().unwrap();
    for f in [
        "nurture.yaml",
        "routing.yaml",
        "plugins.yaml",
        "scoring.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join("rules").join(f)).unwrap();
        let text = text
            .replace("mql: 'lead.score >= 50'", "mql: 'lead.score >= 60'")
            .replace("../plugins/", &format!("{}/plugins/", repo().display()))
            .replacen(
                "points: 10\n    limit: { times: 3, per: 30d }",
                "points: 20\n    limit: { times: 3, per: 30d }",
                1,
            );
        std::fs::write(cand.path().join(f), text).unwrap();
    }
    let args = |format: &str| {
        nurture(&[
            "simulate",
            "rules",
            "--events",
            "rules/events.jsonl",
            "--until",
            "2026-02-20",
            "--compare",
            cand.path().to_str().unwrap(),
            "--format",
            format,
        ])
    };
    let run = args("text");
    run.assert_no_panic();
    assert_eq!(run.code, Some(0), "{run:#?}");
    let out = &run.stdout;
    assert!(
        out.starts_with("3 leads, 2 end differently with the candidate rules\n"),
        "{out}"
    );
    // u1 was an MQL at 55 points; with 60 it passes at once to sql on the
    // same click, u2 gains 10 points from its pricing view.
    assert!(
        out.contains("  u2: lead score 7 fit -10 owner none"),
        "{out}"
    );
    assert!(out.contains("first difference in the ledger: pricing-page +10 at 2026-01-20T10:00:00Z -> pricing-page +20 at 2026-01-20T10:00:00Z"), "{out}");

    let json = args("json");
    assert_eq!(json.code, Some(0), "{json:#?}");
    let lines: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["leads"], 3);
    assert_eq!(summary["differing"], lines.len() - 1);
    assert_eq!(lines[0]["lead"], "u1");
    assert!(
        lines[0]["first_difference"]["part"].is_string(),
        "{}",
        lines[0]
    );

    // The same rules on both sides: nothing differs.
    let same = nurture(&[
        "simulate",
        "rules",
        "--events",
        "rules/events.jsonl",
        "--compare",
        "rules",
    ]);
    assert_eq!(same.code, Some(0), "{same:#?}");
    assert!(
        same.stdout.starts_with("3 leads, 0 end differently"),
        "{}",
        same.stdout
    );
}

#[test]
fn simulate_with_a_missing_events_file() {
    let run = nurture(&["simulate", "rules", "--events", "no/such/events.jsonl"]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with("no/such/events.jsonl: cannot read"),
        "{}",
        run.stderr
    );
}

#[test]
fn simulate_with_bad_rules_prints_the_rules_errors() {
    let s = Scratch::new(&[("a.yaml", "stages:\n  mql: 'lead.score >= )'\n")]);
    let events = repo().join("rules/events.jsonl");
    let run = nurture(&[
        "simulate",
        &s.rules_arg(),
        "--events",
        &events.display().to_string(),
    ]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with(&format!("{} ", s.at("a.yaml", 2, 23))),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// 5. `test`: marketers' rule tests

const SMALL_RULES: &str = "\
scoring:
  - { name: pricing, on: page_viewed, points: 10 }
stages:
  mql: 'lead.score >= 10'
  sql: 'lead.score >= 100'
";

#[test]
fn test_passes_on_the_example_rules() {
    let dir = repo().join("rules");
    let mut tests = Vec::new();
    collect_tests(&dir, &mut tests);
    // The example rules ship with rule tests: this must run them, never
    // pass for want of any (the no-tests path is covered below).
    assert!(!tests.is_empty(), "no *.test.yaml under {}", dir.display());
    let run = nurture(&["test", "rules"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains(", 0 failed"), "{}", run.stdout);
    assert!(!run.stdout.contains("FAIL"), "{}", run.stdout);
}

fn collect_tests(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_tests(&path, out);
        } else if path.to_string_lossy().ends_with(".test.yaml") {
            out.push(path);
        }
    }
}

#[test]
fn test_without_rule_tests_says_so() {
    let s = Scratch::new(&[("a.yaml", SMALL_RULES)]);
    let run = nurture(&["test", &s.rules_arg()]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("no rule tests (*.test.yaml) in {}", s.rules_arg())),
        "{}",
        run.stdout
    );
}

#[test]
fn test_with_a_failing_case_prints_fail_and_a_diff() {
    let s = Scratch::new(&[
        ("a.yaml", SMALL_RULES),
        (
            "tests/pricing.test.yaml",
            "tests:
  - name: one pricing view makes an MQL
    events:
      - { lead: u1, type: page_viewed, at: \"2026-01-05T10:00:00Z\" }
    expect:
      u1: { stage: mql, score: 10 }
  - name: one pricing view makes an SQL
    events:
      - { lead: u1, type: page_viewed, at: \"2026-01-05T10:00:00Z\" }
    expect:
      u1: { stage: sql }
",
        ),
    ]);
    let run = nurture(&["test", &s.rules_arg()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let out = &run.stdout;
    assert!(
        out.contains("PASS one pricing view makes an MQL\n"),
        "{out}"
    );
    let place = s.at("tests/pricing.test.yaml", 7, 5);
    let place = place.trim_end_matches(':');
    assert!(
        out.contains(&format!("FAIL one pricing view makes an SQL ({place})\n")),
        "{out}"
    );
    assert!(out.contains("  u1.stage: expected sql, got mql\n"), "{out}");
    assert!(out.ends_with("rule tests: 1 passed, 1 failed\n"), "{out}");
}

#[test]
fn test_with_a_bad_test_file_reports_its_place() {
    let s = Scratch::new(&[
        ("a.yaml", SMALL_RULES),
        (
            "t.test.yaml",
            "tests:\n  - name: bad\n    events:\n      - { lead: u1, type: page_viewed, at: soon }\n    expect: {}\n",
        ),
    ]);
    let run = nurture(&["test", &s.rules_arg()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr
            .starts_with(&format!("{} event 1: `at`", s.at("t.test.yaml", 4, 44))),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// 6. `schema`

#[test]
fn schema_is_json_with_the_rules_sections() {
    let run = nurture(&["schema"]);
    assert_eq!(run.code, Some(0));
    let schema: Value = serde_json::from_str(&run.stdout).expect("the schema is JSON");
    for section in [
        "scoring",
        "fit",
        "plugins",
        "stages",
        "templates",
        "campaigns",
        "routing",
        "webhooks",
        "settings",
    ] {
        assert!(
            schema["properties"][section].is_object(),
            "no properties.{section}"
        );
    }
}

// ---------------------------------------------------------------------------
// 7. Garbage never makes the binary panic

#[test]
fn garbage_rules_never_panic() {
    let deep = format!("scoring: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let mut nested =
        String::from("plugins:\n  - name: p\n    wasm: p.wasm\n    on: x\n    config:\n");
    for depth in 0..200 {
        nested += &format!("{}k:\n", " ".repeat(6 + 2 * depth));
    }
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary bytes", (0..=255u8).cycle().take(4096).map(|b| b.wrapping_mul(31)).collect()),
        ("invalid UTF-8", b"scoring:\n  - name: \xff\xfe\n".to_vec()),
        ("empty file", Vec::new()),
        ("blank lines", b"\n\n   \n".to_vec()),
        ("list at the top", b"- scoring\n- fit\n".to_vec()),
        ("scalar at the top", b"just words\n".to_vec()),
        ("deeply nested flow", deep.into_bytes()),
        ("deeply nested blocks", nested.into_bytes()),
        ("self-referencing alias", b"scoring: &a [*a]\n".to_vec()),
        ("alias bomb", bomb.as_bytes().to_vec()),
        ("huge integer", b"scoring:\n  - { name: a, on: x, points: 99999999999999999999999999999 }\n".to_vec()),
        ("huge float", b"routing:\n  recycle_score: 1e400\n".to_vec()),
        ("i64 extremes", b"scoring:\n  - { name: a, on: x, points: -9223372036854775808 }\nrouting:\n  recycle_score: 9223372036854775807\n".to_vec()),
        ("huge limit", b"scoring:\n  - { name: a, on: x, points: 1, limit: { times: 99999999999, per: 99999999999999999w } }\n".to_vec()),
        ("non-string keys", b"? [a, b]\n: 1\n1: 2\nnull: 3\n".to_vec()),
        ("tabs", b"scoring:\n\t- name: a\n".to_vec()),
        ("two documents", b"scoring: []\n---\nfit: []\n".to_vec()),
        ("NUL in a string", b"scoring:\n  - { name: \"a\\0b\", on: x, points: 1 }\n".to_vec()),
        ("only a BOM", b"\xef\xbb\xbf".to_vec()),
        ("CRLF and CR", b"stages:\r\n  mql: \"lead.score >= )\"\r\r\n".to_vec()),
        ("empty condition", b"stages:\n  mql: ''\n  sql: |\n\n".to_vec()),
        ("weird unicode", "stages:\n  mql: 'lead.attributes.\u{202e}x == \"\u{1f600}\" && )'\n".as_bytes().to_vec()),
        ("cron noise", b"scoring:\n  - { name: a, schedule: '*/0 99-1 L W ? #', points: 1 }\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let s = Scratch::new(&[]);
        s.write("a.yaml", &bytes);
        let run = s.check();
        assert!(
            matches!(run.code, Some(0 | 1)),
            "{what}: exit {:?}\n{}",
            run.code,
            run.stderr
        );
        if run.code == Some(1) {
            let first = run.stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with(&format!("{}/a.yaml:", s.rules_arg())),
                "{what}: {first}"
            );
        }
    }
}

#[test]
fn extreme_numbers_do_not_panic_simulate() {
    let s = Scratch::new(&[(
        "a.yaml",
        "scoring:
  - { name: a, on: x, points: 9223372036854775807 }
fit:
  - { name: f, if: 'true', points: 9223372036854775807 }
  - { name: g, if: 'true', points: 9223372036854775807 }
stages:
  mql: 'lead.score + 1 > 0'
routing:
  recycle_score: -9223372036854775808
",
    )]);
    std::fs::write(
        s.tmp.path().join("events.jsonl"),
        "{\"id\":\"e1\",\"lead\":\"u1\",\"type\":\"x\",\"at\":\"2026-01-05T10:00:00Z\"}\n\
         {\"id\":\"e2\",\"lead\":\"u1\",\"type\":\"x\",\"at\":\"9999-12-31T23:59:59Z\"}\n\
         {\"id\":\"e3\",\"lead\":\"u1\",\"type\":\"sales_feedback\",\"at\":\"9999-12-31T23:59:59Z\",\"properties\":{\"status\":\"lost\"}}\n",
    )
    .unwrap();
    let events = s.tmp.path().join("events.jsonl").display().to_string();
    let run = nurture(&["simulate", &s.rules_arg(), "--events", &events]);
    assert_eq!(run.code, Some(0), "{run:#?}");
}

#[test]
fn garbage_events_never_panic() {
    let s = Scratch::new(&[("a.yaml", SMALL_RULES)]);
    let deep = format!(
        "{{\"id\":\"e1\",\"lead\":\"u1\",\"type\":\"x\",\"properties\":{}}}\n",
        "[".repeat(10_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary bytes", (0..=255u8).cycle().take(4096).collect()),
        ("empty file", Vec::new()),
        ("deep JSON", deep.into_bytes()),
        ("numbers", b"1\n1e999\n-0\n".to_vec()),
        ("huge numbers as ids", b"{\"id\":1e999,\"lead\":99999999999999999999999,\"type\":\"x\",\"at\":\"2026-01-05T10:00:00Z\"}\n".to_vec()),
        ("far times", b"{\"id\":\"a\",\"lead\":\"u\",\"type\":\"x\",\"at\":\"0000-01-01T00:00:00Z\"}\n{\"id\":\"b\",\"lead\":\"u\",\"type\":\"x\",\"at\":\"9999-12-31T23:59:59+23:59\"}\n".to_vec()),
    ];
    for (what, bytes) in cases {
        let path = s.tmp.path().join("events.jsonl");
        std::fs::write(&path, bytes).unwrap();
        let run = nurture(&[
            "simulate",
            &s.rules_arg(),
            "--events",
            &path.display().to_string(),
        ]);
        assert!(
            matches!(run.code, Some(0 | 1)),
            "{what}: exit {:?}\n{}",
            run.code,
            run.stderr
        );
    }
}

#[test]
fn gen_prints_the_same_workload_for_the_same_seed_and_simulate_reads_it() {
    let args = ["gen", "--leads", "50", "--events", "2000", "--seed", "9"];
    let a = nurture(&args);
    assert_eq!(a.code, Some(0), "{}", a.stderr);
    assert_eq!(a.stdout, nurture(&args).stdout, "deterministic");
    let other = nurture(&["gen", "--leads", "50", "--events", "2000", "--seed", "10"]);
    assert_ne!(a.stdout, other.stdout, "the seed matters");

    let lines: Vec<serde_json::Value> = a
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2000);
    let leads: std::collections::BTreeSet<&str> =
        lines.iter().map(|e| e["lead"].as_str().unwrap()).collect();
    assert!(leads.len() <= 50 && leads.len() > 40, "{}", leads.len());
    for kind in [
        "identify",
        "page_viewed",
        "form_submitted",
        "email_clicked",
        "sales_feedback",
    ] {
        assert!(
            lines.iter().any(|e| e["type"] == kind),
            "the mix has {kind}"
        );
    }

    // What it prints is input for the other commands.
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    std::fs::write(&events, &a.stdout).unwrap();
    let sim = nurture(&["simulate", "rules", "--events", events.to_str().unwrap()]);
    assert_eq!(sim.code, Some(0), "{}", sim.stderr);
    assert_eq!(sim.stdout.lines().count(), leads.len());

    let bad = nurture(&["gen", "--start", "yesterday"]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--start"), "{}", bad.stderr);

    // --span packs the same leads and kinds into the span asked for.
    let dense = nurture(&[
        "gen", "--leads", "50", "--events", "2000", "--seed", "9", "--span", "1h",
    ]);
    assert_eq!(dense.code, Some(0), "{}", dense.stderr);
    let dense: Vec<serde_json::Value> = dense
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let strip = |e: &serde_json::Value| {
        let mut e = e.clone();
        e.as_object_mut().unwrap().remove("at");
        e
    };
    assert_eq!(
        dense.iter().map(strip).collect::<Vec<_>>(),
        lines.iter().map(strip).collect::<Vec<_>>()
    );
    let at = |e: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap()
    };
    let span = at(&dense[1999]) - at(&dense[0]);
    assert!(
        span > chrono::Duration::minutes(50) && span < chrono::Duration::minutes(70),
        "{span}"
    );
    let bad = nurture(&["gen", "--span", "soon"]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--span"), "{}", bad.stderr);
}
