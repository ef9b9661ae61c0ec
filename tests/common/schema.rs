//! Validate JSON output against the published schemas in `docs/schemas/`
//! (JSON Schema 2020-12), `$ref`s between them resolved from that folder.

use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas")
}

fn load(name: &str) -> serde_json::Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Resolves `$ref: "x.schema.json"` to `docs/schemas/x.schema.json`; nothing is fetched.
struct Folder;

impl jsonschema::Retrieve for Folder {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri.path().as_str().rsplit('/').next().unwrap_or_default().to_owned();
        let path = dir().join(&name);
        if !name.ends_with(".schema.json") || !path.is_file() {
            return Err(format!("no schema {uri} in docs/schemas").into());
        }
        Ok(load(&name))
    }
}

/// The validator of `schema` (a file name in docs/schemas).
pub fn compile(schema: &str) -> jsonschema::Validator {
    jsonschema::options()
        .with_retriever(Folder)
        .build(&load(schema))
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

/// Panic, listing every error, unless `value` is valid against `schema` (a file name in docs/schemas).
pub fn assert_valid(schema: &str, value: &serde_json::Value) {
    let validator = compile(schema);
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{schema}: {}\n{value:#}", errors.join("; "));
}

/// Each element of the array `value` is valid against `schema`.
pub fn assert_each_valid(schema: &str, value: &serde_json::Value) {
    let items = value.as_array().unwrap_or_else(|| panic!("expected an array for {schema}: {value}"));
    for item in items {
        assert_valid(schema, item);
    }
}

/// The file names of every published schema.
pub fn all_schemas() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".schema.json"))
        .collect();
    names.sort();
    names
}
