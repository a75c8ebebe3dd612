//! The SDXL generation request, checked on the host.
//!
//! The request's JSON Schema is the worker's own file,
//! `workers/ml/ferry_sdxl/schema/generation_request.json`, embedded at build time
//! ([`SCHEMA_JSON`]), so the host and the worker validate against one source. A request in the
//! old design's flat form is converted to the nested form first ([`flat`], a port of
//! `request.py`'s conversion), then validated with the `jsonschema` crate (draft 2020-12).
//!
//! [`validate`] answers what the worker's `inference.validate` answers, `{valid, errors:
//! [{field, message}], normalized}`; [`check`] is the same judgement as a `Result`, for the
//! routes that refuse an invalid request before calling a worker.
//!
//! The old system's other shapes are read too ([`legacy`]): the direct protocol's inference
//! data (section objects in a flat request) and the C# client's `EnhancedSDXLRequest`
//! (PascalCase). [`styles`] applies named style presets and the quality boost on the host;
//! [`recommend`] finds settings that fit a time or memory budget from the worker's estimate.
//!
//! ```
//! use ferry_server::sdxl;
//! use serde_json::json;
//!
//! let report = sdxl::validate(&json!({"model": "/models/sdxl", "prompt": "a fox", "width": 70}))?;
//! assert!(!report.valid);
//! assert_eq!(report.errors[0].field, "dimensions.width");
//!
//! let nested = sdxl::check(&json!({"model": {"base": "/m"}, "conditioning": {"prompt": "a fox"}}))?;
//! assert_eq!(nested["conditioning"]["prompt"], "a fox");
//! # Ok::<(), ferry_server::sdxl::RequestError>(())
//! ```

pub mod flat;
pub mod legacy;
pub mod recommend;
mod request;
pub mod styles;

pub use styles::{SdxlConfig, StylePreset, Styles};

/// The operations that generate (or estimate a generation) from a request: a `style` or
/// `quality` in their data is applied on the host before the worker gets it. The first two are
/// the worker's names, the others the old system's aliases.
pub const GENERATION_OPERATIONS: [&str; 5] = [
    "inference.generate",
    "inference.estimate",
    "inference",
    "inference_request",
    "generate_sdxl_enhanced",
];

pub use request::{
    check, schema, validate, FieldError, RequestError, SchemaError, Validation, SCHEMA_JSON,
};
