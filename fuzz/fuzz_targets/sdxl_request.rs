//! The SDXL request normalizer and validator (`ferry_server::sdxl`) on arbitrary JSON: the body of
//! `/api/sdxl/enhanced/{validate,generate,estimate}`.
//!
//! Checks: `validate` never fails (the embedded schema compiles); `valid` exactly when
//! there are no errors and then `normalized` is set; `check` agrees with `validate` (the
//! normalized request, or its first error); every error names a field (an unknown flat key
//! as sent) and says something;
//! a normalized request is nested (not flat), valid again and its own normal form
//! (idempotence); `flat::to_nested` on any object keeps every plain flat key's value under
//! its target (the direct protocol's section objects and the C# client's keys are reshaped,
//! so only their outcome's shape is checked), or names every unknown key / a key that is
//! there, and its output is never flat.
#![no_main]

use ferry_server::sdxl::flat::{is_flat, target, to_nested, FlatError};
use ferry_server::sdxl::legacy::{is_csharp_key, SECTIONS};
use ferry_server::sdxl::{check, validate, RequestError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let report = validate(&value).expect("the embedded schema compiles");
    assert_eq!(report.valid, report.errors.is_empty());
    assert_eq!(report.valid, report.normalized.is_some());
    for e in &report.errors {
        // A field is named; an unknown flat key is named as sent, even the empty one.
        let empty_key = value.as_object().is_some_and(|o| o.contains_key(""));
        assert!(!e.field.is_empty() || empty_key, "{e:?}");
        assert!(!e.message.is_empty(), "{e:?}");
    }
    serde_json::to_vec(&report).expect("the report serializes");
    match (check(&value), &report.normalized) {
        (Ok(n), Some(want)) => assert_eq!(&n, want),
        (Err(RequestError::Invalid(first)), None) => assert_eq!(first, report.errors[0]),
        (got, _) => panic!("check {got:?} disagrees with validate {report:?}"),
    }
    if let Some(n) = &report.normalized {
        let obj = n.as_object().expect("a normalized request is an object");
        assert!(!is_flat(obj), "normalized request is still flat: {n}");
        let again = validate(n).unwrap();
        assert!(again.valid, "normalized request is invalid: {again:?}");
        assert_eq!(
            again.normalized.as_ref(),
            Some(n),
            "normalization is not idempotent"
        );
    }

    let Value::Object(obj) = &value else {
        return;
    };
    // A key of the old forms that the conversion reshapes rather than places as is.
    let reshaped = |key: &str, v: &Value| {
        is_csharp_key(key) || (SECTIONS.contains(&key) && (v.is_object() || target(key).is_none()))
    };
    match to_nested(obj) {
        Ok(nested) => {
            assert!(!is_flat(&nested), "to_nested output is flat");
            for (key, v) in obj {
                if reshaped(key, v) {
                    continue;
                }
                let path = target(key).expect("converted keys are flat keys");
                let mut node = nested.get(path[0]);
                for part in &path[1..] {
                    node = node.and_then(|n| n.get(part));
                }
                let node = node.unwrap_or_else(|| panic!("{key} not under {}", path.join(".")));
                match (v, node) {
                    // An object that later, deeper keys were merged into (`controlnet` and
                    // `controlnet_type`): its own entries are all there.
                    (Value::Object(given), Value::Object(merged)) => {
                        for (k, x) in given {
                            assert_eq!(merged.get(k), Some(x), "{key}.{k}");
                        }
                    }
                    _ => assert_eq!(node, v, "{key} under {}", path.join(".")),
                }
            }
        }
        Err(FlatError::Unknown(keys)) => {
            assert!(!keys.is_empty());
            for k in &keys {
                assert!(obj.contains_key(k) && target(k).is_none(), "{k}");
                assert!(!is_csharp_key(k) && !SECTIONS.contains(&k.as_str()), "{k}");
            }
            assert_eq!(
                keys.len(),
                obj.keys()
                    .filter(|k| target(k).is_none()
                        && !is_csharp_key(k)
                        && !SECTIONS.contains(&k.as_str()))
                    .count()
            );
        }
        Err(FlatError::UnknownCSharp(keys)) => {
            assert!(!keys.is_empty());
            for k in &keys {
                assert!(obj.contains_key(k) && is_csharp_key(k), "{k}");
            }
        }
        Err(FlatError::Conflict { key, reason }) => {
            // Named as sent: a top-level key, or dotted under a section (`Hyperparameters.Seed`).
            let top = key.split('.').next().unwrap_or_default();
            assert!(obj.contains_key(&key) || obj.contains_key(top), "{key}");
            assert!(!reason.is_empty());
        }
    }
});
