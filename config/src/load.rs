//! Reading the configuration: the file, then environment variables, then flags.
//!
//! Every layer is merged into one TOML table before it is turned into a [`Config`], so a key
//! set by a flag replaces the same key from the environment, which replaces the file's. The
//! layer that set each key is remembered, and errors say where the bad value came from.

use std::{
    collections::BTreeMap,
    fmt, io,
    path::{Path, PathBuf},
};

use crate::{Config, Error};

/// Where `tapvault` looks for its configuration when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/tapvault/tapvault.toml";
/// Prefix of the environment variables that override the file:
/// `TAPVAULT_<SECTION>_<KEY>`, the dotted key upper-cased with `.` as `_`
/// (`capture.umem_frames` is `TAPVAULT_CAPTURE_UMEM_FRAMES`).
pub const ENV_PREFIX: &str = "TAPVAULT_";

const SECTIONS: [&str; 5] = ["capture", "flow", "storage", "api", "log"];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Not set anywhere: the built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (as given, e.g. `--set capture.interface=eth1`).
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(s) => write!(f, "flag {s}"),
        }
    }
}

/// One invalid value and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key and what is wrong.
    pub error: Error,
    /// Where the value came from.
    pub origin: Origin,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Default => write!(f, "`{}`: {}", self.error.key, self.error.reason),
            o => write!(f, "`{}` (from {o}): {}", self.error.key, self.error.reason),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read configuration file `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The file is not TOML.
    #[error("configuration file `{path}` is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// An environment variable or flag that names no key, or a value that does not parse.
    #[error("invalid {origin}: {reason}")]
    Override {
        /// The variable or flag.
        origin: Origin,
        /// What is wrong.
        reason: String,
    },
    /// Values of the right syntax that are wrong: type errors, unknown keys, out of range,
    /// impossible combinations. Every problem found is listed.
    #[error("{}", list(problems))]
    Invalid {
        /// Each problem with its origin.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    let mut s = String::from("invalid configuration");
    if let [p] = problems {
        s.push_str(&format!(" {p}"));
    } else {
        s.push_str(&format!(" ({} problems):", problems.len()));
        for p in problems {
            s.push_str(&format!("\n  {p}"));
        }
    }
    s
}

impl LoadError {
    /// The dotted keys this error is about (empty for read and syntax errors).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            LoadError::Invalid { problems } => {
                problems.iter().map(|p| p.error.key.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Every settable key (dotted) with its default value, in file order.
pub fn keys() -> Vec<(String, toml::Value)> {
    let table = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut out = Vec::new();
    leaves("", &table, &mut out);
    out
}

fn leaves(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => leaves(&key, sub, out),
            v => out.push((key, v.clone())),
        }
    }
}

/// The dotted keys of the leaves of a table.
#[cfg(test)]
pub(crate) fn keys_in(t: &toml::Table, out: &mut Vec<String>) {
    let mut all = Vec::new();
    leaves("", t, &mut all);
    out.extend(all.into_iter().map(|(k, _)| k));
}

/// The environment variable that overrides a dotted key.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Edit distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    candidates
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

/// Drops the deserializer's "in `path`" line (the key is reported already) and adds a "did
/// you mean" hint to unknown fields.
fn tidy(msg: &str) -> String {
    let mut m = msg.trim_end().to_string();
    if let Some(i) = m.find("\nin `") {
        m.truncate(i);
    }
    if let Some(rest) = m.strip_prefix("unknown field `")
        && let Some((field, tail)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        m.push_str(&suggest(field, candidates.into_iter()));
    }
    m
}

fn parse_inline(raw: &str) -> Option<toml::Value> {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
}

/// Turns an override's text into a value of the key's type.
fn convert(raw: &str, default: &toml::Value) -> Result<toml::Value, String> {
    let t = raw.trim();
    match default {
        toml::Value::String(_) if t.starts_with('[') => {
            parse_inline(t).ok_or_else(|| format!("\"{raw}\" is not a TOML list"))
        }
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_string())),
        toml::Value::Integer(_) => t
            .replace('_', "")
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("\"{raw}\" is not an integer")),
        toml::Value::Float(_) => t
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("\"{raw}\" is not a number")),
        toml::Value::Boolean(_) => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("\"{raw}\" is not a boolean (true or false)")),
        },
        toml::Value::Array(_) if t.is_empty() => Ok(toml::Value::Array(Vec::new())),
        toml::Value::Array(_) => parse_inline(t)
            .filter(toml::Value::is_array)
            .or_else(|| parse_inline(&format!("[{t}]")))
            .ok_or_else(|| format!("\"{raw}\" is not a list (write `[1, 2]` or `1,2`)")),
        _ => parse_inline(t).ok_or_else(|| format!("\"{raw}\" is not a TOML value")),
    }
}

/// Sets a dotted key in a table, creating the tables on the way.
fn set_path(root: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut t = root;
    for (i, p) in parts.iter().enumerate() {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is not a table in the file, so `{key}` cannot be set",
                parts[..=i].join(".")
            )
        })?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// The layers of a configuration, merged in order.
#[derive(Debug, Default)]
struct Merged {
    table: toml::Table,
    origins: BTreeMap<String, Origin>,
}

impl Merged {
    fn origin(&self, key: &str) -> Origin {
        // `capture.filter.rules[0].networks[1]` was set as part of `capture.filter.rules`.
        let mut k = key;
        loop {
            if let Some(o) = self.origins.get(k) {
                return o.clone();
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return Origin::Default,
            }
        }
    }

    fn file(&mut self, path: &Path, text: &str) -> Result<(), LoadError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| LoadError::Syntax {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_string(),
            })?;
        let mut all = Vec::new();
        leaves("", &table, &mut all);
        for (k, _) in all {
            self.origins.insert(k, Origin::File(path.to_owned()));
        }
        self.table = table;
        Ok(())
    }

    fn set(
        &mut self,
        key: &str,
        raw: &str,
        origin: Origin,
        known: &[(String, toml::Value)],
    ) -> Result<(), LoadError> {
        let bad = |reason: String| LoadError::Override {
            origin: origin.clone(),
            reason,
        };
        let Some((_, default)) = known.iter().find(|(k, _)| k == key) else {
            return Err(bad(format!(
                "`{key}` is not a configuration key{}",
                suggest(key, known.iter().map(|(k, _)| k.as_str()))
            )));
        };
        let value = convert(raw, default).map_err(|r| bad(format!("`{key}`: {r}")))?;
        set_path(&mut self.table, key, value).map_err(bad)?;
        // Keys below (none for leaves) and this one now come from here.
        self.origins.insert(key.to_string(), origin);
        Ok(())
    }

    fn env<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        env: impl IntoIterator<Item = (K, V)>,
        known: &[(String, toml::Value)],
    ) -> Result<(), LoadError> {
        let names: Vec<(String, &str)> = known
            .iter()
            .map(|(k, _)| (env_name(k), k.as_str()))
            .collect();
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .filter(|(k, _)| {
                SECTIONS
                    .iter()
                    .any(|s| k.starts_with(&format!("{ENV_PREFIX}{}_", s.to_ascii_uppercase())))
            })
            .collect();
        // Deterministic order (the environment has none).
        vars.sort();
        for (var, raw) in vars {
            match names.iter().find(|(n, _)| *n == var) {
                Some((_, key)) => self.set(key, &raw, Origin::Env(var.clone()), known)?,
                None => {
                    return Err(LoadError::Override {
                        reason: format!(
                            "it names no configuration key{}",
                            suggest(&var, names.iter().map(|(n, _)| n.as_str()))
                        ),
                        origin: Origin::Env(var),
                    });
                }
            }
        }
        Ok(())
    }

    fn flags(
        &mut self,
        overrides: &[String],
        known: &[(String, toml::Value)],
    ) -> Result<(), LoadError> {
        for o in overrides {
            let origin = Origin::Flag(format!("--set {o}"));
            let Some((key, raw)) = o.split_once('=') else {
                return Err(LoadError::Override {
                    origin,
                    reason: "expected section.key=value".into(),
                });
            };
            self.set(key.trim(), raw, origin, known)?;
        }
        Ok(())
    }

    fn build(self) -> Result<Config, LoadError> {
        let value = toml::Value::Table(self.table.clone());
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let reason = tidy(&e.inner().to_string());
            // An unknown key: the path ends at the unknown key itself.
            let error = Error {
                key: if key == "." { String::new() } else { key },
                reason,
            };
            LoadError::Invalid {
                problems: vec![Problem {
                    origin: self.origin(&error.key),
                    error,
                }],
            }
        })?;
        let problems: Vec<Problem> = config
            .problems()
            .into_iter()
            .map(|error| Problem {
                origin: self.origin(&error.key),
                error,
            })
            .collect();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(LoadError::Invalid { problems })
        }
    }
}

impl Config {
    /// Reads the configuration: `file` (or built-in defaults when `None`), then the
    /// `TAPVAULT_<SECTION>_<KEY>` variables among `env` (pass `std::env::vars()`), then
    /// `overrides` (`section.key=value`, in order, the last one winning), and checks the
    /// values ([`Config::problems`]; the machine is checked separately by
    /// [`Config::host_problems`]).
    pub fn load<K: AsRef<str>, V: AsRef<str>>(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (K, V)>,
        overrides: &[String],
    ) -> Result<Config, LoadError> {
        let text = match file {
            Some(p) => Some(
                std::fs::read_to_string(p).map_err(|source| LoadError::Read {
                    path: p.to_owned(),
                    source,
                })?,
            ),
            None => None,
        };
        Self::load_str(file.zip(text.as_deref()), env, overrides)
    }

    /// [`Config::load`] with the file's text given (`(name for messages, text)`).
    pub fn load_str<K: AsRef<str>, V: AsRef<str>>(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (K, V)>,
        overrides: &[String],
    ) -> Result<Config, LoadError> {
        let known = keys();
        let mut m = Merged::default();
        if let Some((path, text)) = file {
            m.file(path, text)?;
        }
        m.env(env, &known)?;
        m.flags(overrides, &known)?;
        m.build()
    }

    /// Parses a TOML document alone (no environment, no flags).
    pub fn from_toml(text: &str) -> Result<Config, LoadError> {
        Self::load_str(
            Some((Path::new("<config>"), text)),
            std::iter::empty::<(String, String)>(),
            &[],
        )
    }
}
