//! The old design's flat request form and its conversion to the nested form.
//!
//! A port of `to_nested`, `is_flat` and `FLAT_KEYS` in
//! `workers/ml/ferry_sdxl/request.py`: the same keys, the same targets, the same
//! test for flatness. The Python worker and this module must agree; `tests/cli/sdxl_schema.rs`
//! runs both over the same cases when a Python with `jsonschema` is at hand.
//!
//! One difference, about requests both refuse: a request with several unknown flat keys is
//! answered with all of them (the worker stops at the first in name order). A conflict
//! (one field given by two keys) quotes the value in JSON where the worker uses Python's
//! `repr` for lists and objects.

use super::legacy;
use serde_json::{Map, Value};
use std::fmt;

/// Flat key -> its path in the nested form, as `FLAT_KEYS` in `request.py`.
pub const FLAT_KEYS: [(&str, &[&str]); 31] = [
    ("model", &["model", "base"]),
    ("base", &["model", "base"]),
    ("model_path", &["model", "base"]),
    ("model_name", &["model", "base"]),
    ("refiner", &["model", "refiner"]),
    ("vae", &["model", "vae"]),
    ("scheduler", &["scheduler", "type"]),
    ("steps", &["scheduler", "steps"]),
    ("num_inference_steps", &["scheduler", "steps"]),
    ("guidance_scale", &["hyperparameters", "guidance_scale"]),
    ("seed", &["hyperparameters", "seed"]),
    ("num_images", &["hyperparameters", "num_images"]),
    ("refiner_fraction", &["hyperparameters", "refiner_fraction"]),
    ("high_noise_frac", &["hyperparameters", "refiner_fraction"]),
    ("prompt", &["conditioning", "prompt"]),
    ("negative_prompt", &["conditioning", "negative_prompt"]),
    ("loras", &["conditioning", "loras"]),
    ("controlnet", &["conditioning", "controlnet"]),
    ("controlnet_type", &["conditioning", "controlnet", "type"]),
    ("controlnet_model", &["conditioning", "controlnet", "model"]),
    ("controlnet_image", &["conditioning", "controlnet", "image"]),
    (
        "controlnet_preprocess",
        &["conditioning", "controlnet", "preprocess"],
    ),
    (
        "controlnet_conditioning_scale",
        &["conditioning", "controlnet", "conditioning_scale"],
    ),
    (
        "controlnet_low_threshold",
        &["conditioning", "controlnet", "low_threshold"],
    ),
    (
        "controlnet_high_threshold",
        &["conditioning", "controlnet", "high_threshold"],
    ),
    (
        "control_guidance_start",
        &["conditioning", "controlnet", "guidance_start"],
    ),
    (
        "control_guidance_end",
        &["conditioning", "controlnet", "guidance_end"],
    ),
    ("width", &["dimensions", "width"]),
    ("height", &["dimensions", "height"]),
    ("output_format", &["output", "format"]),
    ("save_dir", &["output", "save_dir"]),
];

/// Where a flat key goes in the nested form, if it is one.
pub fn target(key: &str) -> Option<&'static [&'static str]> {
    FLAT_KEYS
        .iter()
        .find(|(flat, _)| *flat == key)
        .map(|(_, target)| *target)
}

/// Whether `data` is in one of the old forms (so [`to_nested`] converts it): a top-level
/// `prompt`, a `model` that is a string, or a key of the C# client's (a capital first
/// letter: `Model`, `Conditioning`, ...).
///
/// ```
/// use ferry_server::sdxl::flat::is_flat;
/// use serde_json::json;
///
/// let flat = json!({"model": "/models/sdxl", "prompt": "a fox"});
/// assert!(is_flat(flat.as_object().unwrap()));
/// let csharp = json!({"Model": {"Base": "/models/sdxl"}, "Conditioning": {"Prompt": "a fox"}});
/// assert!(is_flat(csharp.as_object().unwrap()));
/// let nested = json!({"model": {"base": "/models/sdxl"}, "conditioning": {"prompt": "a fox"}});
/// assert!(!is_flat(nested.as_object().unwrap()));
/// ```
pub fn is_flat(data: &Map<String, Value>) -> bool {
    data.contains_key("prompt")
        || matches!(data.get("model"), Some(Value::String(_)))
        || data.keys().any(|k| legacy::is_csharp_key(k))
}

/// Why a flat request cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlatError {
    /// Keys the conversion does not know, in key order. Displayed as the worker words it,
    /// `widht: not a field of the flat request form (known: base, controlnet, ...)`, with
    /// every unknown key before the colon.
    #[error("{}: {}", .0.join(", "), unknown_key_message())]
    Unknown(Vec<String>),
    /// Capitalized keys that are not a section of the C# `EnhancedSDXLRequest`
    /// (`RequestId: not a field of the EnhancedSDXLRequest form (known: Conditioning, ...)`).
    #[error("{}: {}", .0.join(", "), unknown_csharp_message())]
    UnknownCSharp(Vec<String>),
    /// One field given twice (`steps` and `num_inference_steps`; `controlnet_type` and a
    /// `controlnet` object holding `type`; `steps` and `hyperparameters.num_inference_steps`),
    /// or a key under a field that is not an object.
    #[error("{key}: {reason}")]
    Conflict {
        /// The key refused (the later one in the worker's order), as sent: a section's key
        /// is dotted (`hyperparameters.seed`, `Hyperparameters.Seed`).
        key: String,
        /// What it clashes with.
        reason: String,
    },
}

impl FlatError {
    /// The stable error code: the worker answers the same cases `invalid_request`.
    pub const CODE: &'static str = "invalid_request";

    /// The keys the error is about.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            FlatError::Unknown(keys) | FlatError::UnknownCSharp(keys) => {
                keys.iter().map(String::as_str).collect()
            }
            FlatError::Conflict { key, .. } => vec![key.as_str()],
        }
    }

    /// What is wrong, after the key's name.
    pub fn reason(&self) -> String {
        match self {
            FlatError::Unknown(_) => unknown_key_message(),
            FlatError::UnknownCSharp(_) => unknown_csharp_message(),
            FlatError::Conflict { reason, .. } => reason.clone(),
        }
    }
}

/// What is wrong with an unknown flat key, after its name:
/// `not a field of the flat request form (known: base, controlnet, ...)`.
pub fn unknown_key_message() -> String {
    format!("not a field of the flat request form (known: {KnownKeys})")
}

/// What is wrong with an unknown capitalized key, after its name.
pub fn unknown_csharp_message() -> String {
    let mut known: Vec<&str> = legacy::CSHARP_SECTIONS.iter().map(|(c, _)| *c).collect();
    known.sort_unstable();
    format!(
        "not a field of the EnhancedSDXLRequest form (known: {})",
        known.join(", ")
    )
}

/// The flat keys and the sections, sorted and comma separated, as the worker lists them.
struct KnownKeys;

impl fmt::Display for KnownKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&str> = FLAT_KEYS.iter().map(|(k, _)| *k).collect();
        keys.extend(legacy::SECTIONS);
        keys.sort_unstable();
        keys.dedup();
        f.write_str(&keys.join(", "))
    }
}

/// One value of an old request and where it goes.
struct Entry<'a> {
    /// The key as sent (dotted under a section), to name it in errors.
    key: String,
    value: std::borrow::Cow<'a, Value>,
    path: Vec<String>,
}

/// The entries of an old request: flat keys, the keys of section objects, the C# sections.
fn entries(data: &Map<String, Value>) -> Result<Vec<Entry<'_>>, FlatError> {
    use std::borrow::Cow;
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    let mut unknown_csharp = Vec::new();
    for (key, value) in data {
        if legacy::is_csharp_key(key) {
            let Some((_, section)) = legacy::CSHARP_SECTIONS.iter().find(|(c, _)| c == key) else {
                unknown_csharp.push(key.clone());
                continue;
            };
            let converted = legacy::snake_keys(value, key)
                .map_err(|(key, reason)| FlatError::Conflict { key, reason })?;
            match converted {
                Value::Object(map) => {
                    for (sub, v) in map {
                        let original = data[key]
                            .as_object()
                            .and_then(|m| m.keys().find(|k| legacy::snake(k) == sub))
                            .cloned()
                            .unwrap_or_else(|| sub.clone());
                        let v = if *section == "scheduler" && sub == "type" {
                            legacy::scheduler_name(&v)
                        } else {
                            v
                        };
                        out.push(Entry {
                            key: format!("{key}.{original}"),
                            path: legacy::section_target(section, &sub),
                            value: Cow::Owned(v),
                        });
                    }
                }
                other => {
                    let (path, v) = match *section {
                        "model" => (vec!["model".into(), "base".into()], other),
                        "scheduler" => (
                            vec!["scheduler".into(), "type".into()],
                            legacy::scheduler_name(&other),
                        ),
                        s => (vec![s.to_owned()], other),
                    };
                    out.push(Entry {
                        key: key.clone(),
                        path,
                        value: Cow::Owned(v),
                    });
                }
            }
        } else if let (true, Some(map)) =
            (legacy::SECTIONS.contains(&key.as_str()), value.as_object())
        {
            for (sub, v) in map {
                out.push(Entry {
                    key: format!("{key}.{sub}"),
                    path: legacy::section_target(key, sub),
                    value: Cow::Borrowed(v),
                });
            }
        } else if let Some(path) = target(key) {
            out.push(Entry {
                key: key.clone(),
                path: path.iter().map(|p| (*p).to_owned()).collect(),
                value: Cow::Borrowed(value),
            });
        } else if legacy::SECTIONS.contains(&key.as_str()) {
            out.push(Entry {
                key: key.clone(),
                path: vec![key.clone()],
                value: Cow::Borrowed(value),
            });
        } else {
            unknown.push(key.clone());
        }
    }
    if !unknown_csharp.is_empty() {
        return Err(FlatError::UnknownCSharp(unknown_csharp));
    }
    if !unknown.is_empty() {
        return Err(FlatError::Unknown(unknown));
    }
    Ok(out)
}

/// Converts an old request (the flat form, the direct protocol's sections, the C#
/// `EnhancedSDXLRequest`; see [`legacy`]) to the nested form; a key the conversion does not
/// know, or a field given twice, is an error naming the key.
///
/// Keys are taken in the worker's order: shorter paths first (so `controlnet_*` keys join a
/// `controlnet` object), then by name (as sent, dotted under a section).
///
/// ```
/// use ferry_server::sdxl::flat::{to_nested, FlatError};
/// use serde_json::json;
///
/// let flat = json!({"model": "/models/sdxl", "prompt": "a fox", "steps": 20, "width": 512});
/// let nested = to_nested(flat.as_object().unwrap()).unwrap();
/// assert_eq!(
///     serde_json::Value::Object(nested),
///     json!({
///         "model": {"base": "/models/sdxl"},
///         "conditioning": {"prompt": "a fox"},
///         "scheduler": {"steps": 20},
///         "dimensions": {"width": 512},
///     })
/// );
/// let err = to_nested(json!({"prompt": "x", "widht": 512}).as_object().unwrap()).unwrap_err();
/// assert_eq!(err.keys(), ["widht"]);
/// let twice = json!({"prompt": "x", "steps": 9, "hyperparameters": {"num_inference_steps": 9}});
/// let err = to_nested(twice.as_object().unwrap()).unwrap_err();
/// assert!(matches!(err, FlatError::Conflict { ref key, .. } if key == "steps"));
/// ```
///
/// [`legacy`]: super::legacy
pub fn to_nested(flat: &Map<String, Value>) -> Result<Map<String, Value>, FlatError> {
    let mut order = entries(flat)?;
    order.sort_by(|a, b| (a.path.len(), &a.key).cmp(&(b.path.len(), &b.key)));

    let mut nested = Map::new();
    // Which key set each path, to name it in a conflict.
    let mut given: Vec<(Vec<String>, String)> = Vec::new();
    let given_by = |given: &[(Vec<String>, String)], path: &[String]| {
        given
            .iter()
            .find(|(p, _)| p.as_slice() == path)
            .map(|(_, k)| k.clone())
    };
    for entry in order {
        let Entry { key, value, path } = entry;
        let Some((leaf, parents)) = path.split_last() else {
            continue;
        };
        let mut node = &mut nested;
        for (depth, part) in parents.iter().enumerate() {
            let child = node
                .entry(part.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            match child {
                Value::Object(map) => node = map,
                other => {
                    let whose = given_by(&given, &path[..=depth]).unwrap_or_else(|| part.clone());
                    return Err(FlatError::Conflict {
                        key,
                        reason: format!("cannot be combined with {whose} = {}", py_repr(other)),
                    });
                }
            }
        }
        if node.contains_key(leaf) {
            let first = (1..=path.len())
                .rev()
                .find_map(|n| given_by(&given, &path[..n]))
                .unwrap_or_else(|| leaf.clone());
            return Err(FlatError::Conflict {
                key,
                reason: format!("{} is already given (by {first})", path.join(".")),
            });
        }
        node.insert(leaf.clone(), value.into_owned());
        given.push((path, key));
    }
    Ok(nested)
}

/// A scalar as Python's `repr` writes it (the worker's wording); JSON text otherwise.
fn py_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) if !s.contains('\'') && !s.contains('\\') => format!("'{s}'"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(v: Value) -> Result<Value, FlatError> {
        to_nested(v.as_object().unwrap()).map(Value::Object)
    }

    #[test]
    fn every_flat_key_lands_in_its_section() {
        let flat = json!({
            "model": "/m/base", "refiner": "/m/ref", "vae": "/m/vae",
            "scheduler": "DDIM", "steps": 12,
            "guidance_scale": 5.5, "seed": 7, "num_images": 2, "refiner_fraction": 0.7,
            "prompt": "a fox", "negative_prompt": "blurry",
            "loras": [{"path": "/l", "weight": 0.5}], "controlnet": null,
            "width": 512, "height": 768,
            "output_format": "webp", "save_dir": "/tmp/out",
        });
        assert_eq!(
            nested(flat).unwrap(),
            json!({
                "model": {"base": "/m/base", "refiner": "/m/ref", "vae": "/m/vae"},
                "scheduler": {"type": "DDIM", "steps": 12},
                "hyperparameters": {"guidance_scale": 5.5, "seed": 7, "num_images": 2, "refiner_fraction": 0.7},
                "conditioning": {"prompt": "a fox", "negative_prompt": "blurry", "loras": [{"path": "/l", "weight": 0.5}], "controlnet": null},
                "dimensions": {"width": 512, "height": 768},
                "output": {"format": "webp", "save_dir": "/tmp/out"},
            })
        );
    }

    #[test]
    fn aliases_map_to_the_same_target() {
        for (alias, value, expected) in [
            ("base", json!("/m"), json!({"model": {"base": "/m"}})),
            ("model_path", json!("/m"), json!({"model": {"base": "/m"}})),
            (
                "num_inference_steps",
                json!(9),
                json!({"scheduler": {"steps": 9}}),
            ),
            (
                "high_noise_frac",
                json!(0.6),
                json!({"hyperparameters": {"refiner_fraction": 0.6}}),
            ),
        ] {
            let mut flat = Map::new();
            flat.insert(alias.to_owned(), value);
            assert_eq!(
                Value::Object(to_nested(&flat).unwrap()),
                expected,
                "{alias}"
            );
        }
    }

    #[test]
    fn values_are_moved_unchecked() {
        // The conversion only moves values; the schema judges them afterwards.
        assert_eq!(
            nested(json!({"prompt": 5, "width": "wide", "model": {"base": {"x": 1}}})).unwrap(),
            json!({"conditioning": {"prompt": 5}, "dimensions": {"width": "wide"}, "model": {"base": {"x": 1}}})
        );
        // A section that is not an object stays where it is, for the schema to name.
        assert_eq!(
            nested(json!({"prompt": "x", "dimensions": "512x512"})).unwrap(),
            json!({"conditioning": {"prompt": "x"}, "dimensions": "512x512"})
        );
        assert_eq!(nested(json!({})).unwrap(), json!({}));
    }

    #[test]
    fn unknown_keys_are_all_named_in_key_order() {
        let err = nested(json!({"prompt": "x", "widht": 512, "colour": "red"})).unwrap_err();
        assert_eq!(err.keys(), ["colour", "widht"]);
        assert!(err
            .to_string()
            .starts_with("colour, widht: not a field of the flat request form (known: "));
        let msg = unknown_key_message();
        assert!(
            msg.starts_with(
                "not a field of the flat request form (known: base, conditioning, control_guidance_end, control_guidance_start, controlnet, controlnet_conditioning_scale,"
            ),
            "{msg}"
        );
        assert!(msg.ends_with("vae, width)"), "{msg}");
        assert_eq!(FlatError::CODE, "invalid_request");
    }

    #[test]
    fn controlnet_keys_join_a_controlnet_object_and_fields_given_twice_are_refused() {
        assert_eq!(
            nested(json!({"prompt": "x", "controlnet_type": "canny", "controlnet_image": 0}))
                .unwrap(),
            json!({"conditioning": {"prompt": "x", "controlnet": {"type": "canny", "image": 0}}})
        );
        let conflict = |v: Value| match nested(v).unwrap_err() {
            FlatError::Conflict { key, reason } => format!("{key}: {reason}"),
            other => panic!("{other}"),
        };
        assert_eq!(
            conflict(json!({"prompt": "x", "steps": 9, "num_inference_steps": 9})),
            "steps: scheduler.steps is already given (by num_inference_steps)"
        );
        assert_eq!(
            conflict(
                json!({"prompt": "x", "controlnet": {"type": "canny"}, "controlnet_type": "depth"})
            ),
            "controlnet_type: conditioning.controlnet.type is already given (by controlnet)"
        );
        assert_eq!(
            conflict(json!({"prompt": "x", "controlnet": null, "controlnet_type": "canny"})),
            "controlnet_type: cannot be combined with controlnet = None"
        );
    }

    /// The shared cases (`workers/tests/fixtures/sdxl_legacy_requests.json`), which the
    /// worker's tests read too.
    #[test]
    fn the_old_systems_requests_become_the_nested_form() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../../../workers/tests/fixtures/sdxl_legacy_requests.json"
        ))
        .unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let request = case["request"].as_object().unwrap();
            assert!(is_flat(request), "{name}");
            match case.get("error_field").and_then(Value::as_str) {
                None => {
                    let got =
                        Value::Object(to_nested(request).unwrap_or_else(|e| panic!("{name}: {e}")));
                    assert_eq!(got, case["normalized"], "{name}");
                    super::super::check(&got).unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                Some(field) => {
                    let err = to_nested(request).unwrap_err();
                    assert_eq!(err.keys(), [field], "{name}: {err}");
                    assert!(
                        err.to_string().starts_with(&format!("{field}: ")),
                        "{name}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn csharp_keys_that_are_no_section_are_named_as_such() {
        let err =
            nested(json!({"Model": "m", "Conditioning": {"Prompt": "x"}, "Extra": 1, "Other": 2}))
                .unwrap_err();
        assert_eq!(err.keys(), ["Extra", "Other"]);
        assert!(err.to_string().starts_with(
            "Extra, Other: not a field of the EnhancedSDXLRequest form (known: Conditioning, Dimensions, Hyperparameters, Model, Output, Scheduler)"
        ));
    }

    #[test]
    fn flatness_is_a_top_level_prompt_or_a_string_model() {
        let flat = |v: Value| is_flat(v.as_object().unwrap());
        assert!(flat(json!({"prompt": "x"})));
        assert!(flat(json!({"model": "/m"})));
        assert!(flat(json!({"prompt": null, "model": {"base": "/m"}})));
        assert!(!flat(json!({"model": {"base": "/m"}})));
        assert!(!flat(json!({"model": null, "width": 512})));
        assert!(flat(json!({"Model": {"Base": "/m"}})));
        assert!(!flat(json!({})));
    }

    #[test]
    fn the_table_matches_the_worker_table() {
        // FLAT_KEYS of request.py, one line per key, read from the worker's source so that a
        // key added there and not here fails this test.
        let source = include_str!("../../../../workers/ml/ferry_sdxl/request.py");
        let start = source.find("FLAT_KEYS").unwrap();
        let body = &source[start..source[start..].find("\n}\n").unwrap() + start];
        // Every line with a quoted key: the key, then each part of its path.
        let python: Vec<Vec<String>> = body
            .lines()
            .filter(|line| line.trim_start().starts_with('"'))
            .map(|line| {
                line.split('"')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        let rust: Vec<Vec<String>> = FLAT_KEYS
            .iter()
            .map(|(k, path)| {
                std::iter::once(*k)
                    .chain(path.iter().copied())
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        assert_eq!(python, rust);
    }
}
