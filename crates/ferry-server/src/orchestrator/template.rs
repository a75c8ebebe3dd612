//! Step input templates: `"$request.a.0"`, `"$previous"`, `"$steps.generate.images"`.

use serde_json::Value;
use std::collections::HashMap;

/// What a template can refer to.
pub(crate) struct Scope<'a> {
    pub(crate) request: &'a Value,
    pub(crate) previous: &'a Value,
    pub(crate) steps: &'a HashMap<String, Value>,
}

/// Fills `template`: every string starting with `$` is replaced by the value it names
/// (`null` when the path leads nowhere); everything else is kept.
pub(crate) fn render(template: &Value, scope: &Scope<'_>) -> Value {
    match template {
        Value::String(s) if s.starts_with('$') => resolve(&s[1..], scope),
        Value::Array(items) => Value::Array(items.iter().map(|i| render(i, scope)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, scope)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn resolve(path: &str, scope: &Scope<'_>) -> Value {
    let mut parts = path.split('.');
    let root = match parts.next() {
        Some("request") => scope.request,
        Some("previous") => scope.previous,
        Some("steps") => match parts.next().and_then(|name| scope.steps.get(name)) {
            Some(v) => v,
            None => return Value::Null,
        },
        _ => return Value::Null,
    };
    let mut current = root;
    for part in parts {
        let next = match current {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return Value::Null,
        }
    }
    current.clone()
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
}
