//! Compiled components on disk, so a plugin is compiled by Cranelift once,
//! not at every start.
//!
//! An entry is named by the SHA-256 of the `.wasm` file and a hash of the
//! wasmtime version and engine settings; it holds the SHA-256 of the
//! artifact followed by the artifact. Precompiled code is only ever read from
//! here (never from a path a user names), and only after its digest matches;
//! anything unreadable is compiled again and rewritten.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The major version of wasmtime, in entry names (the engine hash also
/// covers the exact version).
const WASMTIME: &str = "wasmtime48";

/// Where compiled plugins are kept when nothing says otherwise:
/// `$NURTURE_CACHE_DIR`, else `$XDG_CACHE_HOME/nurture/plugins`, else
/// `$HOME/.cache/nurture/plugins`; `None` (compile in memory at every start)
/// if none of them is set.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("NURTURE_CACHE_DIR") {
        return Some(d);
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return Some(d.join("nurture").join("plugins"));
    }
    env("HOME").map(|h| h.join(".cache").join("nurture").join("plugins"))
}

/// The compiled `wasm` from the cache in `dir`, if it is there and intact.
pub fn lookup(engine: &Engine, dir: &Path, wasm: &[u8]) -> Option<Component> {
    read(engine, &dir.join(entry_name(engine, wasm)))
}

/// Keeps a compiled `wasm` in the cache in `dir`. A cache that cannot be
/// written only costs time.
pub fn store(engine: &Engine, dir: &Path, wasm: &[u8], component: &Component) {
    if let Ok(bytes) = component.serialize() {
        let _ = write(dir, &dir.join(entry_name(engine, wasm)), &bytes);
    }
}

fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!(
        "{}-{WASMTIME}-{:016x}.cwasm",
        hex(&Sha256::digest(wasm)),
        h.finish()
    )
}

fn read(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < 32 {
        return None;
    }
    let (digest, artifact) = bytes.split_at(32);
    if Sha256::digest(artifact).as_slice() != digest {
        return None;
    }
    // SAFETY: `artifact` was produced by `Component::serialize` of an engine
    // with the same settings (the entry name says so) and written by us into
    // our own cache directory; its digest has just been checked, so it is the
    // bytes we wrote. wasmtime also checks the version and settings again.
    unsafe { Component::deserialize(engine, artifact) }.ok()
}

fn write(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    {
        use std::io::Write;
        tmp.1.write_all(&Sha256::digest(artifact))?;
        tmp.1.write_all(artifact)?;
        tmp.1.sync_all()?;
    }
    // Atomic: readers see the old entry, none, or the whole new one.
    std::fs::rename(&tmp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.0);
    })
}

/// A new file only this process writes to.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    Ok((path.clone(), opts.open(&path)?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
