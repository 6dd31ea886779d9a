//! Whether answers are well-formed: tool calls (reassembled from the streamed
//! `delta.tool_calls` pieces; the name is one of the request's tools and the arguments parse and
//! validate against its parameter schema) and structured answers (`response_format`: the answer
//! parses as JSON and validates against the schema).

use serde::Serialize;
use serde_json::{json, Value};

use crate::client::RawEvent;

/// A tool call of one answer, as the client reassembled it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallRecord {
    /// Call id the server gave.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Argument text.
    pub arguments: String,
    /// Why it is not valid (`None`: valid).
    pub invalid: Option<String>,
}

/// The calls of a streamed answer: `delta.tool_calls` pieces joined by `index` (the first piece
/// of a call carries its id and name, later ones argument text).
pub fn assemble_tool_calls(events: &[RawEvent]) -> Vec<ToolCallRecord> {
    let mut calls: Vec<ToolCallRecord> = Vec::new();
    for e in events.iter().filter(|e| !e.tool_calls.is_empty()) {
        // An event's tool_calls arrays, concatenated (one per choice).
        let arrays = serde_json::Deserializer::from_str(&e.tool_calls).into_iter::<Value>();
        for d in arrays
            .flatten()
            .filter_map(|a| a.as_array().cloned())
            .flatten()
        {
            let i = d["index"].as_u64().unwrap_or(calls.len() as u64) as usize;
            if calls.len() <= i {
                calls.resize_with(i + 1, || ToolCallRecord {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                    invalid: None,
                });
            }
            let c = &mut calls[i];
            if let Some(id) = d["id"].as_str() {
                c.id = id.to_string();
            }
            if let Some(n) = d["function"]["name"].as_str() {
                c.name.push_str(n);
            }
            if let Some(a) = d["function"]["arguments"].as_str() {
                c.arguments.push_str(a);
            }
        }
    }
    calls
}

/// Check each call against `tools` (OpenAI's `tools` array): a known name, arguments that parse
/// and validate against that tool's parameters.
pub fn check_tool_calls(calls: &mut [ToolCallRecord], tools: &Value) {
    for c in calls {
        let tool = tools.as_array().and_then(|ts| {
            ts.iter()
                .find(|t| t["function"]["name"].as_str() == Some(c.name.as_str()))
        });
        c.invalid = match tool {
            None => Some(format!("no tool named {:?}", c.name)),
            Some(t) => match serde_json::from_str::<Value>(&c.arguments) {
                Err(e) => Some(format!("arguments are not JSON: {e}")),
                Ok(args) => schema_error(&t["function"]["parameters"], &args),
            },
        };
    }
}

/// Why `v` does not validate against `schema` (`None` when it does, or when there is no schema).
pub fn schema_error(schema: &Value, v: &Value) -> Option<String> {
    if schema.is_null() {
        return None;
    }
    match jsonschema::validator_for(schema) {
        Err(e) => Some(format!("the schema itself is invalid: {e}")),
        Ok(val) => val.iter_errors(v).next().map(|e| e.to_string()),
    }
}

/// The schema a `response_format` / `structured_outputs` asks for (`{"type": "object"}` for
/// `json_object`), `None` when the body asks for no JSON.
pub fn requested_schema(body: &serde_json::Map<String, Value>) -> Option<Value> {
    let rf = body.get("response_format");
    match rf.and_then(|r| r["type"].as_str()) {
        Some("json_schema") => rf.map(|r| r["json_schema"]["schema"].clone()),
        Some("json_object") => Some(json!({"type": "object"})),
        _ => match body.get("structured_outputs").and_then(|s| s.get("json")) {
            Some(Value::String(s)) => serde_json::from_str(s).ok(),
            Some(v) => Some(v.clone()),
            None => None,
        },
    }
}

/// Why an answer's text is not a valid structured answer (`None`: valid).
pub fn check_structured(text: &str, schema: &Value) -> Option<String> {
    match serde_json::from_str::<Value>(text) {
        Err(e) => Some(format!("not JSON: {e}")),
        Ok(v) => schema_error(schema, &v),
    }
}

/// `tool_calls` / `structured` report object: how many were checked and valid, the rate, and a
/// few reasons for invalid ones.
pub fn summary(checked: usize, reasons: &[String]) -> Value {
    let valid = checked - reasons.len();
    json!({
        "checked": checked,
        "valid": valid,
        "valid_rate": if checked > 0 { Some(valid as f64 / checked as f64) } else { None },
        "invalid_examples": reasons.iter().take(3).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tool_calls: &str) -> RawEvent {
        RawEvent {
            tool_calls: tool_calls.into(),
            ..RawEvent::default()
        }
    }

    #[test]
    fn streamed_pieces_reassemble_and_are_checked_against_the_tools() {
        let events = [
            ev(
                r#"[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather"}}]"#,
            ),
            ev(r#"[{"index":0,"function":{"arguments":"{\"city\": "}}]"#),
            ev(r#"[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]"#),
            ev(
                r#"[{"index":1,"id":"call_b","type":"function","function":{"name":"get_weather","arguments":"{\"town\": 1}"}}][{"index":2,"id":"call_c","function":{"name":"nope","arguments":"{}"}}]"#,
            ),
        ];
        let mut calls = assemble_tool_calls(&events);
        assert_eq!(calls.len(), 3);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].arguments.as_str()),
            ("call_a", "{\"city\": \"Oslo\"}")
        );
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"], "additionalProperties": false}}}]);
        check_tool_calls(&mut calls, &tools);
        assert_eq!(calls[0].invalid, None);
        assert!(
            calls[1].invalid.as_deref().unwrap().contains("city"),
            "{:?}",
            calls[1].invalid
        );
        assert!(calls[2]
            .invalid
            .as_deref()
            .unwrap()
            .contains("no tool named"));
        let s = summary(
            3,
            &[
                calls[1].invalid.clone().unwrap(),
                calls[2].invalid.clone().unwrap(),
            ],
        );
        assert_eq!(s["valid_rate"], 1.0 / 3.0);
    }

    #[test]
    fn structured_answers_are_checked_against_the_requested_schema() {
        let body = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}});
        let schema = requested_schema(body.as_object().unwrap()).unwrap();
        assert_eq!(check_structured("{\"n\": 2}", &schema), None);
        assert!(check_structured("{\"n\": \"2\"}", &schema).is_some());
        assert!(check_structured("{\"n\": 2", &schema)
            .unwrap()
            .starts_with("not JSON"));
        let obj = json!({"response_format": {"type": "json_object"}});
        assert!(
            check_structured("[1]", &requested_schema(obj.as_object().unwrap()).unwrap()).is_some()
        );
        assert!(requested_schema(
            json!({"response_format": {"type": "text"}})
                .as_object()
                .unwrap()
        )
        .is_none());
    }
}
