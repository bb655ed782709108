//! Hash functions loaded at run time from shared libraries (see the `lb-plugin-abi` crate).
//!
//! The plugin called `NAME` is the file `liblb_hash_NAME.so` (dashes in `NAME` become
//! underscores), looked up in order in: the `[plugins] dirs` of `lb.toml` (relative to the file's
//! directory), the directories in `$LB_PLUGIN_PATH` (colon-separated), the directory of the `lb`
//! executable, and its `plugins/` subdirectory. After `cargo build --release` the shipped plugins
//! sit next to `target/release/lb`, so they are found with no configuration.
//!
//! Loading checks, in order: the file is a loadable library, it exports `lb_hash_plugin`, the
//! table's ABI version is the one this `lb` speaks, its name is the one asked for, and a
//! self-check on sample inputs (no panic, deterministic, not constant). Any failure is an error
//! naming the file and the reason; the caller keeps the hash it had.
//!
//! A loaded library stays loaded as long as any ring uses its functions: each [`PluginHash`]
//! holds the library, and each ring holds its hash.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use lb_plugin_abi::ABI_VERSION;
use lb_plugin_abi::{EntryFn, PluginV1, RequestFn, VirtualNodeFn, ENTRY_SYMBOL, STATUS_OK};
use libloading::Library;
use serde::Serialize;

use crate::hash::{HashError, RingHash};

/// The plugins this project ships (crates `plugins/NAME`, packages `lb-hash-NAME`), in the order
/// they are shown. `docker/build-images.sh` copies the same list into the `lb` image.
pub const SHIPPED: [&str; 7] = [
    "spec",
    "spec-misread",
    "murmur3",
    "splitmix64",
    "xxh3",
    "fnv1a",
    "ketama",
];

/// Environment variable with extra plugin directories (colon-separated).
pub const PATH_VARIABLE: &str = "LB_PLUGIN_PATH";

/// The file name of the plugin called `name`.
pub fn file_name(name: &str) -> String {
    format!("liblb_hash_{}.so", name.replace('-', "_"))
}

/// Why a plugin could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// No file for that name in any plugin directory.
    #[error("no plugin {name:?}: {file} is not in any plugin directory ({searched})")]
    NotFound {
        /// The plugin asked for.
        name: String,
        /// The file looked for.
        file: String,
        /// The directories searched.
        searched: String,
    },
    /// `dlopen` failed.
    #[error("{path}: not a loadable library: {reason}")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },
    /// The library has no entry symbol.
    #[error("{path}: not an lb hash plugin (it exports no `{ENTRY_SYMBOL}` symbol)")]
    NoEntry {
        /// The file.
        path: PathBuf,
    },
    /// The entry point returned a null table.
    #[error("{path}: the plugin's entry point returned no table")]
    NoTable {
        /// The file.
        path: PathBuf,
    },
    /// Built against another version of the ABI.
    #[error(
        "{path}: plugin ABI version {found}, but this lb speaks version {expected}; \
         rebuild the plugin against lb-plugin-abi with ABI_VERSION {expected}"
    )]
    WrongAbi {
        /// The file.
        path: PathBuf,
        /// The plugin's version.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// Name or description is not UTF-8.
    #[error("{path}: the plugin's name or description is not valid UTF-8")]
    BadString {
        /// The file.
        path: PathBuf,
    },
    /// The file holds a plugin with another name.
    #[error("{path}: the plugin calls itself {found:?}, not {expected:?}")]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// Its name.
        found: String,
        /// The name asked for.
        expected: String,
    },
    /// The plugin's functions misbehaved on sample inputs.
    #[error("{path}: self-check failed: {reason}")]
    SelfCheck {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The directories searched for plugins, in order, without duplicates.
pub fn search_path(configured: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = configured.to_vec();
    if let Some(env) = std::env::var_os(PATH_VARIABLE) {
        dirs.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("plugins"));
        dirs.insert(dirs.len() - 1, exe_dir);
    }
    let mut unique = Vec::new();
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

/// The file of the plugin called `name` in `dirs`.
pub fn find(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    let file = file_name(name);
    dirs.iter()
        .map(|dir| dir.join(&file))
        .find(|path| path.is_file())
        .ok_or_else(|| PluginError::NotFound {
            name: name.to_owned(),
            file,
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A hash function pair from a plugin.
pub struct PluginHash {
    name: String,
    description: String,
    path: PathBuf,
    abi_version: u32,
    hash_request: RequestFn,
    hash_virtual: VirtualNodeFn,
    /// Calls of H that panicked (each answered with the request id itself).
    panics: AtomicU64,
    /// Keeps the code of the two functions mapped.
    _library: Library,
}

impl std::fmt::Debug for PluginHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHash")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PluginHash {
    /// Load the plugin in `path`; with `expected_name`, also check it has that name.
    pub fn load(path: &Path, expected_name: Option<&str>) -> Result<PluginHash, PluginError> {
        let path = path.to_path_buf();
        // SAFETY: loading a library runs its initialisers; plugins come from the operator's
        // plugin directories, which are trusted like the lb binary itself.
        let library = unsafe { Library::new(&path) }.map_err(|e| PluginError::NotALibrary {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // SAFETY: the symbol's type is fixed by the ABI.
        let entry: EntryFn = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL.as_bytes()) }
            .map(|symbol| *symbol)
            .map_err(|_| PluginError::NoEntry { path: path.clone() })?;
        // SAFETY: calling the entry point of a library that exports it under the ABI's name.
        let table: *const PluginV1 = unsafe { entry() };
        if table.is_null() {
            return Err(PluginError::NoTable { path });
        }
        // The version is the first field in every version of the table: read it alone first.
        // SAFETY: non-null and points at the plugin's static table.
        let found = unsafe { table.cast::<u32>().read() };
        if found != ABI_VERSION {
            return Err(PluginError::WrongAbi {
                path,
                found,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: a version-1 table, static in the library, which we keep loaded.
        let table = unsafe { &*table };
        let text = |ptr: *const std::os::raw::c_char| -> Option<String> {
            if ptr.is_null() {
                return None;
            }
            // SAFETY: the ABI requires NUL-terminated static strings.
            unsafe { CStr::from_ptr(ptr) }
                .to_str()
                .ok()
                .map(str::to_owned)
        };
        let (Some(name), Some(description)) = (text(table.name), text(table.description)) else {
            return Err(PluginError::BadString { path });
        };
        if let Some(expected) = expected_name {
            if name != expected {
                return Err(PluginError::NameMismatch {
                    path,
                    found: name,
                    expected: expected.to_owned(),
                });
            }
        }
        let plugin = PluginHash {
            name,
            description,
            path,
            abi_version: found,
            hash_request: table.hash_request,
            hash_virtual: table.hash_virtual,
            panics: AtomicU64::new(0),
            _library: library,
        };
        plugin
            .self_check()
            .map_err(|reason| PluginError::SelfCheck {
                path: plugin.path.clone(),
                reason,
            })?;
        Ok(plugin)
    }

    /// The plugin's one-line description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls of H that panicked so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    fn try_request(&self, request_id: u64) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: a function from the loaded table; `out` is a valid u64.
        let status = unsafe { (self.hash_request)(request_id, &mut out) };
        (status == STATUS_OK).then_some(out)
    }

    /// H and Φ on sample inputs: no panic, the same answer twice, and H not constant.
    fn self_check(&self) -> Result<(), String> {
        const REQUESTS: [u64; 8] = [0, 1, 2, 3, 42, 123_456, 999_999, u64::MAX];
        let mut first = Vec::new();
        for r in REQUESTS {
            let a = self
                .try_request(r)
                .ok_or_else(|| format!("H({r}) panicked"))?;
            let b = self
                .try_request(r)
                .ok_or_else(|| format!("H({r}) panicked"))?;
            if a != b {
                return Err(format!("H({r}) is not deterministic ({a} then {b})"));
            }
            first.push(a);
        }
        if first.iter().all(|&v| v == first[0]) {
            return Err(format!(
                "H returns {} for every sample; it would send all requests to one replica",
                first[0]
            ));
        }
        for i in 1..=4 {
            for j in 0..9 {
                let a = self.virtual_node(i, j).map_err(|e| e.reason)?;
                let b = self.virtual_node(i, j).map_err(|e| e.reason)?;
                if a != b {
                    return Err(format!("Φ({i}, {j}) is not deterministic ({a} then {b})"));
                }
            }
        }
        Ok(())
    }

    /// What `/_lb/plugins` shows for it.
    pub fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.clone(),
            description: Some(self.description.clone()),
            abi_version: Some(self.abi_version),
            path: Some(self.path.display().to_string()),
            error: None,
            loaded: true,
        }
    }
}

impl RingHash for PluginHash {
    fn name(&self) -> &str {
        &self.name
    }

    /// H from the plugin. A panic is contained: the request id itself is used instead, the
    /// panic is counted, and the first one (then every power of two) is logged.
    #[inline]
    fn request(&self, request_id: u64) -> u64 {
        match self.try_request(request_id) {
            Some(value) => value,
            None => {
                let n = self.panics.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        plugin = %self.name,
                        request_id,
                        panics = n,
                        "hash plugin panicked in H; routing by the request id itself"
                    );
                }
                request_id
            }
        }
    }

    fn virtual_node(&self, server_id: u64, replica: u64) -> Result<u64, HashError> {
        let mut out = 0u64;
        // SAFETY: a function from the loaded table; `out` is a valid u64.
        let status = unsafe { (self.hash_virtual)(server_id, replica, &mut out) };
        if status == STATUS_OK {
            Ok(out)
        } else {
            Err(HashError {
                hash: self.name.clone(),
                server_id,
                replica,
                reason: format!("Φ({server_id}, {replica}) panicked"),
            })
        }
    }
}

/// A plugin file found in a plugin directory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name (from the file name if it could not be loaded).
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Its ABI version.
    pub abi_version: Option<u32>,
    /// The file (none for compiled-in hashes).
    pub path: Option<String>,
    /// Why it cannot be used, if it cannot.
    pub error: Option<String>,
    /// Whether it has been loaded into this process (listing alone never loads one).
    pub loaded: bool,
}

/// Every `liblb_hash_*.so` in `dirs` (the first of each name wins, as in [`find`]), by file
/// name only: listing never loads a library (loading runs the library's code). Plugins loaded
/// before — because a configuration selected them — show what loading found: description and
/// ABI version, or why they cannot be used.
pub fn list(dirs: &[PathBuf]) -> Vec<PluginInfo> {
    let mut found: Vec<PluginInfo> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files {
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("liblb_hash_"))
                .and_then(|n| n.strip_suffix(".so"))
            else {
                continue;
            };
            let file_name = stem.replace('_', "-");
            if found.iter().any(|p| p.name.replace('_', "-") == file_name) {
                continue;
            }
            found.push(match cached(&path) {
                Some(Ok(plugin)) => plugin.info(),
                Some(Err(e)) => PluginInfo {
                    name: file_name,
                    description: None,
                    abi_version: None,
                    path: Some(path.display().to_string()),
                    error: Some(e.to_string()),
                    loaded: false,
                },
                None => PluginInfo {
                    name: file_name,
                    description: None,
                    abi_version: None,
                    path: Some(path.display().to_string()),
                    error: None,
                    loaded: false,
                },
            });
        }
    }
    found
}

/// What identifies a plugin file's content: its path and the file's identity and age (a file
/// replaced or rewritten is a different plugin).
type FileKey = (PathBuf, u64, u64, i64, i64);

fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((
        path.to_path_buf(),
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
    ))
}

/// Results of loading plugin files, so a library is loaded (and its code run) once.
fn cache() -> &'static std::sync::Mutex<std::collections::HashMap<FileKey, Loaded>> {
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<FileKey, Loaded>>,
    > = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

type Loaded = Result<Arc<PluginHash>, PluginError>;

fn cached(path: &Path) -> Option<Loaded> {
    let key = file_key(path)?;
    cache().lock().ok()?.get(&key).cloned()
}

/// Load `path` once (per file content) and remember the result, success or failure.
fn load_cached(path: &Path, name: &str) -> Loaded {
    let key = file_key(path);
    if let Some(hit) = key
        .as_ref()
        .and_then(|key| cache().lock().ok()?.get(key).cloned())
    {
        return hit;
    }
    let loaded = PluginHash::load(path, Some(name)).map(Arc::new);
    if let (Some(key), Ok(mut cache)) = (key, cache().lock()) {
        cache.insert(key, loaded.clone());
    }
    loaded
}

/// Resolve the plugin called `name` in `dirs`.
///
/// Each plugin file is loaded once: later calls get the same plugin (or the same error) until
/// the file is replaced or rewritten.
pub fn resolve(name: &str, dirs: &[PathBuf]) -> Result<Arc<PluginHash>, PluginError> {
    let path = find(name, dirs)?;
    load_cached(&path, name)
}

/// The hash called `name`: compiled in (these names win), or the plugin of that name in `dirs`.
pub fn resolve_any(name: &str, dirs: &[PathBuf]) -> Result<Arc<dyn RingHash>, PluginError> {
    match crate::hash::builtin(name) {
        Some(hash) => Ok(hash),
        None => resolve(name, dirs).map(|p| p as Arc<dyn RingHash>),
    }
}
