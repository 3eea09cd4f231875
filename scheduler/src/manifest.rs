//! Kubernetes YAML or JSON manifests to objects: multi-document files,
//! folders of them, and text from stdin.
//!
//! A manifest set is read whole before anything is applied: one bad document
//! fails the set, with an error that names the source, the document, the
//! object and the field. Fields that Kubernetes does not know for the kind
//! become warnings, as kubectl's are ("unknown field \"spec.replica\"").

use std::path::{Path, PathBuf};

use crate::object::{Kind, Object};
use crate::validate::{self, FieldError};

/// An object read from a manifest, with the warnings about it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The object, as written (no server-side fields filled in).
    pub object: Object,
    /// Where it came from: `FILE, document N`.
    pub origin: String,
    /// Fields that were ignored, each as `unknown field "PATH"`.
    pub warnings: Vec<String>,
}

/// Why a manifest set was refused. Nothing of the set is applied.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The text is not YAML or JSON.
    #[error("{origin}: not valid YAML: {message}")]
    Syntax {
        /// Where.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// `apiVersion` or `kind` is missing or names a kind berth does not run.
    #[error(
        "{origin}: unsupported kind {kind:?} (apiVersion {api_version:?}): berth supports v1 Namespace, v1 Pod, apps/v1 Deployment and apps/v1 ReplicaSet"
    )]
    UnsupportedKind {
        /// Where.
        origin: String,
        /// The `apiVersion` given.
        api_version: String,
        /// The `kind` given.
        kind: String,
    },
    /// A field has a value of the wrong type or an invalid value.
    #[error("{origin} ({kind} {name:?}): {error}")]
    Invalid {
        /// Where.
        origin: String,
        /// The object's kind.
        kind: Kind,
        /// The object's name.
        name: String,
        /// The field and what is wrong with it.
        error: FieldError,
    },
    /// The same object appears twice in one set.
    #[error("{origin}: {reference} is also defined in {first}")]
    Duplicate {
        /// Where the second copy is.
        origin: String,
        /// `kind/name`.
        reference: String,
        /// Where the first copy is.
        first: String,
    },
    /// A folder held no manifest files, or a text held no objects.
    #[error("{origin}: no objects found")]
    Empty {
        /// The file, folder or stream.
        origin: String,
    },
}

/// The largest manifest file read, so that a stray binary or a device path
/// cannot exhaust memory.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the manifests in `text`, which came from `source` (a file name or
/// `-` for stdin).
pub fn parse(text: &str, source: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = format!("{source}, document {}", index + 1);
        let yaml = <serde_norway::Value as serde::Deserialize>::deserialize(document).map_err(
            |error| ManifestError::Syntax {
                origin: origin.clone(),
                message: error.to_string(),
            },
        )?;
        if yaml.is_null() {
            continue;
        }
        let json: serde_json::Value =
            serde_json::to_value(&yaml).map_err(|error| ManifestError::Syntax {
                origin: origin.clone(),
                message: format!("not representable as JSON: {error}"),
            })?;
        manifests.extend(parse_value(json, &origin)?);
    }
    if manifests.is_empty() {
        return Err(ManifestError::Empty {
            origin: source.to_owned(),
        });
    }
    refuse_duplicates(&manifests)?;
    Ok(manifests)
}

/// Reads a file, or every `.yaml`, `.yml` and `.json` file of a folder (not
/// recursive, in name order, as `kubectl apply -f DIR` does).
pub fn read_path(path: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_dir() {
        return read_file(path);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|file| {
            file.is_file()
                && matches!(
                    file.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    let mut manifests = Vec::new();
    for file in files {
        manifests.extend(read_file(&file)?);
    }
    if manifests.is_empty() {
        return Err(ManifestError::Empty {
            origin: path.display().to_string(),
        });
    }
    refuse_duplicates(&manifests)?;
    Ok(manifests)
}

fn read_file(path: &Path) -> Result<Vec<Manifest>, ManifestError> {
    use std::io::Read;
    let read_error = |source| ManifestError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(read_error(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ))));
    }
    parse(&text, &path.display().to_string())
}

/// One document's value: an object, or a `v1 List` of objects.
fn parse_value(value: serde_json::Value, origin: &str) -> Result<Vec<Manifest>, ManifestError> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind_name) = (field("apiVersion"), field("kind"));
    if api_version == "v1" && kind_name == "List" {
        let items = value
            .get("items")
            .and_then(|items| items.as_array())
            .cloned()
            .unwrap_or_default();
        let mut manifests = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            manifests.extend(parse_value(item, &format!("{origin}, item {}", index + 1))?);
        }
        return Ok(manifests);
    }
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        return Err(ManifestError::UnsupportedKind {
            origin: origin.to_owned(),
            api_version,
            kind: kind_name,
        });
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_owned();
    let invalid = |error: FieldError| ManifestError::Invalid {
        origin: origin.to_owned(),
        kind,
        name: name.clone(),
        error,
    };
    let object = Object::from_json(kind, value.clone()).map_err(|error| {
        invalid(FieldError {
            field: String::new(),
            message: error.to_string(),
        })
    })?;
    let mut unknown = Vec::new();
    unknown_fields(&value, &object.to_json(), "", &mut unknown);
    let mut warnings: Vec<String> = unknown
        .into_iter()
        .map(|path| format!("unknown field {path:?}"))
        .collect();
    validate::object(&object, &mut warnings).map_err(invalid)?;
    Ok(vec![Manifest {
        object,
        origin: origin.to_owned(),
        warnings,
    }])
}

/// Paths present (and not null) in `input` that did not survive a round trip
/// through the typed object: the fields Kubernetes does not know.
fn unknown_fields(
    input: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (input, typed) {
        (Value::Object(given), Value::Object(kept)) => {
            for (key, value) in given {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match kept.get(key) {
                    None => out.push(child),
                    Some(kept_value) => unknown_fields(value, kept_value, &child, out),
                }
            }
        }
        (Value::Array(given), Value::Array(kept)) => {
            for (index, (value, kept_value)) in given.iter().zip(kept).enumerate() {
                unknown_fields(value, kept_value, &format!("{path}[{index}]"), out);
            }
        }
        _ => {}
    }
}

fn refuse_duplicates(manifests: &[Manifest]) -> Result<(), ManifestError> {
    let mut seen = std::collections::HashMap::new();
    for manifest in manifests {
        let key = (
            manifest.object.kind(),
            manifest.object.namespace().to_owned(),
            manifest.object.name().to_owned(),
        );
        if let Some(first) = seen.insert(key, manifest.origin.clone()) {
            return Err(ManifestError::Duplicate {
                origin: manifest.origin.clone(),
                reference: manifest.object.reference(),
                first,
            });
        }
    }
    Ok(())
}
