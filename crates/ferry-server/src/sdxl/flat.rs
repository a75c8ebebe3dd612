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

use serde_json::{Map, Value};
use std::fmt;

/// Flat key -> its path in the nested form, as `FLAT_KEYS` in `request.py`.
pub const FLAT_KEYS: [(&str, &[&str]); 30] = [
    ("model", &["model", "base"]),
    ("base", &["model", "base"]),
    ("model_path", &["model", "base"]),
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

/// Whether `data` is in the flat form: a top-level `prompt`, or a `model` that is a string.
///
/// ```
/// use ferry_server::sdxl::flat::is_flat;
/// use serde_json::json;
///
/// let flat = json!({"model": "/models/sdxl", "prompt": "a fox"});
/// assert!(is_flat(flat.as_object().unwrap()));
/// let nested = json!({"model": {"base": "/models/sdxl"}, "conditioning": {"prompt": "a fox"}});
/// assert!(!is_flat(nested.as_object().unwrap()));
/// ```
pub fn is_flat(data: &Map<String, Value>) -> bool {
    data.contains_key("prompt") || matches!(data.get("model"), Some(Value::String(_)))
}

/// Why a flat request cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlatError {
    /// Keys the conversion does not know, in key order. Displayed as the worker words it,
    /// `widht: not a field of the flat request form (known: base, controlnet, ...)`, with
    /// every unknown key before the colon.
    #[error("{}: {}", .0.join(", "), unknown_key_message())]
    Unknown(Vec<String>),
    /// One field given twice (`steps` and `num_inference_steps`; `controlnet_type` and a
    /// `controlnet` object holding `type`), or a key under a field that is not an object.
    #[error("{key}: {reason}")]
    Conflict {
        /// The flat key refused (the later one in the worker's order).
        key: String,
        /// What it clashes with.
        reason: String,
    },
}

impl FlatError {
    /// The stable error code: the worker answers the same cases `invalid_request`.
    pub const CODE: &'static str = "invalid_request";

    /// The flat keys the error is about.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            FlatError::Unknown(keys) => keys.iter().map(String::as_str).collect(),
            FlatError::Conflict { key, .. } => vec![key.as_str()],
        }
    }

    /// What is wrong, after the key's name.
    pub fn reason(&self) -> String {
        match self {
            FlatError::Unknown(_) => unknown_key_message(),
            FlatError::Conflict { reason, .. } => reason.clone(),
        }
    }
}

/// What is wrong with an unknown flat key, after its name:
/// `not a field of the flat request form (known: base, controlnet, ...)`.
pub fn unknown_key_message() -> String {
    format!("not a field of the flat request form (known: {KnownKeys})")
}

/// The flat keys, sorted and comma separated, as the worker lists them.
struct KnownKeys;

impl fmt::Display for KnownKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&str> = FLAT_KEYS.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        f.write_str(&keys.join(", "))
    }
}

/// Converts the flat form to the nested form; a key the conversion does not know, or a
/// field given twice, is an error naming the key.
///
/// Keys are taken in the worker's order: shorter paths first (so `controlnet_*` keys join a
/// `controlnet` object), then by name.
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
/// let twice = json!({"prompt": "x", "steps": 9, "num_inference_steps": 9});
/// let err = to_nested(twice.as_object().unwrap()).unwrap_err();
/// assert!(matches!(err, FlatError::Conflict { ref key, .. } if key == "steps"));
/// ```
pub fn to_nested(flat: &Map<String, Value>) -> Result<Map<String, Value>, FlatError> {
    let unknown: Vec<String> = flat
        .keys()
        .filter(|k| target(k).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(FlatError::Unknown(unknown));
    }
    let mut order: Vec<(&str, &Value, &'static [&'static str])> = flat
        .iter()
        .filter_map(|(k, v)| target(k).map(|path| (k.as_str(), v, path)))
        .collect();
    order.sort_by(|a, b| (a.2.len(), a.0).cmp(&(b.2.len(), b.0)));

    let mut nested = Map::new();
    // Which flat key set each path, to name it in a conflict.
    let mut given: Vec<(&[&str], &str)> = Vec::new();
    let given_by = |given: &[(&[&str], &str)], path: &[&str]| {
        given
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, k)| k.to_string())
    };
    for (key, value, path) in order {
        let Some((leaf, parents)) = path.split_last() else {
            continue;
        };
        let mut node = &mut nested;
        for (depth, part) in parents.iter().enumerate() {
            let child = node
                .entry(*part)
                .or_insert_with(|| Value::Object(Map::new()));
            match child {
                Value::Object(map) => node = map,
                other => {
                    let whose =
                        given_by(&given, &path[..=depth]).unwrap_or_else(|| (*part).to_owned());
                    return Err(FlatError::Conflict {
                        key: key.to_owned(),
                        reason: format!("cannot be combined with {whose} = {}", py_repr(other)),
                    });
                }
            }
        }
        if node.contains_key(*leaf) {
            let first = (1..=path.len())
                .rev()
                .find_map(|n| given_by(&given, &path[..n]))
                .unwrap_or_else(|| (*leaf).to_owned());
            return Err(FlatError::Conflict {
                key: key.to_owned(),
                reason: format!("{} is already given (by {first})", path.join(".")),
            });
        }
        node.insert((*leaf).to_owned(), value.clone());
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
            nested(json!({"prompt": 5, "width": "wide", "model": {"base": "/m"}})).unwrap(),
            json!({"conditioning": {"prompt": 5}, "dimensions": {"width": "wide"}, "model": {"base": {"base": "/m"}}})
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
                "not a field of the flat request form (known: base, control_guidance_end, control_guidance_start, controlnet, controlnet_conditioning_scale,"
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

    #[test]
    fn flatness_is_a_top_level_prompt_or_a_string_model() {
        let flat = |v: Value| is_flat(v.as_object().unwrap());
        assert!(flat(json!({"prompt": "x"})));
        assert!(flat(json!({"model": "/m"})));
        assert!(flat(json!({"prompt": null, "model": {"base": "/m"}})));
        assert!(!flat(json!({"model": {"base": "/m"}})));
        assert!(!flat(json!({"model": null, "width": 512})));
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
