//! Style presets and the quality boost, applied on the host before a request is sent.
//!
//! A request may carry two fields the worker does not know, at its top level in any form:
//! `"style": "NAME"` (one of [`Styles::list`]) and `"quality": "standard" | "boost"`. The
//! host takes them out, converts the rest to the nested form, applies them, and sends the
//! worker a plain request ([`Styles::prepare`]):
//!
//! - a style puts the request's prompt into its `prompt` template (`{prompt}` stands for
//!   it), adds its negative prompt (into `{negative_prompt}` when its template has one, else
//!   after the request's own, comma separated), and fills `scheduler.type`,
//!   `scheduler.steps` and `hyperparameters.guidance_scale` where the request leaves them
//!   out (the request's own values win);
//! - `boost` hands the last part of the denoising to a refiner (the request's
//!   `model.refiner`, else `sdxl.boost_refiner` of `ferry.toml`) and runs more steps
//!   (`steps` × `sdxl.boost_steps_factor`, at least `sdxl.boost_min_steps`, at most 200); with
//!   no refiner at all it is refused naming `quality`.
//!
//! ```
//! use ferry_server::sdxl::styles::Styles;
//! use serde_json::json;
//!
//! let styles = Styles::new(&Default::default());
//! let plain = styles.prepare(&json!({"model": "/m", "prompt": "a fox", "style": "cinematic"}))?;
//! assert!(plain["conditioning"]["prompt"].as_str().unwrap().contains("a fox"));
//! assert_eq!(plain["scheduler"]["type"], "DPM++ 2M Karras");
//! assert!(plain.get("style").is_none());
//! let err = styles.prepare(&json!({"model": "/m", "prompt": "a fox", "style": "nope"})).unwrap_err();
//! assert!(err.to_string().starts_with("style: unknown style `nope`"));
//! # Ok::<(), ferry_server::sdxl::RequestError>(())
//! ```

use super::flat;
use super::request::{check, validate, FieldError, RequestError, SchemaError, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most steps the schema allows (`scheduler.steps`' maximum).
const MAX_STEPS: u64 = 200;

/// The steps the worker runs when a request names none.
const WORKER_DEFAULT_STEPS: u64 = 30;

/// One named style preset (`[[sdxl.styles]]` in `ferry.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StylePreset {
    /// The name requests give as `"style"` (lowercase letters, digits, `-`, `_`).
    pub name: String,
    /// What it looks like, for people choosing one.
    #[serde(default)]
    pub description: String,
    /// The prompt template; `{prompt}` stands for the request's prompt.
    pub prompt: String,
    /// The negative prompt added (`{negative_prompt}` stands for the request's own).
    #[serde(default)]
    pub negative_prompt: String,
    /// The scheduler, unless the request names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// The steps, unless the request gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    /// The guidance scale, unless the request gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_scale: Option<f64>,
}

/// `[sdxl]` of `ferry.toml`: style presets and the quality boost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SdxlConfig {
    /// Whether the built-in presets ([`builtin_styles`]) are offered (a configured style
    /// of the same name replaces one).
    pub builtin_styles: bool,
    /// Presets of this file, added to (or replacing) the built-in ones.
    pub styles: Vec<StylePreset>,
    /// The refiner `"quality": "boost"` uses when the request names none (a model folder
    /// under the worker's `FERRY_ML_MODELS`); none: boost needs the request's `model.refiner`.
    pub boost_refiner: Option<String>,
    /// Boosted steps: the request's (or its style's, else 30) times this.
    pub boost_steps_factor: f64,
    /// Boosted steps: at least this many.
    pub boost_min_steps: u32,
}

impl Default for SdxlConfig {
    fn default() -> Self {
        SdxlConfig {
            builtin_styles: true,
            styles: Vec::new(),
            boost_refiner: None,
            boost_steps_factor: 1.5,
            boost_min_steps: 40,
        }
    }
}

fn preset(
    name: &str,
    description: &str,
    prompt: &str,
    negative_prompt: &str,
    scheduler: &str,
    steps: u32,
    guidance_scale: f64,
) -> StylePreset {
    StylePreset {
        name: name.into(),
        description: description.into(),
        prompt: prompt.into(),
        negative_prompt: negative_prompt.into(),
        scheduler: Some(scheduler.into()),
        steps: Some(steps),
        guidance_scale: Some(guidance_scale),
    }
}

/// The presets shipped with ferry.
pub fn builtin_styles() -> Vec<StylePreset> {
    vec![
        preset(
            "photographic",
            "a photograph: natural light, shallow depth of field, fine detail",
            "photograph of {prompt}, 35mm photograph, film, bokeh, professional, 4k, highly detailed",
            "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed, ugly",
            "DPM++ 2M Karras",
            30,
            7.0,
        ),
        preset(
            "cinematic",
            "a film still: moody light, film grain, wide framing",
            "cinematic film still of {prompt}, shallow depth of field, vignette, highly detailed, high budget, moody, epic, film grain",
            "anime, cartoon, graphic, text, painting, crayon, graphite, abstract, glitch, deformed, mutated, ugly, disfigured",
            "DPM++ 2M Karras",
            30,
            7.0,
        ),
        preset(
            "anime",
            "anime key visual: clean lines, vibrant colours",
            "anime artwork of {prompt}, anime style, key visual, vibrant, studio anime, highly detailed",
            "photo, deformed, black and white, realism, disfigured, low contrast",
            "Euler a",
            28,
            7.0,
        ),
        preset(
            "digital-art",
            "digital concept art: painterly, illustrative",
            "concept art of {prompt}, digital artwork, illustrative, painterly, matte painting, highly detailed",
            "photo, photorealistic, realism, ugly",
            "DPM++ 2M",
            30,
            7.5,
        ),
        preset(
            "fantasy-art",
            "ethereal fantasy art: magical, majestic, dreamy",
            "ethereal fantasy concept art of {prompt}, magnificent, celestial, painterly, epic, majestic, magical, fantasy art, cover art, dreamy",
            "photographic, realistic, realism, 35mm film, dslr, cropped, frame, text, deformed, glitch, noise, noisy, bad anatomy, ugly, disfigured, black and white",
            "DPM++ 2M Karras",
            30,
            7.5,
        ),
        preset(
            "line-art",
            "line art: minimalist vector drawing",
            "line art drawing of {prompt}, professional, sleek, modern, minimalist, graphic, line art, vector graphics",
            "anime, photorealistic, 35mm film, deformed, glitch, blurry, noisy, bad anatomy, ugly, disfigured, realism, oil, acrylic",
            "Euler",
            25,
            7.0,
        ),
    ]
}

/// The presets in force and the boost settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Styles {
    styles: Vec<StylePreset>,
    boost_refiner: Option<String>,
    boost_steps_factor: f64,
    boost_min_steps: u32,
}

impl Default for Styles {
    fn default() -> Self {
        Styles::new(&SdxlConfig::default())
    }
}

/// The request with `style` and `quality` taken out.
struct Asked {
    rest: Map<String, Value>,
    style: Option<(String, Value)>,
    quality: Option<(String, Value)>,
}

fn invalid(field: &str, message: impl Into<String>) -> RequestError {
    RequestError::Invalid(FieldError {
        field: field.to_owned(),
        message: message.into(),
    })
}

impl Styles {
    /// The presets of `config` (after the built-in ones, unless turned off), sorted by name.
    pub fn new(config: &SdxlConfig) -> Self {
        let mut styles = if config.builtin_styles {
            builtin_styles()
        } else {
            Vec::new()
        };
        for s in &config.styles {
            styles.retain(|b| b.name != s.name);
            styles.push(s.clone());
        }
        styles.sort_by(|a, b| a.name.cmp(&b.name));
        Styles {
            styles,
            boost_refiner: config.boost_refiner.clone(),
            boost_steps_factor: config.boost_steps_factor,
            boost_min_steps: config.boost_min_steps,
        }
    }

    /// The presets, sorted by name.
    pub fn list(&self) -> &[StylePreset] {
        &self.styles
    }

    /// The refiner `boost` uses when a request names none.
    pub fn boost_refiner(&self) -> Option<&str> {
        self.boost_refiner.as_deref()
    }

    /// `GET /api/sdxl/enhanced/styles`: the presets and what `boost` does.
    pub fn describe(&self) -> Value {
        serde_json::json!({
            "styles": self.styles,
            "quality": {
                "values": ["standard", "boost"],
                "boost": {
                    "refiner": self.boost_refiner,
                    "needs": if self.boost_refiner.is_some() {
                        "nothing: the configured refiner is used unless the request names model.refiner"
                    } else {
                        "model.refiner in the request (no sdxl.boost_refiner is configured)"
                    },
                    "steps_factor": self.boost_steps_factor,
                    "min_steps": self.boost_min_steps,
                },
            },
        })
    }

    /// A preset by name.
    pub fn get(&self, name: &str) -> Option<&StylePreset> {
        self.styles.iter().find(|s| s.name == name)
    }

    /// Whether `data` asks for a style or a quality (so [`prepare`](Self::prepare) changes
    /// more than its form).
    pub fn asks(data: &Value) -> bool {
        data.as_object().is_some_and(|m| {
            ["style", "quality", "Style", "Quality"]
                .iter()
                .any(|k| m.contains_key(*k))
        })
    }

    /// The plain nested request `data` stands for: its style and quality applied, then
    /// validated against the schema. `Err` names the field (`style`, `quality`, or the
    /// schema's).
    pub fn prepare(&self, data: &Value) -> Result<Value, RequestError> {
        let nested = self.apply(data)?;
        check(&nested)
    }

    /// [`prepare`](Self::prepare) as a report, for `POST /api/sdxl/enhanced/validate`.
    pub fn validate(&self, data: &Value) -> Result<Validation, SchemaError> {
        match self.apply(data) {
            Ok(nested) => validate(&nested),
            Err(RequestError::Invalid(e)) => Ok(Validation {
                valid: false,
                errors: vec![e],
                normalized: None,
            }),
            Err(RequestError::Schema(e)) => Err(e),
        }
    }

    /// `data` with style and quality applied (in the nested form when it asked for either;
    /// else as sent). Not validated.
    fn apply(&self, data: &Value) -> Result<Value, RequestError> {
        if !Self::asks(data) {
            return Ok(data.clone());
        }
        let asked = take_asked(data)?;
        let mut nested = if flat::is_flat(&asked.rest) {
            flat::to_nested(&asked.rest).map_err(|e| {
                let field = e.keys().first().map_or("(request)", |k| *k).to_owned();
                RequestError::Invalid(FieldError {
                    field,
                    message: e.reason(),
                })
            })?
        } else {
            asked.rest
        };
        if let Some((key, style)) = asked.style {
            match style {
                Value::Null => {}
                Value::String(name) => {
                    let preset = self.get(&name).ok_or_else(|| {
                        let known: Vec<&str> =
                            self.styles.iter().map(|s| s.name.as_str()).collect();
                        invalid(
                            &key,
                            format!(
                                "unknown style `{}` (known: {}; GET /api/sdxl/enhanced/styles)",
                                name.escape_debug(),
                                known.join(", ")
                            ),
                        )
                    })?;
                    apply_preset(preset, &mut nested);
                }
                _ => return Err(invalid(&key, "expected a style name (a string)")),
            }
        }
        if let Some((key, quality)) = asked.quality {
            match quality.as_str() {
                None if quality.is_null() => {}
                Some("standard") => {}
                Some("boost") => self.boost(&key, &mut nested)?,
                _ => return Err(invalid(&key, "expected \"standard\" or \"boost\"")),
            }
        }
        Ok(Value::Object(nested))
    }

    fn boost(&self, key: &str, nested: &mut Map<String, Value>) -> Result<(), RequestError> {
        let model = section(nested, "model");
        let named = model.get("refiner").is_some_and(|r| !r.is_null());
        if !named {
            let Some(refiner) = &self.boost_refiner else {
                return Err(invalid(
                    key,
                    "boost needs a refiner: name model.refiner in the request, or set \
                     sdxl.boost_refiner in ferry.toml",
                ));
            };
            model.insert("refiner".into(), Value::String(refiner.clone()));
        }
        let scheduler = section(nested, "scheduler");
        let steps = scheduler
            .get("steps")
            .and_then(Value::as_u64)
            .unwrap_or(WORKER_DEFAULT_STEPS);
        let boosted = ((steps as f64) * self.boost_steps_factor).ceil() as u64;
        let boosted = boosted.max(u64::from(self.boost_min_steps)).min(MAX_STEPS);
        scheduler.insert("steps".into(), boosted.into());
        Ok(())
    }
}

/// The section `name` of `nested` as an object (made when absent or not an object; a
/// non-object is left for the schema to name when it is not ours to fill).
fn section<'a>(nested: &'a mut Map<String, Value>, name: &str) -> &'a mut Map<String, Value> {
    let slot = nested
        .entry(name.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

fn take_asked(data: &Value) -> Result<Asked, RequestError> {
    let Some(map) = data.as_object() else {
        return Ok(Asked {
            rest: Map::new(),
            style: None,
            quality: None,
        });
    };
    let mut rest = map.clone();
    let mut take = |lower: &str, upper: &str| -> Result<Option<(String, Value)>, RequestError> {
        match (rest.remove(lower), rest.remove(upper)) {
            (Some(_), Some(_)) => Err(invalid(
                upper,
                format!("{lower} is already given (by {lower})"),
            )),
            (Some(v), None) => Ok(Some((lower.to_owned(), v))),
            (None, Some(v)) => Ok(Some((upper.to_owned(), v))),
            (None, None) => Ok(None),
        }
    };
    let style = take("style", "Style")?;
    let quality = take("quality", "Quality")?;
    Ok(Asked {
        rest,
        style,
        quality,
    })
}

fn apply_preset(preset: &StylePreset, nested: &mut Map<String, Value>) {
    let conditioning = section(nested, "conditioning");
    if let Some(Value::String(prompt)) = conditioning.get("prompt") {
        let styled = preset.prompt.replace("{prompt}", prompt);
        conditioning.insert("prompt".into(), Value::String(styled));
    }
    if !preset.negative_prompt.is_empty() {
        let own = conditioning
            .get("negative_prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let negative = if preset.negative_prompt.contains("{negative_prompt}") {
            preset.negative_prompt.replace("{negative_prompt}", &own)
        } else if own.is_empty() {
            preset.negative_prompt.clone()
        } else {
            format!("{own}, {}", preset.negative_prompt)
        };
        conditioning.insert("negative_prompt".into(), Value::String(negative));
    }
    let scheduler = section(nested, "scheduler");
    if let Some(name) = &preset.scheduler {
        scheduler
            .entry("type")
            .or_insert_with(|| Value::String(name.clone()));
    }
    if let Some(steps) = preset.steps {
        scheduler.entry("steps").or_insert_with(|| steps.into());
    }
    if scheduler.is_empty() {
        nested.remove("scheduler");
    }
    if let Some(g) = preset.guidance_scale {
        let hyper = section(nested, "hyperparameters");
        hyper.entry("guidance_scale").or_insert_with(|| g.into());
    }
}

/// Checks a preset of `ferry.toml`: its name, its `{prompt}`, and that a request styled by
/// it passes the schema (so its scheduler, steps and guidance are in range). `Err` is
/// `(field, reason)`.
pub fn check_preset(preset: &StylePreset) -> Result<(), (String, String)> {
    let name_ok = !preset.name.is_empty()
        && preset
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return Err((
            "name".into(),
            format!(
                "`{}`: expected lowercase letters, digits, `-` and `_`",
                preset.name.escape_debug()
            ),
        ));
    }
    if !preset.prompt.contains("{prompt}") {
        return Err((
            "prompt".into(),
            "the template must hold `{prompt}` (where the request's prompt goes)".into(),
        ));
    }
    let mut nested = serde_json::json!({"model": {"base": "m"}, "conditioning": {"prompt": "p"}})
        .as_object()
        .cloned()
        .unwrap_or_default();
    apply_preset(preset, &mut nested);
    match check(&Value::Object(nested)) {
        Ok(_) => Ok(()),
        Err(RequestError::Invalid(e)) => {
            let field = match e.field.as_str() {
                "scheduler.type" => "scheduler",
                "scheduler.steps" => "steps",
                "hyperparameters.guidance_scale" => "guidance_scale",
                "conditioning.prompt" => "prompt",
                "conditioning.negative_prompt" => "negative_prompt",
                other => other,
            };
            Err((field.to_owned(), e.message))
        }
        Err(RequestError::Schema(e)) => Err(("(schema)".into(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn styles() -> Styles {
        Styles::default()
    }

    #[test]
    fn every_builtin_preset_passes_its_own_check() {
        for p in builtin_styles() {
            assert_eq!(check_preset(&p), Ok(()), "{}", p.name);
        }
    }

    #[test]
    fn a_style_fills_what_the_request_leaves_out_and_keeps_what_it_gives() {
        let out = styles()
            .prepare(&json!({
                "model": {"base": "/m"},
                "conditioning": {"prompt": "a fox", "negative_prompt": "blurry"},
                "scheduler": {"steps": 12},
                "style": "anime",
            }))
            .unwrap();
        assert_eq!(
            out,
            json!({
                "model": {"base": "/m"},
                "conditioning": {
                    "prompt": "anime artwork of a fox, anime style, key visual, vibrant, studio anime, highly detailed",
                    "negative_prompt": "blurry, photo, deformed, black and white, realism, disfigured, low contrast",
                },
                "scheduler": {"type": "Euler a", "steps": 12},
                "hyperparameters": {"guidance_scale": 7.0},
            })
        );
    }

    #[test]
    fn old_shapes_take_a_style_too() {
        let out = styles()
            .prepare(&json!({
                "Model": {"Base": "/m"}, "Conditioning": {"Prompt": "a fox"}, "Style": "line-art"
            }))
            .unwrap();
        assert!(out["conditioning"]["prompt"]
            .as_str()
            .unwrap()
            .starts_with("line art drawing of a fox"));
        let err = styles()
            .prepare(&json!({"prompt": "x", "model": "/m", "style": "anime", "Style": "anime"}))
            .unwrap_err();
        assert!(err.to_string().starts_with("Style: "), "{err}");
    }

    #[test]
    fn unknown_style_and_bad_quality_are_named() {
        let err = styles()
            .prepare(&json!({"model": "/m", "prompt": "x", "style": "vaporwave"}))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(
            err.to_string()
                .starts_with("style: unknown style `vaporwave` (known: anime, cinematic,"),
            "{err}"
        );
        let err = styles()
            .prepare(&json!({"model": "/m", "prompt": "x", "quality": "ultra"}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "quality: expected \"standard\" or \"boost\""
        );
        let report = styles()
            .validate(&json!({"model": "/m", "prompt": "x", "style": 3}))
            .unwrap();
        assert_eq!(report.errors[0].field, "style");
    }

    #[test]
    fn boost_needs_a_refiner_and_adds_steps() {
        let err = styles()
            .prepare(&json!({"model": "/m", "prompt": "x", "quality": "boost"}))
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("quality: boost needs a refiner"));
        let out = styles()
            .prepare(&json!({"model": "/m", "refiner": "/r", "prompt": "x", "steps": 30, "quality": "boost"}))
            .unwrap();
        assert_eq!(out["scheduler"]["steps"], 45);
        assert_eq!(out["model"]["refiner"], "/r");
        let configured = Styles::new(&SdxlConfig {
            boost_refiner: Some("refiner".into()),
            ..Default::default()
        });
        let out = configured
            .prepare(&json!({"model": "/m", "prompt": "x", "steps": 4, "quality": "boost"}))
            .unwrap();
        assert_eq!(out["model"]["refiner"], "refiner");
        assert_eq!(out["scheduler"]["steps"], 40);
        let out = configured
            .prepare(&json!({"model": "/m", "prompt": "x", "steps": 190, "quality": "boost"}))
            .unwrap();
        assert_eq!(out["scheduler"]["steps"], 200);
    }

    #[test]
    fn configured_presets_replace_builtins_of_their_name() {
        let own = StylePreset {
            name: "anime".into(),
            description: String::new(),
            prompt: "{prompt}, cel shaded".into(),
            negative_prompt: "{negative_prompt}".into(),
            scheduler: None,
            steps: None,
            guidance_scale: None,
        };
        let s = Styles::new(&SdxlConfig {
            styles: vec![own.clone()],
            ..Default::default()
        });
        assert_eq!(s.get("anime"), Some(&own));
        assert!(s.get("cinematic").is_some());
        let out = s
            .prepare(&json!({"model": "/m", "prompt": "x", "style": "anime"}))
            .unwrap();
        assert_eq!(
            out,
            json!({"model": {"base": "/m"}, "conditioning": {"prompt": "x, cel shaded", "negative_prompt": ""}})
        );
        let only = Styles::new(&SdxlConfig {
            builtin_styles: false,
            styles: vec![own],
            ..Default::default()
        });
        assert_eq!(only.list().len(), 1);
    }

    #[test]
    fn bad_presets_are_named_by_their_field() {
        let mut p = builtin_styles().remove(0);
        p.steps = Some(500);
        assert_eq!(check_preset(&p).unwrap_err().0, "steps");
        let mut p = builtin_styles().remove(0);
        p.scheduler = Some("Euler b".into());
        assert_eq!(check_preset(&p).unwrap_err().0, "scheduler");
        let mut p = builtin_styles().remove(0);
        p.prompt = "no placeholder".into();
        assert_eq!(check_preset(&p).unwrap_err().0, "prompt");
        let mut p = builtin_styles().remove(0);
        p.name = "Photo!".into();
        assert_eq!(check_preset(&p).unwrap_err().0, "name");
    }

    #[test]
    fn a_request_without_style_or_quality_passes_as_sent() {
        let flat = json!({"model": "/m", "prompt": "x"});
        assert!(!Styles::asks(&flat));
        assert_eq!(
            styles().prepare(&flat).unwrap(),
            json!({"model": {"base": "/m"}, "conditioning": {"prompt": "x"}})
        );
    }
}
