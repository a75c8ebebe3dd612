//! The old design's flat request form and its conversion to the nested form.
//!
//! A port of `to_nested`, `is_flat` and `FLAT_KEYS` in
//! `workers/python/ferry_worker/ml/request.py`: the same keys, the same targets, the same
//! test for flatness. The Python worker and this module must agree; `tests/sdxl_schema.rs`
//! runs both over the same cases when a Python with `jsonschema` is at hand.
//!
//! Two differences, both about requests the worker would refuse or treat by accident of
//! order: a request with several unknown flat keys is answered with all of them (the worker
//! stops at the first), and when two aliases of one target are both present (`model` and
//! `base`), the last in key order wins here, the last in document order in Python.

use serde_json::{Map, Value};
use std::fmt;

/// Flat key -> (section, key) in the nested form, as `FLAT_KEYS` in `request.py`.
pub const FLAT_KEYS: [(&str, (&str, &str)); 21] = [
    ("model", ("model", "base")),
    ("base", ("model", "base")),
    ("model_path", ("model", "base")),
    ("refiner", ("model", "refiner")),
    ("vae", ("model", "vae")),
    ("scheduler", ("scheduler", "type")),
    ("steps", ("scheduler", "steps")),
    ("num_inference_steps", ("scheduler", "steps")),
    ("guidance_scale", ("hyperparameters", "guidance_scale")),
    ("seed", ("hyperparameters", "seed")),
    ("num_images", ("hyperparameters", "num_images")),
    ("refiner_fraction", ("hyperparameters", "refiner_fraction")),
    ("high_noise_frac", ("hyperparameters", "refiner_fraction")),
    ("prompt", ("conditioning", "prompt")),
    ("negative_prompt", ("conditioning", "negative_prompt")),
    ("loras", ("conditioning", "loras")),
    ("controlnet", ("conditioning", "controlnet")),
    ("width", ("dimensions", "width")),
    ("height", ("dimensions", "height")),
    ("output_format", ("output", "format")),
    ("save_dir", ("output", "save_dir")),
];

/// Where a flat key goes in the nested form, if it is one.
pub fn target(key: &str) -> Option<(&'static str, &'static str)> {
    FLAT_KEYS
        .iter()
        .find(|(flat, _)| *flat == key)
        .map(|(_, target)| *target)
}

/// Whether `data` is in the flat form: a top-level `prompt`, or a `model` that is a string.
///
/// ```
/// use ferry::sdxl::flat::is_flat;
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

/// Keys of a flat request that the conversion does not know, in key order.
///
/// Displayed as the worker words it, `widht: not a field of the flat request form (known:
/// base, controlnet, ...)`, with every unknown key before the colon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.0.join(", "), unknown_key_message())]
pub struct UnknownFlatKeys(pub Vec<String>);

impl UnknownFlatKeys {
    /// The stable error code: the worker answers the same case `invalid_request`.
    pub const CODE: &'static str = "invalid_request";
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

/// Converts the flat form to the nested form; a key the conversion does not know is an error
/// naming it.
///
/// ```
/// use ferry::sdxl::flat::to_nested;
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
/// assert_eq!(err.0, ["widht"]);
/// ```
pub fn to_nested(flat: &Map<String, Value>) -> Result<Map<String, Value>, UnknownFlatKeys> {
    let mut nested = Map::new();
    let mut unknown = Vec::new();
    for (key, value) in flat {
        let Some((section, name)) = target(key) else {
            unknown.push(key.clone());
            continue;
        };
        let entry = nested
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(section) = entry {
            section.insert(name.to_owned(), value.clone());
        }
    }
    if unknown.is_empty() {
        Ok(nested)
    } else {
        Err(UnknownFlatKeys(unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(v: Value) -> Result<Value, UnknownFlatKeys> {
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
        assert_eq!(err.0, ["colour", "widht"]);
        assert!(err
            .to_string()
            .starts_with("colour, widht: not a field of the flat request form (known: "));
        let msg = unknown_key_message();
        assert!(
            msg.starts_with(
                "not a field of the flat request form (known: base, controlnet, guidance_scale,"
            ),
            "{msg}"
        );
        assert!(msg.ends_with("vae, width)"), "{msg}");
        assert_eq!(UnknownFlatKeys::CODE, "invalid_request");
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
        let source = include_str!("../../workers/python/ferry_worker/ml/request.py");
        let start = source.find("FLAT_KEYS").unwrap();
        let body = &source[start..source[start..].find("\n}\n").unwrap() + start];
        let python: Vec<(String, String, String)> = body
            .lines()
            .filter_map(|line| {
                let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
                (quoted.len() == 3).then(|| {
                    (
                        quoted[0].to_owned(),
                        quoted[1].to_owned(),
                        quoted[2].to_owned(),
                    )
                })
            })
            .collect();
        let rust: Vec<(String, String, String)> = FLAT_KEYS
            .iter()
            .map(|(k, (s, n))| ((*k).to_owned(), (*s).to_owned(), (*n).to_owned()))
            .collect();
        assert_eq!(python, rust);
    }
}
