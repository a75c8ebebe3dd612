//! The old system's other request shapes, read into the entries [`flat::to_nested`] places.
//!
//! Two shapes besides the flat form reach the same nested form:
//!
//! - the old direct protocol's inference data: a flat request whose `hyperparameters`,
//!   `dimensions` (and `model`, `scheduler`, `conditioning`, `output`) are objects, e.g.
//!   `{"prompt", "model_name", "hyperparameters": {"num_inference_steps", "guidance_scale",
//!   "seed"}, "dimensions": {"width", "height"}}`: each key of such a section object goes to
//!   its place ([`section_target`]: `hyperparameters.num_inference_steps` is
//!   `scheduler.steps`);
//! - the C# client's `EnhancedSDXLRequest`: PascalCase sections (`Model`, `Scheduler`,
//!   `Hyperparameters`, `Conditioning`, `Dimensions`, `Output`) whose keys are PascalCase
//!   too (`GuidanceScale`, `LoRAs`, `NegativePrompt`); keys become snake_case ([`snake`]),
//!   and the C# scheduler names become the worker's (`"DPM++"` is `"DPM++ 2M"`,
//!   [`scheduler_name`]).
//!
//! Every value is kept as sent (only keys are renamed); a field given twice, under any two
//! spellings, is refused naming the later key. `workers/ml/ferry_sdxl/request.py` does the
//! same; `workers/tests/fixtures/sdxl_legacy_requests.json` holds the cases both check.
//!
//! [`flat::to_nested`]: super::flat::to_nested

use serde_json::{Map, Value};

/// The nested form's sections: in an old request, a lowercase one holding an object is read
/// key by key.
pub const SECTIONS: [&str; 6] = [
    "model",
    "scheduler",
    "hyperparameters",
    "conditioning",
    "dimensions",
    "output",
];

/// The C# request's sections, each with its nested-form name.
pub const CSHARP_SECTIONS: [(&str, &str); 6] = [
    ("Model", "model"),
    ("Scheduler", "scheduler"),
    ("Hyperparameters", "hyperparameters"),
    ("Conditioning", "conditioning"),
    ("Dimensions", "dimensions"),
    ("Output", "output"),
];

/// Keys of a section that live elsewhere in the nested form: (section, key, target).
/// Any other key of a section stays in it.
pub const SECTION_ALIASES: [(&str, &str, &[&str]); 5] = [
    (
        "hyperparameters",
        "num_inference_steps",
        &["scheduler", "steps"],
    ),
    ("hyperparameters", "steps", &["scheduler", "steps"]),
    (
        "hyperparameters",
        "high_noise_frac",
        &["hyperparameters", "refiner_fraction"],
    ),
    ("scheduler", "num_inference_steps", &["scheduler", "steps"]),
    ("model", "model_name", &["model", "base"]),
];

/// C# keys whose snake_case is not the mechanical one.
const SNAKE_SPECIAL: [(&str, &str); 5] = [
    ("LoRAs", "loras"),
    ("LoRA", "lora"),
    ("ControlNet", "controlnet"),
    ("VAE", "vae"),
    ("SaveDir", "save_dir"),
];

/// The C# client's scheduler names that are not the worker's: (C#, worker).
pub const SCHEDULER_NAMES: [(&str, &str); 6] = [
    ("DPM++", "DPM++ 2M"),
    ("DPM++ Karras", "DPM++ 2M Karras"),
    ("DPMPlusPlus2M", "DPM++ 2M"),
    ("EulerA", "Euler a"),
    ("Euler A", "Euler a"),
    ("EulerAncestral", "Euler a"),
];

/// Where `key` of `section` goes in the nested form.
pub fn section_target(section: &str, key: &str) -> Vec<String> {
    SECTION_ALIASES
        .iter()
        .find(|(s, k, _)| *s == section && *k == key)
        .map(|(_, _, path)| path.iter().map(|p| (*p).to_owned()).collect())
        .unwrap_or_else(|| vec![section.to_owned(), key.to_owned()])
}

/// A C# key in snake_case: `GuidanceScale` is `guidance_scale`, `LoRAs` is `loras`,
/// `NumImages` is `num_images`; a key without capitals is kept.
///
/// ```
/// use ferry_server::sdxl::legacy::snake;
/// assert_eq!(snake("GuidanceScale"), "guidance_scale");
/// assert_eq!(snake("LoRAs"), "loras");
/// assert_eq!(snake("prompt"), "prompt");
/// ```
pub fn snake(key: &str) -> String {
    if let Some((_, s)) = SNAKE_SPECIAL.iter().find(|(c, _)| *c == key) {
        return (*s).to_owned();
    }
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The worker's name for a C# scheduler name (others are kept).
pub fn scheduler_name(value: &Value) -> Value {
    match value.as_str() {
        Some(name) => SCHEDULER_NAMES
            .iter()
            .find(|(c, _)| *c == name)
            .map_or_else(|| value.clone(), |(_, w)| Value::String((*w).to_owned())),
        None => value.clone(),
    }
}

/// Whether a top-level key is the C# client's (starts with a capital letter).
pub fn is_csharp_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_uppercase())
}

/// A C# value with every object key in snake_case, at any depth; `Err` names a key that
/// two spellings give twice (`Path` and `path`), by its C# path.
pub fn snake_keys(value: &Value, at: &str) -> Result<Value, (String, String)> {
    Ok(match value {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                let name = snake(key);
                let here = format!("{at}.{key}");
                if out.contains_key(&name) {
                    return Err((here, format!("{name} is already given")));
                }
                out.insert(name, snake_keys(&map[key], &here)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| snake_keys(v, &format!("{at}.{i}")))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csharp_keys_become_the_nested_forms() {
        for (c, s) in [
            ("Base", "base"),
            ("Vae", "vae"),
            ("VAE", "vae"),
            ("GuidanceScale", "guidance_scale"),
            ("NumImages", "num_images"),
            ("NegativePrompt", "negative_prompt"),
            ("LoRAs", "loras"),
            ("ControlNet", "controlnet"),
            ("ConditioningScale", "conditioning_scale"),
            ("HighNoiseFrac", "high_noise_frac"),
            ("SaveDir", "save_dir"),
            ("Width2x", "width2x"),
            ("already_snake", "already_snake"),
        ] {
            assert_eq!(snake(c), s, "{c}");
        }
    }

    #[test]
    fn csharp_scheduler_names_map_and_others_stay() {
        assert_eq!(scheduler_name(&json!("DPM++")), json!("DPM++ 2M"));
        assert_eq!(scheduler_name(&json!("EulerA")), json!("Euler a"));
        assert_eq!(scheduler_name(&json!("DDIM")), json!("DDIM"));
        assert_eq!(scheduler_name(&json!(3)), json!(3));
    }

    #[test]
    fn snake_keys_reaches_lists_and_refuses_a_key_given_twice() {
        assert_eq!(
            snake_keys(
                &json!([{"Path": "/l", "Weight": 0.5}]),
                "Conditioning.LoRAs"
            )
            .unwrap(),
            json!([{"path": "/l", "weight": 0.5}])
        );
        let (key, why) =
            snake_keys(&json!({"Path": "/a", "path": "/b"}), "Conditioning.LoRAs.0").unwrap_err();
        assert_eq!(key, "Conditioning.LoRAs.0.path");
        assert_eq!(why, "path is already given");
    }

    #[test]
    fn section_keys_go_where_the_nested_form_has_them() {
        assert_eq!(
            section_target("hyperparameters", "num_inference_steps"),
            ["scheduler", "steps"]
        );
        assert_eq!(
            section_target("dimensions", "width"),
            ["dimensions", "width"]
        );
        assert_eq!(
            section_target("hyperparameters", "nope"),
            ["hyperparameters", "nope"]
        );
    }
}
