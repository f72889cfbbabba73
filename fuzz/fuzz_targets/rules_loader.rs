//! The rules loader on arbitrary text: it must never panic, and every problem
//! it reports must point at a real place in the text (the marketer is told
//! file:line:col, so a position past the end would send them nowhere).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nurture_core::rules::Ruleset;
use std::path::Path;

const FILE: &str = "fuzz/rules.yaml";

fuzz_target!(|data: &[u8]| {
    // Rules files are read as UTF-8; other bytes are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Ruleset::from_text(Path::new(FILE), text) {
        Ok(rules) => {
            let _ = rules.summary();
        }
        Err(diags) => {
            assert!(!diags.0.is_empty(), "an error without a diagnostic");
            let lines: Vec<&str> = text.split('\n').collect();
            for d in &diags.0 {
                assert!(!d.message.trim().is_empty(), "empty message: {d:?}");
                if d.file != FILE {
                    continue; // e.g. a plugin's `wasm:` file that does not exist
                }
                assert!(
                    d.pos.line >= 1 && d.pos.line <= lines.len(),
                    "line {} outside the text ({} lines): {d}",
                    d.pos.line,
                    lines.len()
                );
                let width = lines[d.pos.line - 1].chars().count();
                assert!(
                    d.pos.col >= 1 && d.pos.col <= width + 1,
                    "column {} outside line {} ({width} characters): {d}",
                    d.pos.col,
                    d.pos.line
                );
            }
        }
    }
});
