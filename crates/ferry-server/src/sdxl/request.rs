//! The embedded schema, its compiled validator, and the validation answer.

use super::flat;
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde::Serialize;
use serde_json::Value;
use std::sync::OnceLock;

/// The generation request's JSON Schema (draft 2020-12), the worker's file verbatim.
pub const SCHEMA_JSON: &str =
    include_str!("../../../../workers/ml/ferry_sdxl/schema/generation_request.json");

/// The field named for an error about the request as a whole, as the worker names it.
const WHOLE_REQUEST: &str = "(request)";

/// One thing wrong with a request: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field in the nested form, dotted (`dimensions.width`, `conditioning.loras.0.path`);
    /// a flat key that the conversion does not know is named as sent (`widht`); `(request)`
    /// when the request is not an object.
    pub field: String,
    /// What is wrong with it (`70 is not a multiple of 8`).
    pub message: String,
}

/// The answer of a validation: the body of `POST /api/sdxl/enhanced/validate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validation {
    /// Whether the request is valid (then `errors` is empty).
    pub valid: bool,
    /// Every error, ordered by the field's path in the request.
    pub errors: Vec<FieldError>,
    /// The request in the nested form when valid (a flat request converted), else `None`.
    pub normalized: Option<Value>,
}

impl Validation {
    fn invalid(errors: Vec<FieldError>) -> Self {
        Validation {
            valid: false,
            errors,
            normalized: None,
        }
    }
}

/// The embedded schema could not be parsed or compiled: a defect of the build (the worker's
/// file is broken), never the caller's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the embedded generation request schema is unusable: {0}")]
pub struct SchemaError(String);

/// Why a generation request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request breaks the schema, is not an object, or has an unknown flat key; the
    /// first error by field path.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    /// The embedded schema is unusable.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

impl RequestError {
    /// The stable error code: `invalid_request`, or `internal` for an unusable schema.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Invalid(_) => "invalid_request",
            RequestError::Schema(_) => "internal",
        }
    }
}

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled() -> Result<&'static Compiled, SchemaError> {
    static COMPILED: OnceLock<Result<Compiled, SchemaError>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let schema: Value =
                serde_json::from_str(SCHEMA_JSON).map_err(|e| SchemaError(e.to_string()))?;
            let validator =
                jsonschema::draft202012::new(&schema).map_err(|e| SchemaError(e.to_string()))?;
            Ok(Compiled { schema, validator })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The schema, parsed.
pub fn schema() -> Result<&'static Value, SchemaError> {
    compiled().map(|c| &c.schema)
}

/// Checks `data` (either form) against the schema and answers every error, as the worker's
/// `inference.validate` does. `Err` only when the embedded schema is unusable.
pub fn validate(data: &Value) -> Result<Validation, SchemaError> {
    let compiled = compiled()?;
    let Some(object) = data.as_object() else {
        return Ok(Validation::invalid(vec![FieldError {
            field: WHOLE_REQUEST.to_owned(),
            message: "expected a JSON object (the generation request)".to_owned(),
        }]));
    };
    let nested = if flat::is_flat(object) {
        match flat::to_nested(object) {
            Ok(nested) => Value::Object(nested),
            Err(e) => {
                let message = e.reason();
                return Ok(Validation::invalid(
                    e.keys()
                        .into_iter()
                        .map(|field| FieldError {
                            field: field.to_owned(),
                            message: message.clone(),
                        })
                        .collect(),
                ));
            }
        }
    } else {
        data.clone()
    };
    let mut found: Vec<(Vec<Segment>, Vec<FieldError>)> = compiled
        .validator
        .iter_errors(&nested)
        .map(|e| (instance_path(&e), field_errors(&e)))
        .collect();
    // By the instance path, as the worker sorts (`sorted(..., key=absolute_path)`), stable.
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let errors: Vec<FieldError> = found.into_iter().flat_map(|(_, e)| e).collect();
    Ok(if errors.is_empty() {
        Validation {
            valid: true,
            errors,
            normalized: Some(nested),
        }
    } else {
        Validation::invalid(errors)
    })
}

/// The nested form of a valid `data`, or the first error naming its field, as the worker's
/// `request.validate` judges before a generation.
pub fn check(data: &Value) -> Result<Value, RequestError> {
    let mut report = validate(data)?;
    if report.valid {
        if let Some(nested) = report.normalized {
            return Ok(nested);
        }
    }
    let first = if report.errors.is_empty() {
        FieldError {
            field: WHOLE_REQUEST.to_owned(),
            message: "invalid".to_owned(),
        }
    } else {
        report.errors.swap_remove(0)
    };
    Err(RequestError::Invalid(first))
}

/// One step of an instance path; indices sort before keys (never both at one level).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Index(usize),
    Key(String),
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Segment::Index(i) => write!(f, "{i}"),
            Segment::Key(k) => f.write_str(k),
        }
    }
}

fn instance_path(e: &ValidationError<'_>) -> Vec<Segment> {
    e.instance_path()
        .segments()
        .map(|s| match s {
            LocationSegment::Index(i) => Segment::Index(i),
            LocationSegment::Property(p) => Segment::Key(p.into_owned()),
        })
        .collect()
}

fn dotted(path: &[Segment], last: Option<&str>) -> String {
    let mut parts: Vec<String> = path.iter().map(ToString::to_string).collect();
    parts.extend(last.map(str::to_owned));
    if parts.is_empty() {
        WHOLE_REQUEST.to_owned()
    } else {
        parts.join(".")
    }
}

/// The errors one validation error stands for, each naming its field: a missing property is
/// named itself (`conditioning.prompt`), not its parent; each unexpected property is named.
fn field_errors(e: &ValidationError<'_>) -> Vec<FieldError> {
    let path = instance_path(e);
    match e.kind() {
        ValidationErrorKind::Required { property } => vec![FieldError {
            field: dotted(&path, Some(property.as_str().unwrap_or_default())),
            message: e.to_string(),
        }],
        ValidationErrorKind::AdditionalProperties { unexpected } if !unexpected.is_empty() => {
            unexpected
                .iter()
                .map(|key| FieldError {
                    field: dotted(&path, Some(key)),
                    message: format!(
                        "Additional properties are not allowed ('{key}' was unexpected)"
                    ),
                })
                .collect()
        }
        // The schema bounds prompts and paths; the string itself is not echoed back (it may
        // be megabytes), only its length, as the worker words it (`request.error_message`).
        ValidationErrorKind::MaxLength { limit } => vec![FieldError {
            field: dotted(&path, None),
            message: match e.instance().as_str() {
                Some(s) => format!(
                    "{} characters, longer than the maximum of {limit}",
                    s.chars().count()
                ),
                None => e.to_string(),
            },
        }],
        _ => vec![FieldError {
            field: dotted(&path, None),
            message: e.to_string(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(data: Value) -> Vec<String> {
        validate(&data)
            .unwrap()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn the_embedded_schema_compiles() {
        let schema = schema().unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }

    #[test]
    fn a_valid_flat_request_is_normalized_to_the_nested_form() {
        let report = validate(&json!({"model": "/m", "prompt": "a fox", "width": 512})).unwrap();
        assert_eq!(
            report,
            Validation {
                valid: true,
                errors: vec![],
                normalized: Some(json!({
                    "model": {"base": "/m"},
                    "conditioning": {"prompt": "a fox"},
                    "dimensions": {"width": 512},
                })),
            }
        );
    }

    #[test]
    fn a_valid_nested_request_is_answered_as_sent() {
        let nested = json!({"model": {"base": "/m", "vae": null}, "conditioning": {"prompt": "x", "loras": [{"path": "/l", "weight": -1.5}]}, "hyperparameters": {"seed": 18446744073709551615u64}});
        assert_eq!(check(&nested).unwrap(), nested);
    }

    #[test]
    fn errors_name_their_field() {
        assert_eq!(
            fields(json!({"model": {"base": "/m"}, "conditioning": {}})),
            ["conditioning.prompt"]
        );
        // Same path: in the order of the schema's `required`, as the worker lists them.
        assert_eq!(fields(json!({})), ["model", "conditioning"]);
        assert_eq!(
            fields(json!({"model": "/m", "prompt": "x", "width": 70, "height": 4096})),
            ["dimensions.height", "dimensions.width"]
        );
        assert_eq!(
            fields(json!({"model": "/m", "prompt": "x", "loras": [{"path": ""}, {"weight": 1}]})),
            ["conditioning.loras.0.path", "conditioning.loras.1.path"]
        );
        assert_eq!(
            fields(
                json!({"model": {"base": "/m", "colour": 1}, "conditioning": {"prompt": "x"}, "extra": true})
            ),
            ["extra", "model.colour"]
        );
        assert_eq!(fields(json!([1, 2])), ["(request)"]);
        assert_eq!(fields(json!({"prompt": "x", "widht": 8})), ["widht"]);
    }

    #[test]
    fn check_answers_the_first_error_as_field_colon_message() {
        let err = check(&json!({"model": "/m", "prompt": "x", "width": 70})).unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert_eq!(
            err.to_string(),
            "dimensions.width: 70 is not a multiple of 8"
        );
        let err = check(&json!({"model": "/m", "prompt": "x", "widht": 8})).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("widht: not a field of the flat request form (known: base,"));
        let err = check(&json!({"model": "/m", "prompt": "x", "steps": "many"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "scheduler.steps: \"many\" is not of type \"integer\""
        );
        let err = check(&json!({"model": {"base": "/m"}, "conditioning": {}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conditioning.prompt: \"prompt\" is a required property"
        );
    }

    #[test]
    fn a_prompt_above_its_max_length_is_named_by_its_length_not_echoed() {
        let long = "é".repeat(8193);
        let err = check(&json!({"model": "/m", "prompt": long})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conditioning.prompt: 8193 characters, longer than the maximum of 8192"
        );
        let at_limit = "é".repeat(8192); // characters, not bytes
        assert!(check(&json!({"model": "/m", "prompt": at_limit})).is_ok());
    }

    #[test]
    fn keys_with_slashes_and_tildes_are_named_as_sent() {
        assert_eq!(
            fields(json!({"model": {"base": "/m"}, "conditioning": {"prompt": "x", "a/b~c": 1}})),
            ["conditioning.a/b~c"]
        );
    }
}
