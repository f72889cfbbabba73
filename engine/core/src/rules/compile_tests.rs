//! What `nurture check` says about issue 17 point 6's keys: a step's `after`
//! or `at`, `timezone: lead.attributes.<key>`, `lists:` and
//! `settings.numbers`, each problem at its file:line:col.

use super::{config, Ruleset, Timing};
use std::path::Path;

fn errors(text: &str) -> Vec<String> {
    match Ruleset::from_text(Path::new("r.yaml"), text) {
        Ok(_) => Vec::new(),
        Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
    }
}

const TEMPLATES: &str = "templates:\n  - { name: t, subject: s, text: x }\n";

#[test]
fn a_step_takes_after_or_at_and_check_says_which() {
    let text = format!(
        "{TEMPLATES}campaigns:\n  - name: c\n    enroll: 'true'\n    steps:\n      - {{ after: 1d, at: 1d, template: t }}\n      - {{ template: t }}\n  - name: d\n    enroll: 'true'\n    steps:\n      - {{ after: 1d, template: t }}\n      - {{ after: 2d, template: t }}\n      - {{ at: 2d, template: t }}\n      - {{ at: 3d, template: t }}\n      - {{ at: 90m, template: t }}\n      - {{ at: 1w, template: t }}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "r.yaml:7:26: campaign `c` step 1: give `after` (since the previous step) or `at` (since enrolling), not both",
            "r.yaml:8:9: campaign `c` step 2: needs `after` (time since the previous step, e.g. `after: 3d`) or `at` (time since enrolling, e.g. `at: 7d`)",
            "r.yaml:14:15: campaign `d` step 3: `at: 2d` comes before the step above can (at the earliest 3d after enrolling), so it would always go out right after it; write `at: 3d` or later",
            "r.yaml:16:15: campaign `d` step 5: `at: 90m` comes before the step above can (at the earliest 3d after enrolling), so it would always go out right after it; write `at: 3d` or later",
        ]
    );
    // A duration that is not one is reported as for `after`.
    let e = errors(&format!(
        "{TEMPLATES}campaigns:\n  - name: c\n    enroll: 'true'\n    steps: [{{ at: 3, template: t }}]\n"
    ));
    assert_eq!(
        e,
        ["r.yaml:6:19: campaigns[0].steps[0].at: expected a duration: an integer and a unit (s, m, h, d, w or ms), e.g. \"3d\", found the number 3"]
    );
    let ok = format!(
        "{TEMPLATES}campaigns:\n  - name: c\n    enroll: 'true'\n    steps:\n      - {{ at: 0d, template: t }}\n      - {{ after: 1d, template: t }}\n      - {{ at: 1d, template: t }}\n"
    );
    let r = Ruleset::from_text(Path::new("r.yaml"), &ok).unwrap();
    let timing: Vec<Timing> = r.campaigns[0].steps.iter().map(|s| s.timing).collect();
    let d = chrono::Duration::days;
    assert_eq!(
        timing,
        [Timing::At(d(0)), Timing::After(d(1)), Timing::At(d(1))]
    );
}

#[test]
fn a_window_zone_is_a_name_the_lead_or_one_of_its_attributes() {
    let campaign = |zone: &str| {
        format!("{TEMPLATES}campaigns:\n  - name: c\n    enroll: 'true'\n    timezone: {zone}\n    steps: [{{ after: 0d, template: t }}]\n")
    };
    for (zone, want) in [
        (
            "Europe/Berlin",
            config::ZoneSpec::Fixed(chrono_tz::Europe::Berlin),
        ),
        ("lead", config::ZoneSpec::Lead),
        (
            "lead.attributes.tz",
            config::ZoneSpec::Attribute("tz".into()),
        ),
    ] {
        let r = Ruleset::from_text(Path::new("r.yaml"), &campaign(zone)).unwrap();
        assert_eq!(r.campaigns[0].zone, Some(want), "{zone}");
    }
    assert_eq!(
        errors(&campaign("lead.timezone")),
        ["r.yaml:6:15: campaigns[0].timezone: time zone \"lead.timezone\": a lead's zone is `lead` (its attributes.timezone) or `lead.attributes.<key>`"]
    );
    assert_eq!(
        errors(&campaign("lead.attributes.")),
        ["r.yaml:6:15: campaigns[0].timezone: time zone \"lead.attributes.\": name one attribute after `lead.attributes.` (no spaces or dots), e.g. \"lead.attributes.tz\""]
    );
    assert!(errors(&campaign("Europe/Berln"))[0].contains("\"lead.attributes.<key>\""));
}

#[test]
fn lists_are_checked_where_they_are_written_and_read() {
    let text = "lists:\n  dach: [DE, AT, CH]\n  empty: []\n  nested: [a, [b]]\n  bad-name: [x]\n  sizes: [10, 2.5, true]\nfit:\n  - { name: f, if: 'lead.attributes.country in lists.dahc', points: 1 }\n  - { name: g, if: 'lead.attributes.n in lists[\"sizez\"] && lists.empty.size() > 0', points: 1 }\n";
    assert_eq!(
        errors(text),
        [
            "r.yaml:3:10: lists.empty: the list is empty: give at least one value",
            "r.yaml:4:15: lists.nested[1]: invalid type: sequence, expected a list item: text, a number, true or false",
            "r.yaml:5:3: lists: list name `bad-name` must be letters, digits and `_` (conditions read it as `lists.bad-name`), e.g. `target_countries`",
            // Lists in error are still known by name: reported once, above.
            "r.yaml:8:54: fit[0].if: CEL: unknown list `dahc` (did you mean `lists.dach`?); the lists are `dach`, `empty`, `nested`, `sizes`",
            "r.yaml:9:49: fit[1].if: CEL: unknown list `sizez` (did you mean `lists.sizes`?); the lists are `dach`, `empty`, `nested`, `sizes`",
        ]
    );
    assert_eq!(
        errors("fit:\n  - { name: f, if: 'lead.attributes.country in lists.dach', points: 1 }\n"),
        ["r.yaml:2:54: fit[0].if: CEL: unknown list `dach`; no lists are defined: add them in a top-level `lists:` section"]
    );
    assert!(
        errors("lists: [DE]\n")[0]
            .starts_with("r.yaml:1:8: lists: must be a mapping of names to lists"),
        "{:?}",
        errors("lists: [DE]\n")
    );
    let r =
        Ruleset::from_text(Path::new("r.yaml"), "lists:\n  sizes: [10, 2.5, true, x]\n").unwrap();
    assert_eq!(
        serde_json::Value::from(r.lists["sizes"].clone()),
        serde_json::json!([10, 2.5, true, "x"])
    );
}

#[test]
fn a_list_name_is_defined_once_across_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "lists:\n  dach: [DE, AT]\n").unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "fit: []\nlists:\n  other: [x]\n  dach: [CH]\n",
    )
    .unwrap();
    let d = Ruleset::load(dir.path()).unwrap_err();
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("b.yaml").display().to_string();
    assert_eq!(
        d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        [format!(
            "{b}:4:3: duplicate list name `dach` (first defined at {a}:2:9)"
        )]
    );
}

/// A list changes what a `schedule` rule's condition means, so the wakes
/// stored under the old key are computed again; lists no `schedule` rule
/// reads leave the key as it was.
#[test]
fn the_wake_key_follows_the_lists_schedule_rules_read() {
    let key = |lists: &str, cond: &str| {
        let text = format!(
            "{lists}scoring:\n  - {{ name: s, schedule: '0 3 * * *', if: '{cond}', points: 1 }}\n"
        );
        Ruleset::from_text(Path::new("r.yaml"), &text)
            .unwrap_or_else(|d| panic!("{d}"))
            .wake_key
    };
    let reads = "lead.attributes.country in lists.dach";
    let (de, ch) = ("lists:\n  dach: [DE]\n", "lists:\n  dach: [CH]\n");
    assert_ne!(key(de, reads), key(ch, reads));
    assert_eq!(key(de, reads), key(de, reads));
    let plain = "lead.score > 1";
    assert_eq!(key(de, plain), key(ch, plain));
    assert_eq!(key(de, plain), key("", plain));
}

#[test]
fn settings_numbers_are_attribute_keys_joined_across_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "settings:\n  numbers: [employees]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "settings:\n  numbers: [revenue, employees]\n  email: { from: a@b.c }\n",
    )
    .unwrap();
    let r = Ruleset::load(dir.path()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(r.settings.numbers, ["employees", "revenue"]);
    assert_eq!(
        errors("settings:\n  numbers: [employees, ' ']\n"),
        ["r.yaml:2:24: settings.numbers: an attribute key must not be empty"]
    );
}

/// Editors learn the new keys from `nurture schema`.
#[test]
fn the_schema_has_the_new_keys() {
    let schema = config::schema();
    let text = schema.to_string();
    assert!(schema["properties"]["lists"].is_object(), "{text}");
    for key in [
        "\"at\"",
        "\"numbers\"",
        "lead.attributes.<key>",
        "\"minItems\":1",
    ] {
        assert!(text.contains(key), "{key}");
    }
}

/// The example rules use a list and stay valid.
#[test]
fn the_example_rules_load_with_their_lists() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let r = Ruleset::load(&dir).unwrap_or_else(|d| panic!("{d}"));
    assert!(r.lists.contains_key("target_industries"), "{:?}", r.lists);
}
