//! Validates SARIF output against the official SARIF 2.1.0 JSON schema (installed by scripts/test.sh).

use std::process::Command;

/// The official SARIF schema, when installed (see [`crate::env::installed`]).
fn schema(test: &str) -> Option<std::path::PathBuf> {
    crate::env::installed(
        test,
        "the SARIF 2.1.0 schema (CCFAN_SARIF_SCHEMA)",
        crate::env::env_path("CCFAN_SARIF_SCHEMA"),
    )
}

/// Panics with the schema errors unless `log` is valid SARIF 2.1.0 (the check is skipped, saying so, where the
/// schema is not installed).
pub fn assert_valid(log: &serde_json::Value) {
    let Some(schema) = schema("SARIF validation") else {
        return;
    };
    let schema = schema.to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.sarif");
    std::fs::write(&file, serde_json::to_vec(log).unwrap()).unwrap();
    let check = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
log = json.load(open(sys.argv[2]))
errors = list(jsonschema.Draft202012Validator(schema).iter_errors(log))
for error in errors:
    print(f"{list(error.absolute_path)}: {error.message}")
sys.exit(1 if errors else 0)
"#;
    let output = Command::new("python3")
        .env(
            "PYTHONPATH",
            std::env::var("CCFAN_TEST_PYTHONPATH").unwrap_or_default(),
        )
        .args(["-c", check, &schema, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "SARIF does not validate:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_validator_rejects_bad_sarif() {
    if schema("the_validator_rejects_bad_sarif").is_none() {
        return;
    }
    let bad = serde_json::json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": [{"level": "bogus", "message": {"text": "m"}}]}]});
    let caught = std::panic::catch_unwind(|| assert_valid(&bad))
        .expect_err("an invalid level must fail validation");
    let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("SARIF does not validate") && message.contains("bogus"),
        "{message}"
    );
}
