//! A plugin's answer as the host receives it ([`RawEffect`]s, attribute
//! values still JSON text), checked and lifted into [`PluginEffect`]s: size
//! caps, values that are JSON, no empty keys or tags. Pure, so the WASM host
//! and the fuzz target run the same checks.

use super::PluginEffect;
use crate::model::bounds::truncate;

/// At most this many effects per call.
pub const MAX_EFFECTS: usize = 256;
/// At most this many bytes of text (reasons, keys, JSON values, tags, the
/// error) per call.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// An effect as a plugin's answer carries it, before the host checks it.
#[derive(Debug, Clone)]
pub enum RawEffect {
    Points { points: i64, reason: String },
    SetAttribute { key: String, value: String },
    Tag(String),
}

/// Checks a plugin's answer. Anything wrong fails the whole call (no effect).
pub fn lift(effects: Vec<RawEffect>) -> Result<Vec<PluginEffect>, String> {
    if effects.len() > MAX_EFFECTS {
        return Err(format!(
            "output too large: {} effects (at most {MAX_EFFECTS})",
            effects.len()
        ));
    }
    let bytes: usize = effects
        .iter()
        .map(|e| match e {
            RawEffect::Points { reason, .. } => reason.len(),
            RawEffect::SetAttribute { key, value } => key.len() + value.len(),
            RawEffect::Tag(t) => t.len(),
        })
        .sum();
    if bytes > MAX_OUTPUT_BYTES {
        return Err(format!(
            "output too large: {bytes} bytes of text (at most {MAX_OUTPUT_BYTES})"
        ));
    }
    effects
        .into_iter()
        .enumerate()
        .map(|(i, e)| match e {
            RawEffect::Points { points, reason } => Ok(PluginEffect::Points { points, reason }),
            RawEffect::SetAttribute { key, .. } if key.is_empty() => {
                Err(format!("invalid output: effect {i}: empty attribute key"))
            }
            RawEffect::SetAttribute { key, value } => match serde_json::from_str(&value) {
                Ok(value) => Ok(PluginEffect::SetAttribute { key, value }),
                Err(e) => Err(format!(
                    "invalid output: effect {i}: attribute `{}`: value is not JSON ({e})",
                    truncate(&key, 64)
                )),
            },
            RawEffect::Tag(t) if t.is_empty() => {
                Err(format!("invalid output: effect {i}: empty tag"))
            }
            RawEffect::Tag(tag) => Ok(PluginEffect::Tag { tag }),
        })
        .collect()
}
