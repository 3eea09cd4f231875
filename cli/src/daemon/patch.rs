//! The three patch formats of the API server's PATCH: JSON merge patch
//! (RFC 7386), JSON patch (RFC 6902: what `kubectl rollout undo` sends)
//! and strategic merge patch (what `kubectl apply` and `kubectl scale`
//! send): a merge patch in which lists of objects with a merge key
//! (containers by `name`, ports by `containerPort`...) are merged element
//! by element instead of replaced, with the `$patch`, `$setElementOrder`,
//! `$retainKeys` and `$deleteFromPrimitiveList` directives.

use serde_json::{Map, Value};

/// A patch format, by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
}

impl Format {
    /// The format of a `Content-Type`, if it is a patch format.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(Format::Merge),
            "application/strategic-merge-patch+json" => Some(Format::Strategic),
            "application/json-patch+json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Applies `patch` in `format` to `target`; the error says which operation
/// failed and why.
pub fn apply(format: Format, target: &mut Value, patch: &Value) -> Result<(), String> {
    match format {
        Format::Merge => {
            merge(target, patch);
            Ok(())
        }
        Format::Strategic => {
            strategic(target, patch);
            Ok(())
        }
        Format::Json => json_patch(target, patch),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(changes) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(map) = target.as_object_mut() {
                for (key, value) in changes {
                    if value.is_null() {
                        map.remove(key);
                    } else {
                        merge(map.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The merge key of a list field, as Kubernetes' types declare it
/// (`patchMergeKey`).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Strategic merge patch.
fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if changes.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        if let Some(map) = replacement.as_object_mut() {
            map.remove("$patch");
        }
        *target = replacement;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in changes {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(doomed)) = (map.get_mut(list), value) {
                items.retain(|item| !doomed.contains(item));
            }
            continue;
        }
        if value.is_null() {
            map.remove(key);
            continue;
        }
        match (map.get_mut(key), value, merge_key(key)) {
            (Some(Value::Array(current)), Value::Array(items), Some(merge_key)) => {
                merge_list(current, items, merge_key);
            }
            (Some(current), Value::Object(_), _) => strategic(current, value),
            _ => {
                let mut fresh = Value::Null;
                strip_directives(&mut fresh, value);
                map.insert(key.clone(), fresh);
            }
        }
    }
}

/// Copies `value` without `$` directives.
fn strip_directives(target: &mut Value, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut clean = Map::new();
            for (key, item) in map {
                if key.starts_with('$') {
                    continue;
                }
                let mut copy = Value::Null;
                strip_directives(&mut copy, item);
                clean.insert(key.clone(), copy);
            }
            *target = Value::Object(clean);
        }
        Value::Array(items) => {
            *target = Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                    .map(|i| {
                        let mut copy = Value::Null;
                        strip_directives(&mut copy, i);
                        copy
                    })
                    .collect(),
            );
        }
        other => *target = other.clone(),
    }
}

/// Merges list elements by `merge_key`: a patch element updates the one
/// with the same key, is appended when there is none, and removes it with
/// `$patch: delete`.
fn merge_list(current: &mut Vec<Value>, items: &[Value], merge_key: &str) {
    for item in items {
        let Some(key) = item.get(merge_key) else {
            current.push(item.clone());
            continue;
        };
        let position = current.iter().position(|c| c.get(merge_key) == Some(key));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(index), true) => {
                current.remove(index);
            }
            (None, true) => {}
            (Some(index), false) => strategic(&mut current[index], item),
            (None, false) => {
                let mut fresh = Value::Null;
                strip_directives(&mut fresh, item);
                current.push(fresh);
            }
        }
    }
}

/// An RFC 6901 pointer's parent and last token.
fn split_pointer(pointer: &str) -> Result<(String, String), String> {
    if !pointer.starts_with('/') {
        return Err(format!("path {pointer:?} does not start with /"));
    }
    let index = pointer.rfind('/').unwrap_or(0);
    let last = pointer[index + 1..].replace("~1", "/").replace("~0", "~");
    Ok((pointer[..index].to_owned(), last))
}

fn add(target: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    if pointer.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(pointer)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| format!("path {pointer:?}: no such index"))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("path {pointer:?}: the parent does not exist")),
    }
}

fn remove(target: &mut Value, pointer: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(pointer)?;
    let missing = || format!("path {pointer:?} does not exist");
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(missing)?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 JSON patch: `add`, `remove`, `replace`, `move`, `copy`, `test`.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Array(operations) = patch else {
        return Err("a JSON patch is a list of operations".to_owned());
    };
    for (index, operation) in operations.iter().enumerate() {
        let field = |name: &str| {
            operation
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {index}: {name:?} is required"))
        };
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| format!("operation {index}: \"value\" is required"))
        };
        let op = field("op")?;
        let path = field("path")?;
        let outcome = match op {
            "add" => add(target, path, value()?),
            "remove" => remove(target, path).map(|_| ()),
            "replace" => remove(target, path).and_then(|_| add(target, path, value()?)),
            "move" => {
                let from = field("from")?;
                remove(target, from).and_then(|moved| add(target, path, moved))
            }
            "copy" => {
                let from = field("from")?;
                let copied = target
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("path {from:?} does not exist"))?;
                add(target, path, copied)
            }
            "test" => {
                if target.pointer(path) == Some(&value()?) {
                    Ok(())
                } else {
                    Err(format!("test of {path:?} failed"))
                }
            }
            other => Err(format!(
                "unknown op {other:?}: accepted are add, remove, replace, move, copy and test"
            )),
        };
        outcome.map_err(|error| format!("operation {index} ({op}): {error}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge(&mut target, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_keeps_list_elements_by_key() {
        // What kubectl apply sends for an image change.
        let mut target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1.0", "ports": [{"containerPort": 8080}]},
            {"name": "side", "image": "side:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "web:2.0"}, {"name": "side", "$patch": "delete"}, {"name": "new", "image": "n"}]
        }}}});
        apply(Format::Strategic, &mut target, &patch).expect("patch");
        assert_eq!(
            target,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2.0", "ports": [{"containerPort": 8080}]},
                {"name": "new", "image": "n"}
            ]}}}})
        );
        let mut labels = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        apply(
            Format::Strategic,
            &mut labels,
            &json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
        )
        .expect("patch");
        assert_eq!(labels, json!({"metadata": {"labels": {"c": "3"}}}));
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let mut target = json!({"spec": {"template": {"a": 1}, "list": [1, 2]}});
        let patch = json!([
            {"op": "replace", "path": "/spec/template", "value": {"b": 2}},
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "remove", "path": "/spec/list/0"},
            {"op": "test", "path": "/spec/list/1", "value": 3},
            {"op": "add", "path": "/metadata", "value": {"x~y/z": 1}}
        ]);
        apply(Format::Json, &mut target, &patch).expect("patch");
        assert_eq!(
            target,
            json!({"spec": {"template": {"b": 2}, "list": [2, 3]}, "metadata": {"x~y/z": 1}})
        );
        let error = apply(
            Format::Json,
            &mut target,
            &json!([{"op": "remove", "path": "/nope"}]),
        )
        .expect_err("missing path");
        assert!(error.contains("/nope"), "{error}");
        assert!(apply(Format::Json, &mut target, &json!({"op": "add"})).is_err());
    }
}
