//! What a plugin may import, checked exactly before it is linked, and the
//! linker that gives it those imports.
//!
//! - Nurture's own package, `nurture:plugin`: only the interfaces and items
//!   this host has ([`PROVIDED`]), at a version it implements. Nothing of it
//!   is ever stubbed: a component built against a changed or newer copy of
//!   `plugins/wit/plugin.wit` is refused at load (`nurture check`), not
//!   failed on every call.
//! - The WASI interfaces toolchains link into every component for stdio,
//!   exit and panics ([`INERT_IMPORTS`]): inert implementations where a
//!   plain `panic!` or `println!` needs one (an empty environment, stdout
//!   and stderr into the call's log, no terminal), a trap for the rest.
//! - Anything else (clocks, random, files, sockets, ...) is refused.

use super::call::{CallState, Stream};
use super::wit::{self, INTERFACE};
use std::fmt;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, Resource, ResourceType, Val};
use wasmtime::Engine;

/// WASI interfaces that Rust's standard library (and other toolchains) link
/// into every component for stdio, exit and panics. A plugin may import them
/// at any version; see [`inert`] for what each function does.
pub const INERT_IMPORTS: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// The package the host implements, without its version.
const PACKAGE: &str = "nurture:plugin";

/// Every interface of `nurture:plugin` the host implements, with every item
/// (functions and types) in it, as in `plugins/wit/plugin.wit` (a unit test
/// keeps the two the same).
pub const PROVIDED: &[(&str, &[&str])] = &[
    ("host", &["level", "log"]),
    (
        "types",
        &[
            "stage",
            "consent",
            "timestamp",
            "lead",
            "event",
            "points",
            "attribute",
            "effect",
        ],
    ),
];

/// Why a component's imports are refused. Every problem is listed.
#[derive(Debug, thiserror::Error)]
pub struct ImportError(pub Vec<Refusal>);

#[derive(Debug)]
pub enum Refusal {
    /// A `nurture:plugin` import of a version the host does not implement.
    Version { import: String },
    /// An interface of `nurture:plugin` that does not exist.
    Interface { import: String },
    /// An item of one of our interfaces that the host does not have.
    Item { import: String, item: String },
    /// Anything outside `nurture:plugin` and the inert WASI interfaces.
    Foreign { import: String },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (foreign, ours): (Vec<_>, Vec<_>) = self
            .0
            .iter()
            .partition(|r| matches!(r, Refusal::Foreign { .. }));
        let mut parts = Vec::new();
        if !foreign.is_empty() {
            let names: Vec<String> = foreign
                .iter()
                .map(|r| match r {
                    Refusal::Foreign { import } => format!("`{import}`"),
                    _ => String::new(),
                })
                .collect();
            parts.push(format!(
                "imports {}, which Nurture does not provide (plugins get no clock, randomness, files or network; only `log`)",
                names.join(", ")
            ));
        }
        let versions: Vec<String> = ours
            .iter()
            .filter_map(|r| match r {
                Refusal::Version { import } => Some(format!("`{import}`")),
                _ => None,
            })
            .collect();
        if !versions.is_empty() {
            parts.push(format!(
                "imports {}, but this Nurture implements `{INTERFACE}` ({}): build the plugin against plugins/wit/plugin.wit of this version",
                versions.join(", "),
                provided_interfaces()
            ));
        }
        for r in ours {
            match r {
                Refusal::Interface { import } => parts.push(format!(
                    "imports `{import}`, which Nurture does not provide: `{INTERFACE}` has {}",
                    provided_interfaces()
                )),
                Refusal::Item { import, item } => parts.push(format!(
                    "imports `{item}` from `{import}`, which Nurture does not provide: its `{import}` has {}",
                    provided_items(import)
                )),
                Refusal::Version { .. } | Refusal::Foreign { .. } => {}
            }
        }
        f.write_str(&parts.join("; "))
    }
}

fn provided_interfaces() -> String {
    let version = version_of(INTERFACE).unwrap_or_default();
    PROVIDED
        .iter()
        .map(|(i, _)| format!("`{PACKAGE}/{i}@{version}`"))
        .collect::<Vec<_>>()
        .join(" and ")
}

fn provided_items(import: &str) -> String {
    let iface = interface_of(import).unwrap_or_default();
    PROVIDED
        .iter()
        .find(|(i, _)| *i == iface)
        .map(|(_, items)| {
            items
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `1.2.3` of `ns:pkg/iface@1.2.3`.
fn version_of(name: &str) -> Option<&str> {
    name.split_once('@').map(|(_, v)| v)
}

/// `iface` of `nurture:plugin/iface@...`, if the name is in our package.
fn interface_of(name: &str) -> Option<&str> {
    let bare = name.split('@').next().unwrap_or(name);
    bare.strip_prefix(PACKAGE)?.strip_prefix('/')
}

/// Whether a plugin built against `version` of our package runs on this
/// host: the same semver track (`0.1.x` for `0.1.0`) and not newer than
/// what the host implements, which may lack what was added since.
fn compatible(version: &str) -> bool {
    let (Ok(want), Some(Ok(have))) = (
        semver::Version::parse(version),
        version_of(INTERFACE).map(semver::Version::parse),
    ) else {
        return false;
    };
    let same_track = if have.major == 0 {
        want.major == 0 && want.minor == have.minor
    } else {
        want.major == have.major
    };
    same_track
        && want.pre.is_empty()
        && (want.major, want.minor, want.patch) <= (have.major, have.minor, have.patch)
}

/// Checks every import of `component` and links it: the host's interfaces
/// and the inert WASI ones, and nothing else.
pub fn link(engine: &Engine, component: &Component) -> Result<Linker<CallState>, LinkError> {
    let ty = component.component_type();
    let mut refused = Vec::new();
    let mut inert_imports = Vec::new();
    for (name, import) in ty.imports(engine) {
        let bare = name.split('@').next().unwrap_or(name);
        if let Some(iface) = interface_of(name) {
            let Some((_, items)) = PROVIDED.iter().find(|(i, _)| *i == iface) else {
                refused.push(Refusal::Interface {
                    import: name.to_string(),
                });
                continue;
            };
            if !version_of(name).is_some_and(compatible) {
                refused.push(Refusal::Version {
                    import: name.to_string(),
                });
                continue;
            }
            if let ComponentItem::ComponentInstance(inst) = &import.ty {
                for (item, _) in inst.exports(engine) {
                    if !items.contains(&item) {
                        refused.push(Refusal::Item {
                            import: name.to_string(),
                            item: item.to_string(),
                        });
                    }
                }
            }
        } else if INERT_IMPORTS.contains(&bare) {
            inert_imports.push((name.to_string(), import.ty));
        } else {
            refused.push(Refusal::Foreign {
                import: name.to_string(),
            });
        }
    }
    if !refused.is_empty() {
        return Err(LinkError::Imports(ImportError(refused)));
    }
    let mut linker: Linker<CallState> = Linker::new(engine);
    wit::Scorer::add_to_linker::<CallState, wasmtime::component::HasSelf<CallState>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| LinkError::Link(format!("{e:#}")))?;
    for (name, item) in inert_imports {
        let ComponentItem::ComponentInstance(inst) = item else {
            return Err(LinkError::Imports(ImportError(vec![Refusal::Foreign {
                import: name,
            }])));
        };
        let bare = name.split('@').next().unwrap_or(&name).to_string();
        let mut li = linker
            .instance(&name)
            .map_err(|e| LinkError::Link(format!("{e:#}")))?;
        for (item, ty) in inst.exports(engine) {
            define_inert(&mut li, &bare, &name, item, &ty.ty)
                .map_err(|e| LinkError::Link(format!("`{name}#{item}`: {e:#}")))?;
        }
    }
    Ok(linker)
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Imports(ImportError),
    #[error("cannot link: {0}")]
    Link(String),
}

/// The output streams a plugin can get: their handles' representations.
const STDOUT: u32 = 1;
const STDERR: u32 = 2;

/// The type of `wasi:io/streams.output-stream` handles we give out.
struct OutputStream;
/// Every other WASI resource: never handed out, only named in types.
struct OtherResource;

/// A call into WASI that has no inert meaning: it ends the call, saying so.
#[derive(Debug, thiserror::Error)]
#[error("called `{0}`, which Nurture does not provide to plugins")]
pub struct Unprovided(pub String);

/// A plugin that calls `wasi:cli/exit`: the call ends there.
#[derive(Debug, thiserror::Error)]
#[error("called `{0}` (plugins return from `score`; they do not exit)")]
pub struct Exited(pub String);

/// Defines one item of an inert WASI interface. `bare` is the interface
/// name without its version; `full` with it, for messages.
fn define_inert(
    li: &mut LinkerInstance<'_, CallState>,
    bare: &str,
    full: &str,
    item: &str,
    ty: &ComponentItem,
) -> wasmtime::Result<()> {
    match ty {
        ComponentItem::Resource(_) => {
            // The same resource is named again by every interface that
            // `use`s it (`wasi:cli/stderr` names `output-stream`): by name.
            let rt = if item == "output-stream" {
                ResourceType::host::<OutputStream>()
            } else {
                ResourceType::host::<OtherResource>()
            };
            li.resource(item, rt, |_, _| Ok(()))
        }
        ComponentItem::ComponentFunc(_) => {
            let what = inert(bare, item);
            let name = format!("{full}#{item}");
            li.func_new(item, move |mut store, _, params, results| {
                if what != Inert::Write {
                    // Handles the plugin lent us must be given back.
                    release(params, &mut store)?;
                }
                match what {
                    Inert::Empty => {
                        if let Some(r) = results.first_mut() {
                            *r = Val::List(Vec::new());
                        }
                    }
                    Inert::Nothing => {
                        if let Some(r) = results.first_mut() {
                            *r = Val::Option(None);
                        }
                    }
                    Inert::Ok => {
                        if let Some(r) = results.first_mut() {
                            *r = Val::Result(Ok(None));
                        }
                    }
                    Inert::CanWrite => {
                        if let Some(r) = results.first_mut() {
                            *r = Val::Result(Ok(Some(Box::new(Val::U64(CHECK_WRITE)))));
                        }
                    }
                    Inert::Stream(rep) => {
                        let any = Resource::<OutputStream>::new_own(rep)
                            .try_into_resource_any(&mut store)?;
                        if let Some(r) = results.first_mut() {
                            *r = Val::Resource(any);
                        }
                    }
                    Inert::Pollable => {
                        let any = Resource::<OtherResource>::new_own(0)
                            .try_into_resource_any(&mut store)?;
                        if let Some(r) = results.first_mut() {
                            *r = Val::Resource(any);
                        }
                    }
                    Inert::Ready => {
                        if let Some(r) = results.first_mut() {
                            *r = Val::Bool(true);
                        }
                    }
                    Inert::AllReady => {
                        let n = match params.first() {
                            Some(Val::List(l)) => l.len(),
                            _ => 0,
                        };
                        if let Some(r) = results.first_mut() {
                            *r = Val::List((0..n as u32).map(Val::U32).collect());
                        }
                    }
                    Inert::Done => {}
                    Inert::Write => {
                        let (Some(Val::Resource(stream)), Some(Val::List(bytes))) =
                            (params.first(), params.get(1))
                        else {
                            return Err(Unprovided(name.clone()).into());
                        };
                        let rep =
                            Resource::<OutputStream>::try_from_resource_any(*stream, &mut store)?
                                .rep();
                        let bytes: Vec<u8> = bytes
                            .iter()
                            .filter_map(|b| match b {
                                Val::U8(b) => Some(*b),
                                _ => None,
                            })
                            .collect();
                        let stream = if rep == STDERR {
                            Stream::Stderr
                        } else {
                            Stream::Stdout
                        };
                        store.data_mut().output(stream, &bytes);
                        if let Some(r) = results.first_mut() {
                            *r = Val::Result(Ok(None));
                        }
                    }
                    Inert::Exit => return Err(Exited(name.clone()).into()),
                    Inert::Trap => return Err(Unprovided(name.clone()).into()),
                }
                Ok(())
            })
        }
        // Type exports have no implementation to give.
        _ => Ok(()),
    }
}

/// Ends the borrows of the resource handles in `params`: a host function
/// with dynamic types must, or the call fails when it returns.
fn release(
    params: &[Val],
    store: &mut wasmtime::StoreContextMut<'_, CallState>,
) -> wasmtime::Result<()> {
    for p in params {
        match p {
            Val::Resource(any) => any.resource_drop(&mut *store)?,
            Val::List(items) => release(items, store)?,
            _ => {}
        }
    }
    Ok(())
}

/// How many bytes `check-write` allows at once: std writes in pieces.
const CHECK_WRITE: u64 = 4096;

/// What one WASI function does for a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inert {
    /// Returns an empty list (no environment, no arguments).
    Empty,
    /// Returns `none` (no terminal, no working directory).
    Nothing,
    /// Returns `ok`.
    Ok,
    /// `check-write`: room for [`CHECK_WRITE`] bytes.
    CanWrite,
    /// Returns the stdout or stderr stream.
    Stream(u32),
    /// `subscribe`: a pollable that is always ready (writes never wait).
    Pollable,
    /// `pollable.ready`: true.
    Ready,
    /// `poll`: every pollable given is ready.
    AllReady,
    /// Returns nothing (`pollable.block`).
    Done,
    /// Writes to a stream: the bytes go to the call's log.
    Write,
    /// `wasi:cli/exit`: ends the call.
    Exit,
    /// Everything else: ends the call, naming the function.
    Trap,
}

/// What the WASI function `item` of interface `bare` does for a plugin:
/// just enough for std's panic and print paths (read `RUST_BACKTRACE`,
/// write to stderr) to work and the panic message to reach the log.
fn inert(bare: &str, item: &str) -> Inert {
    match (bare, item) {
        ("wasi:cli/environment", "get-environment" | "get-arguments") => Inert::Empty,
        ("wasi:cli/environment", "initial-cwd") => Inert::Nothing,
        ("wasi:cli/stdout", "get-stdout") => Inert::Stream(STDOUT),
        ("wasi:cli/stderr", "get-stderr") => Inert::Stream(STDERR),
        (
            "wasi:cli/terminal-stdin" | "wasi:cli/terminal-stdout" | "wasi:cli/terminal-stderr",
            _,
        ) if item.starts_with("get-terminal-") => Inert::Nothing,
        ("wasi:cli/exit", _) => Inert::Exit,
        ("wasi:io/streams", "[method]output-stream.check-write") => Inert::CanWrite,
        (
            "wasi:io/streams",
            "[method]output-stream.write" | "[method]output-stream.blocking-write-and-flush",
        ) => Inert::Write,
        (
            "wasi:io/streams",
            "[method]output-stream.flush" | "[method]output-stream.blocking-flush",
        ) => Inert::Ok,
        ("wasi:io/streams", "[method]output-stream.subscribe") => Inert::Pollable,
        ("wasi:io/poll", "[method]pollable.ready") => Inert::Ready,
        ("wasi:io/poll", "[method]pollable.block") => Inert::Done,
        ("wasi:io/poll", "poll") => Inert::AllReady,
        _ => Inert::Trap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROVIDED lists exactly the interfaces and items of the WIT file.
    #[test]
    fn provided_matches_the_wit() {
        let wit = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/wit/plugin.wit"),
        )
        .unwrap();
        let mut found: Vec<(String, Vec<String>)> = Vec::new();
        for line in wit.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["interface", name, ..] => found.push((name.to_string(), vec![])),
                ["}"] | [] => {}
                [kind, name, ..]
                    if ["enum", "record", "variant", "type", "flags", "resource"]
                        .contains(kind) =>
                {
                    if let Some((_, items)) = found.last_mut() {
                        items.push(name.trim_end_matches(['{', ';']).to_string());
                    }
                }
                [name, ..] if line.contains(": func(") => {
                    if let Some((_, items)) = found.last_mut() {
                        items.push(name.trim_end_matches(':').to_string());
                    }
                }
                _ => {}
            }
            if line.starts_with("world ") {
                break;
            }
        }
        found.sort();
        let mut provided: Vec<(String, Vec<String>)> = PROVIDED
            .iter()
            .map(|(i, items)| (i.to_string(), items.iter().map(|s| s.to_string()).collect()))
            .collect();
        provided.sort();
        assert_eq!(found, provided);
        assert_eq!(version_of(INTERFACE), Some("0.1.0"));
        assert!(wit.contains(&format!("package {INTERFACE};")));
    }

    #[test]
    fn versions_on_the_same_track_and_not_newer_are_compatible() {
        assert!(compatible("0.1.0"));
        for v in ["0.2.0", "0.1.1", "1.0.0", "0.0.1", "0.1.0-rc1", "x"] {
            assert!(!compatible(v), "{v}");
        }
        assert_eq!(interface_of("nurture:plugin/host@0.1.0"), Some("host"));
        assert_eq!(interface_of("nurture:pluginx/host@0.1.0"), None);
        assert_eq!(interface_of("wasi:cli/stderr@0.2.6"), None);
    }
}
