//! Validates SARIF output against the official SARIF 2.1.0 JSON schema (installed by scripts/test.sh).

use std::process::Command;

/// Panics with the schema errors unless `log` is valid SARIF 2.1.0.
pub fn assert_valid(log: &serde_json::Value) {
    let schema = std::env::var("CCFAN_SARIF_SCHEMA")
        .expect("CCFAN_SARIF_SCHEMA is not set: run the tests with scripts/test.sh, which installs the SARIF schema");
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
    let bad = serde_json::json!({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": [{"level": "bogus", "message": {"text": "m"}}]}]});
    let caught = std::panic::catch_unwind(|| assert_valid(&bad))
        .expect_err("an invalid level must fail validation");
    let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("SARIF does not validate") && message.contains("bogus"),
        "{message}"
    );
}
