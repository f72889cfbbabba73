//! Compiling a plugin, bounded. Cranelift's time grows faster than the size
//! of a function (an 850 KiB function took half a minute, and the daemon's
//! start waited for it), so:
//!
//! - before Cranelift runs, wasmparser measures the code: at most
//!   [`MAX_FUNCTION_BYTES`] per function body and [`MAX_CODE_BYTES`] in all
//!   (deterministic: the same file is refused everywhere, at once);
//! - the compilation itself gets a wall-clock limit (`Options::compile_timeout`).
//!   Cranelift cannot be stopped, so a compilation past it goes on in the
//!   background, bounded by the sizes above, and lands in the compile cache,
//!   from where the next load takes it.

use super::cache;
use super::call::bytes as size;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The most code one function may have, in bytes of its body. The largest
/// function of the example plugins has 6 KiB; the worst shapes found at this
/// size compile in a few seconds.
pub const MAX_FUNCTION_BYTES: usize = 64 << 10;
/// The most code a component may have, in bytes of all function bodies of
/// all its core modules (the example plugins have about 100 KiB).
pub const MAX_CODE_BYTES: usize = 8 << 20;
/// How long a load waits for one plugin to compile, unless told otherwise.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "too large to compile: function {function} of core module {module} has {} of code (at most {} per function)",
        size(*bytes as u64),
        size(MAX_FUNCTION_BYTES as u64)
    )]
    FunctionTooLarge {
        /// Counted from 0 in the order the core modules appear.
        module: usize,
        /// Its index among the module's function bodies, from 0.
        function: usize,
        bytes: usize,
    },
    #[error(
        "too large to compile: {} of code (at most {} in all)",
        size(*bytes as u64),
        size(MAX_CODE_BYTES as u64)
    )]
    CodeTooLarge { bytes: usize },
    #[error("compiling took longer than {} s (the limit): it goes on in the background, and the next load of the rules uses the result if it succeeds", limit.as_secs_f64())]
    TimedOut { limit: Duration },
    #[error("not a valid component: {0}")]
    Invalid(String),
}

/// Refuses a component with more code than may be compiled. Only sizes are
/// read here; anything malformed is left for wasmtime to report.
pub fn check_sizes(wasm: &[u8]) -> Result<(), CompileError> {
    use wasmtime::wasmparser::{Encoding, Parser, Payload};
    let mut module: Option<usize> = None;
    let mut function = 0;
    let mut total = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::Version {
                encoding: Encoding::Module,
                ..
            }) => {
                module = Some(module.map_or(0, |m| m + 1));
                function = 0;
            }
            Ok(Payload::CodeSectionEntry(body)) => {
                let bytes = body.range().len();
                if bytes > MAX_FUNCTION_BYTES {
                    return Err(CompileError::FunctionTooLarge {
                        module: module.unwrap_or(0),
                        function,
                        bytes,
                    });
                }
                total += bytes;
                if total > MAX_CODE_BYTES {
                    return Err(CompileError::CodeTooLarge { bytes: total });
                }
                function += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// The component of `wasm`: from the cache in `dir`, else compiled within
/// the bounds above (and cached).
pub fn component(
    engine: &Engine,
    dir: Option<&Path>,
    wasm: &[u8],
    timeout: Duration,
) -> Result<Component, CompileError> {
    check_sizes(wasm)?;
    if let Some(c) = dir.and_then(|d| cache::lookup(engine, d, wasm)) {
        return Ok(c);
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let (engine2, wasm2, dir2): (Engine, Vec<u8>, Option<PathBuf>) =
        (engine.clone(), wasm.to_vec(), dir.map(Path::to_path_buf));
    let spawned = std::thread::Builder::new()
        .name("nurture-plugin-compile".into())
        .spawn(move || {
            let result = Component::new(&engine2, &wasm2);
            if let (Ok(c), Some(d)) = (&result, &dir2) {
                cache::store(&engine2, d, &wasm2, c);
            }
            // Nobody waits any more if the load gave up: that is fine.
            let _ = tx.send(result.map_err(|e| format!("{e:#}")));
        });
    if let Err(e) = spawned {
        return Err(CompileError::Invalid(format!(
            "cannot start a compiler thread: {e}"
        )));
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result.map_err(CompileError::Invalid),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(CompileError::TimedOut { limit: timeout }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(CompileError::Invalid(
            "the compiler stopped without a result".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_plugins_are_well_within_the_bounds() {
        for f in ["plugins/company_size.wasm", "plugins/free_mail.wasm"] {
            let wasm =
                std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(f)).unwrap();
            check_sizes(&wasm).unwrap();
        }
        assert!(check_sizes(b"not wasm").is_ok(), "left for wasmtime");
    }
}
