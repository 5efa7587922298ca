//! A small JSON-Schema check, enough to hold the API's answers to `openapi.json`.

use serde_json::Value;

use super::http::Response;

/// A minimal JSON Schema check, for the subset `openapi.json` uses: `type`,
/// `properties`, `required`, `additionalProperties: false`, `items`, `oneOf`, `$ref`
/// into the document, `format: date-time`. Returns what does not match.
fn schema_errors(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = resolve(doc, reference);
        return schema_errors(doc, target, value, at);
    }
    if let Some(choices) = schema["oneOf"].as_array() {
        let n_matching = choices
            .iter()
            .filter(|choice| schema_errors(doc, choice, value, at).is_empty())
            .count();
        return if n_matching == 1 {
            Vec::new()
        } else {
            vec![format!("{at}: matches {n_matching} of oneOf: {value}")]
        };
    }
    let mut errors = Vec::new();
    let kind = schema["type"].as_str().unwrap_or("any");
    let type_ok = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "null" => value.is_null(),
        _ => true,
    };
    if !type_ok {
        return vec![format!("{at}: not {kind}: {value}")];
    }
    if schema["format"] == "date-time" {
        let text = value.as_str().unwrap_or_default();
        if chrono::DateTime::parse_from_rfc3339(text).is_err() {
            errors.push(format!("{at}: not RFC 3339: {text:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                errors.push(format!("{at}: missing {name}"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|properties| properties.get(name)) {
                Some(field_schema) => errors.extend(schema_errors(
                    doc,
                    field_schema,
                    field,
                    &format!("{at}.{name}"),
                )),
                None if schema["additionalProperties"] == false => {
                    errors.push(format!("{at}: undocumented property {name}"))
                }
                None => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (idx, item) in items.iter().enumerate() {
            errors.extend(schema_errors(
                doc,
                &schema["items"],
                item,
                &format!("{at}[{idx}]"),
            ));
        }
    }
    errors
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let path = reference
        .strip_prefix("#/")
        .unwrap_or_else(|| panic!("not a local $ref: {reference}"));
    let target = path.split('/').fold(doc, |node, part| &node[part]);
    assert!(!target.is_null(), "$ref {reference} points nowhere");
    target
}

/// Checks a response against the description of `template`'s GET for its status.
pub fn check_against(doc: &Value, template: &str, res: &Response) -> Value {
    let mut response = &doc["paths"][template]["get"]["responses"][res.status.to_string()];
    assert!(
        !response.is_null(),
        "{template}: status {} is not described: {res:?}",
        res.status
    );
    if let Some(reference) = response["$ref"].as_str() {
        response = resolve(doc, reference);
    }
    assert_eq!(
        res.header("content-type"),
        Some("application/json"),
        "{res:?}"
    );
    let value: Value = serde_json::from_str(&res.body)
        .unwrap_or_else(|e| panic!("{template}: not JSON ({e}): {res:?}"));
    let schema = &response["content"]["application/json"]["schema"];
    let errors = schema_errors(doc, schema, &value, "$");
    assert!(errors.is_empty(), "{template} {}: {errors:#?}", res.status);
    value
}
