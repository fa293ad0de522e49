//! `/openapi.json` as tools read it: valid OpenAPI 3.1 by a maintained validator, and each
//! legacy operation's request and response schemas the same as its contract's document says
//! (member names, types, required members, enums). The documents' schemas are in
//! `tests/fixtures/seed-schemas/`: copied from the OpenAPI documents of 000 and 002,
//! transcribed from the tables and examples of 001, 003 and 004.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

async fn served_document() -> Value {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let reply = app.rest("GET", "/openapi.json", None, None).await;
    assert_eq!(reply.status, 200);
    reply.body
}

fn seed(file: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/seed-schemas/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Follows `$ref`s, and takes the non-null branch of an optional value's `oneOf`.
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(target) = schema["$ref"].as_str() {
        return resolve(root.pointer(target.trim_start_matches('#')).unwrap(), root);
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let real: Vec<&Value> = branches.iter().filter(|b| b["type"] != "null").collect();
        if let [only] = real.as_slice() {
            return resolve(only, root);
        }
    }
    schema
}

fn types(schema: &Value) -> BTreeSet<String> {
    let named = match &schema["type"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    named.into_iter().filter(|t| t != "null").collect()
}

/// An `enum`, or the `const`s of an `anyOf` (as contract 002 lists its roles).
fn allowed(schema: &Value) -> Option<BTreeSet<String>> {
    if let Some(values) = schema["enum"].as_array() {
        return Some(values.iter().map(Value::to_string).collect());
    }
    let consts: Vec<&Value> = schema["anyOf"]
        .as_array()?
        .iter()
        .map(|b| &b["const"])
        .collect();
    Some(consts.into_iter().map(Value::to_string).collect())
}

/// Where `ours` differs from the document's `theirs`.
fn compare(
    ours: &Value,
    our_root: &Value,
    theirs: &Value,
    their_root: &Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    let (ours, theirs) = (resolve(ours, our_root), resolve(theirs, their_root));
    let their_types = types(theirs);
    if !their_types.is_empty() && types(ours) != their_types {
        problems.push(format!(
            "{at}: type {:?}, the document says {their_types:?}",
            types(ours)
        ));
    }
    if let Some(expected) = allowed(theirs) {
        let enumerated = allowed(ours).or_else(|| allowed(resolve(&ours["items"], our_root)));
        if enumerated.as_ref() != Some(&expected) {
            problems.push(format!(
                "{at}: values {enumerated:?}, the document says {expected:?}"
            ));
        }
    }
    if let Some(properties) = theirs["properties"].as_object() {
        let our_properties = ours["properties"].as_object().cloned().unwrap_or_default();
        for (name, schema) in properties {
            match our_properties.get(name) {
                Some(our) => compare(
                    our,
                    our_root,
                    schema,
                    their_root,
                    &format!("{at}.{name}"),
                    problems,
                ),
                None => problems.push(format!("{at}: no member `{name}`")),
            }
        }
        for name in our_properties
            .keys()
            .filter(|name| !properties.contains_key(*name))
        {
            problems.push(format!("{at}: member `{name}` is not in the document"));
        }
    }
    for required in theirs["required"].as_array().into_iter().flatten() {
        let ours_required = ours["required"]
            .as_array()
            .is_some_and(|r| r.contains(required));
        if !ours_required {
            problems.push(format!("{at}: `{required}` is not required"));
        }
    }
    if theirs["items"].is_object() {
        compare(
            &ours["items"],
            our_root,
            &theirs["items"],
            their_root,
            &format!("{at}[]"),
            problems,
        );
    }
}

#[tokio::test]
async fn the_openapi_document_passes_a_maintained_validator() {
    let document = served_document().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), document.to_string()).unwrap();
    let run = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output();
    let required = std::env::var_os("SETTINGS_API_REQUIRE_OPENAPI_VALIDATOR").is_some();
    let output = match run {
        Ok(output) if String::from_utf8_lossy(&output.stderr).contains("No module named") => None,
        Ok(output) => Some(output),
        Err(_) => None,
    };
    let Some(output) = output else {
        assert!(
            !required,
            "SETTINGS_API_REQUIRE_OPENAPI_VALIDATOR is set but openapi-spec-validator is not installed"
        );
        eprintln!("skipped: `python3 -m pip install openapi-spec-validator` to run this test");
        return;
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.contains("OK"), "{said}");
}

/// (method, path, the document, its request schema, [(status, its response schema)])
type Operation<'a> = (
    &'a str,
    &'a str,
    &'a Value,
    Option<String>,
    Vec<(&'a str, String)>,
);

#[tokio::test]
async fn every_operation_has_the_request_and_response_schemas_of_its_document() {
    let ours = served_document().await;
    let per_key = seed("000.json");
    let partial = seed("001.json");
    let preferences = seed("002.json");
    let typed = seed("003.json");
    let sparse = seed("004.json");
    let prefs = |name: &str| format!("/components/schemas/{name}");
    let operations: Vec<Operation> = vec![
        (
            "put",
            "/api/v1/users/me/settings/{key}",
            &per_key,
            Some("/request".into()),
            ["200", "201", "400", "401"]
                .iter()
                .map(|s| (*s, format!("/responses/{s}")))
                .collect(),
        ),
        (
            "get",
            "/api/v1/users/me/settings/{key}",
            &per_key,
            None,
            vec![
                ("200", "/responses/200".into()),
                ("400", "/responses/400".into()),
                ("401", "/responses/401".into()),
            ],
        ),
        (
            "put",
            "/settings/user",
            &partial,
            Some("/request".into()),
            ["200", "400", "500"]
                .iter()
                .map(|s| (*s, format!("/responses/{s}")))
                .collect(),
        ),
        (
            "get",
            "/settings/user",
            &partial,
            None,
            vec![("500", "/responses/500".into())],
        ),
        (
            "put",
            "/api/v1/users/preferences/update",
            &preferences,
            Some(prefs("UserPreferenceUpdate")),
            vec![("200", prefs("UserResponse")), ("default", prefs("Error"))],
        ),
        (
            "get",
            "/api/v1/users/preferences",
            &preferences,
            None,
            vec![("200", prefs("UserResponse")), ("default", prefs("Error"))],
        ),
        (
            "patch",
            "/api/v1/user-settings",
            &typed,
            Some("/request".into()),
            [
                ("200", "/settings"),
                ("400", "/error"),
                ("401", "/error"),
                ("403", "/error"),
                ("404", "/error"),
                ("409", "/error"),
            ]
            .iter()
            .map(|(s, p)| (*s, (*p).to_owned()))
            .collect(),
        ),
        (
            "get",
            "/api/v1/user-settings",
            &typed,
            None,
            vec![
                ("200", "/settings".into()),
                ("401", "/error".into()),
                ("403", "/error".into()),
            ],
        ),
        (
            "patch",
            "/api/v1/users/settings",
            &sparse,
            Some("/request".into()),
            vec![
                ("200", "/response".into()),
                ("400", "/error".into()),
                ("401", "/error".into()),
            ],
        ),
        (
            "get",
            "/api/v1/users/settings",
            &sparse,
            None,
            vec![("200", "/response".into()), ("401", "/error".into())],
        ),
    ];
    let mut problems = Vec::new();
    for (method, path, document, request, responses) in &operations {
        let operation = &ours["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is missing");
        if let Some(pointer) = request {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            compare(
                schema,
                &ours,
                document.pointer(pointer).unwrap(),
                document,
                &format!("{method} {path} request"),
                &mut problems,
            );
        }
        for (status, pointer) in responses {
            let schema = &operation["responses"][status]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{method} {path} answers {status}");
            compare(
                schema,
                &ours,
                document.pointer(pointer).unwrap(),
                document,
                &format!("{method} {path} {status}"),
                &mut problems,
            );
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
