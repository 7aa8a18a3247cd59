//! Answers checked against the committed OpenAPI description (`service/openapi.json`): the
//! operation is found by method and path template, and the body is validated with the schema
//! the description gives for its status.

use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;

pub fn description() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("service/openapi.json")).expect("JSON")
    })
}

/// Whether `template` (`/api/v1/environments/{id}`) matches `path`.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}

/// Fails the test unless `body`, answered with `status` to `method url`, is what the
/// description says that operation answers with that status.
pub fn check(method: &str, url: &str, status: u16, body: &Value) {
    let path = url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| &rest[i..])).unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    let doc = description();
    let operation = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(template, _)| matches(template, path))
        .and_then(|(_, item)| item.get(method.to_lowercase()))
        .unwrap_or_else(|| panic!("{method} {path} is not in service/openapi.json"));
    let response = operation["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {path}: status {status} is not described: {body}"));
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        panic!("{method} {path} {status}: no JSON schema described");
    };
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&root).expect("a valid schema");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{method} {path} {status} does not match its description: {errors:#?}\n{body}");
}
