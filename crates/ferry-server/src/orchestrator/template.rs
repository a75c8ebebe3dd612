//! Step input templates: `"$request.a.0"`, `"$previous"`, `"$steps.generate.images"`, and in
//! a step with `for_each`, `"$item"` (the element) and `"$index"`. A reference ending in `?`
//! (`"$request.seed?"`) as an object's value leaves the key out when the path leads nowhere,
//! instead of giving `null`.

use serde_json::Value;
use std::collections::HashMap;

/// What a template can refer to.
pub(crate) struct Scope<'a> {
    pub(crate) request: &'a Value,
    pub(crate) previous: &'a Value,
    pub(crate) steps: &'a HashMap<String, Value>,
    /// The element of a `for_each` step's list and its index.
    pub(crate) item: Option<(&'a Value, usize)>,
}

/// Fills `template`: every string starting with `$` is replaced by the value it names
/// (`null` when the path leads nowhere); everything else is kept.
pub(crate) fn render(template: &Value, scope: &Scope<'_>) -> Value {
    match template {
        Value::String(s) if s.starts_with('$') => {
            resolve(s[1..].trim_end_matches('?'), scope).unwrap_or(Value::Null)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| render(i, scope)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) if s.starts_with('$') && s.ends_with('?') => {
                        resolve(&s[1..s.len() - 1], scope).map(|v| (k.clone(), v))
                    }
                    _ => Some((k.clone(), render(v, scope))),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The value `path` names; `None` when it leads nowhere.
fn resolve(path: &str, scope: &Scope<'_>) -> Option<Value> {
    let mut parts = path.split('.');
    let index;
    let root = match parts.next() {
        Some("request") => scope.request,
        Some("previous") => scope.previous,
        Some("steps") => parts.next().and_then(|name| scope.steps.get(name))?,
        Some("item") => scope.item?.0,
        Some("index") => {
            index = Value::from(scope.item?.1);
            &index
        }
        _ => return None,
    };
    let mut current = root;
    for part in parts {
        let next = match current {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        current = next?;
    }
    Some(current.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_references_and_keeps_literals() {
        let request = json!({"prompt": "fox", "size": [64, 32]});
        let previous = json!({"image": "png"});
        let mut steps = HashMap::new();
        steps.insert("gen".to_owned(), json!({"images": ["a", "b"]}));
        let scope = Scope {
            request: &request,
            previous: &previous,
            steps: &steps,
            item: None,
        };
        let template = json!({
            "p": "$request.prompt", "w": "$request.size.0", "img": "$steps.gen.images.1",
            "prev": "$previous", "literal": 3, "missing": "$request.nope", "all": ["$request.prompt", "x"]
        });
        assert_eq!(
            render(&template, &scope),
            json!({"p": "fox", "w": 64, "img": "b", "prev": {"image": "png"}, "literal": 3, "missing": null, "all": ["fox", "x"]})
        );
    }

    #[test]
    fn items_and_optional_keys() {
        let request = json!({"style": "anime", "seed": null});
        let steps = HashMap::new();
        let item = json!("a fox");
        let scope = Scope {
            request: &request,
            previous: &Value::Null,
            steps: &steps,
            item: Some((&item, 2)),
        };
        let template = json!({
            "prompt": "$item", "i": "$index", "style": "$request.style?",
            "seed": "$request.seed?", "width": "$request.width?", "height": "$request.height",
        });
        assert_eq!(
            render(&template, &scope),
            json!({"prompt": "a fox", "i": 2, "style": "anime", "seed": null, "height": null})
        );
        let none = Scope {
            item: None,
            ..scope
        };
        assert_eq!(render(&json!("$item"), &none), Value::Null);
    }
}
