//! Tools and structured output in a request: `tools`, `tool_choice`, `parallel_tool_calls`,
//! `response_format` (OpenAI) and `structured_outputs` (vLLM), and the `tool_calls` of earlier
//! assistant messages. Every error names the field and what is wrong with it.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::request::{kind, Fields};

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// `[a-zA-Z0-9_-]{1,64}`, unique within the request.
    pub name: String,
    /// What it does (shown to the model).
    pub description: Option<String>,
    /// JSON schema of the arguments (when absent: an object with no properties, and no others).
    pub parameters: Value,
}

/// A call the model made (in the history of a request, or in a response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// Call id, which the `tool` message with the result refers to.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool (the default without tools).
    None,
    /// Text or calls, as the model chooses (the default with tools).
    Auto,
    /// At least one call.
    Required,
    /// Exactly this function.
    Function(String),
}

/// What the output must match (`response_format` or `structured_outputs`).
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    /// A JSON document valid against `schema`.
    JsonSchema {
        /// Schema name (`response_format.json_schema.name`).
        name: String,
        /// The schema.
        schema: Value,
    },
    /// A regular expression.
    Regex(String),
    /// One of these strings.
    Choice(Vec<String>),
    /// An llguidance Lark grammar.
    Grammar(String),
}

/// Whether `name` is a valid function name (OpenAI: `^[a-zA-Z0-9_-]{1,64}$`).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A required name field (`path` names it in errors) that passes [`valid_name`].
fn name_field(v: Option<&Value>, path: &str) -> Result<String, ApiError> {
    match v {
        Some(Value::String(n)) if valid_name(n) => Ok(n.clone()),
        Some(Value::String(n)) => Err(ApiError::invalid(
            path,
            format!("`{path}` must be 1 to 64 letters, digits, underscores or dashes, got {n:?}"),
        )),
        _ => Err(ApiError::invalid(
            path,
            format!("`{path}` is required (a string)"),
        )),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
pub(crate) fn tools(o: &Map<String, Value>) -> Result<(Vec<Tool>, ToolChoice, bool), ApiError> {
    let tools = match o.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, &format!("tools[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => {
            return Err(ApiError::invalid(
                "tools",
                format!("`tools` must be an array, got {}", kind(v)),
            ))
        }
    };
    let mut seen = HashSet::new();
    for (i, t) in tools.iter().enumerate() {
        if !seen.insert(t.name.as_str()) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                format!(
                    "the tool name {:?} appears twice in `tools`; names must be unique",
                    t.name
                ),
            ));
        }
    }
    let p = "tool_choice";
    let choice = match o.get(p) {
        None | Some(Value::Null) if tools.is_empty() => ToolChoice::None,
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    p,
                    format!("`{p}` must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {other:?}"),
                ))
            }
        },
        Some(Value::Object(c)) => {
            let name = c
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        p,
                        format!("`{p}` as an object must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"),
                    )
                })?;
            ToolChoice::Function(name.to_string())
        }
        Some(v) => {
            return Err(ApiError::invalid(
                p,
                format!("`{p}` must be a string or an object, got {}", kind(v)),
            ))
        }
    };
    match &choice {
        ToolChoice::Required if tools.is_empty() => {
            return Err(ApiError::invalid(
                p,
                "`tool_choice` \"required\" needs `tools`",
            ))
        }
        ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => {
            return Err(ApiError::invalid(
                p,
                format!("`tool_choice` names the function {name:?}, which is not in `tools`"),
            ))
        }
        _ => {}
    }
    let parallel = Fields(o).bool("parallel_tool_calls")?.unwrap_or(true);
    Ok((tools, choice, parallel))
}

fn tool(t: &Value, p: &str) -> Result<Tool, ApiError> {
    let Value::Object(t) = t else {
        return Err(ApiError::invalid(
            p,
            format!("`{p}` must be an object, got {}", kind(t)),
        ));
    };
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(ApiError::invalid(
                format!("{p}.type"),
                format!("`{p}.type` must be \"function\", got {other:?}"),
            ))
        }
    }
    let Some(Value::Object(f)) = t.get("function") else {
        return Err(ApiError::invalid(
            format!("{p}.function"),
            format!("`{p}.function` must be an object {{name, description, parameters}}"),
        ));
    };
    let name = name_field(f.get("name"), &format!("{p}.function.name"))?;
    let g = Fields(f);
    let description = g.string("description")?;
    let strict = g.bool("strict")?.unwrap_or(false);
    let mut parameters = match f.get("parameters") {
        // A function declared without parameters takes none.
        None | Some(Value::Null) => {
            json!({"type": "object", "properties": {}, "additionalProperties": false})
        }
        Some(Value::Object(s)) => Value::Object(s.clone()),
        Some(v) => {
            return Err(ApiError::invalid(
                format!("{p}.function.parameters"),
                format!(
                    "`{p}.function.parameters` must be a JSON schema object, got {}",
                    kind(v)
                ),
            ))
        }
    };
    if strict {
        close_objects(&mut parameters);
    }
    Ok(Tool {
        name,
        description,
        parameters,
    })
}

/// OpenAI's strict mode: an object takes only the properties it declares. Every object schema
/// in `schema` that does not say otherwise gets `"additionalProperties": false` (JSON schema's
/// own default allows any other key, and a small model will keep inventing some).
pub fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(o) => {
            let is_object = o.get("type").is_some_and(|t| {
                t == "object"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "object"))
            }) || o.contains_key("properties");
            if is_object && !o.contains_key("additionalProperties") {
                o.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, v) in o.iter_mut() {
                match k.as_str() {
                    // Maps from names to schemas.
                    "properties" | "$defs" | "definitions" | "patternProperties" => {
                        if let Value::Object(m) = v {
                            m.values_mut().for_each(close_objects);
                        }
                    }
                    // Schemas and lists of schemas.
                    "items"
                    | "additionalProperties"
                    | "anyOf"
                    | "oneOf"
                    | "allOf"
                    | "prefixItems"
                    | "not" => close_objects(v),
                    _ => {}
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// `response_format` or `structured_outputs` (at most one of them), and the field that set it
/// (`response_format` when neither did), for error messages.
pub(crate) fn output_format(
    o: &Map<String, Value>,
) -> Result<(Option<OutputFormat>, &'static str), ApiError> {
    let rf = response_format(o)?;
    let so = structured_outputs(o)?;
    match (rf, so) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "structured_outputs",
            "give either `response_format` or `structured_outputs`, not both",
        )),
        (None, Some(f)) => Ok((Some(f), "structured_outputs")),
        (f, None) => Ok((f, "response_format")),
    }
}

fn response_format(o: &Map<String, Value>) -> Result<Option<OutputFormat>, ApiError> {
    let p = "response_format";
    let rf = match o.get(p) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(rf)) => rf,
        Some(v) => {
            return Err(ApiError::invalid(
                p,
                format!("`{p}` must be an object, got {}", kind(v)),
            ))
        }
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        // llama.cpp's extension: `json_object` with a `schema`.
        Some("json_object") => match rf.get("schema") {
            Some(Value::Object(s)) => Ok(Some(OutputFormat::JsonSchema {
                name: "response".into(),
                schema: Value::Object(s.clone()),
            })),
            _ => Ok(Some(OutputFormat::JsonObject)),
        },
        Some("json_schema") => {
            let q = format!("{p}.json_schema");
            let Some(Value::Object(js)) = rf.get("json_schema") else {
                return Err(ApiError::invalid(
                    &q,
                    format!("`{q}` must be an object {{name, schema, strict}}"),
                ));
            };
            let name = name_field(js.get("name"), &format!("{q}.name"))?;
            let strict = Fields(js).bool("strict")?.unwrap_or(false);
            match js.get("schema") {
                Some(Value::Object(s)) => {
                    let mut schema = Value::Object(s.clone());
                    if strict {
                        close_objects(&mut schema);
                    }
                    Ok(Some(OutputFormat::JsonSchema { name, schema }))
                }
                Some(v) => Err(ApiError::invalid(
                    format!("{q}.schema"),
                    format!("`{q}.schema` must be a JSON schema object, got {}", kind(v)),
                )),
                None => Err(ApiError::invalid(
                    format!("{q}.schema"),
                    format!("`{q}.schema` is required"),
                )),
            }
        }
        other => Err(ApiError::invalid(
            format!("{p}.type"),
            format!(
                "`{p}.type` must be \"text\", \"json_object\" or \"json_schema\", got {other:?}"
            ),
        )),
    }
}

fn structured_outputs(o: &Map<String, Value>) -> Result<Option<OutputFormat>, ApiError> {
    let p = "structured_outputs";
    let so = match o.get(p) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(so)) => so,
        Some(v) => {
            return Err(ApiError::invalid(
                p,
                format!("`{p}` must be an object, got {}", kind(v)),
            ))
        }
    };
    let given: Vec<&String> = so.keys().filter(|k| !so[k.as_str()].is_null()).collect();
    let [key] = given.as_slice() else {
        return Err(ApiError::invalid(
            p,
            format!(
                "`{p}` must set exactly one of json, regex, choice, grammar, json_object; got {}",
                given.len()
            ),
        ));
    };
    let q = format!("{p}.{key}");
    let v = &so[key.as_str()];
    let bad = |what: &str| {
        Err(ApiError::invalid(
            &q,
            format!("`{q}` must be {what}, got {}", kind(v)),
        ))
    };
    match (key.as_str(), v) {
        ("json", Value::Object(s)) => Ok(Some(OutputFormat::JsonSchema {
            name: "structured_output".into(),
            schema: Value::Object(s.clone()),
        })),
        ("json", Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(schema @ Value::Object(_)) => Ok(Some(OutputFormat::JsonSchema {
                name: "structured_output".into(),
                schema,
            })),
            _ => Err(ApiError::invalid(
                &q,
                format!("`{q}` is not a JSON schema object"),
            )),
        },
        ("json", _) => bad("a JSON schema (object or string)"),
        ("regex", Value::String(s)) => Ok(Some(OutputFormat::Regex(s.clone()))),
        ("regex", _) => bad("a string"),
        ("grammar", Value::String(s)) => Ok(Some(OutputFormat::Grammar(s.clone()))),
        ("grammar", _) => bad("a string (an llguidance Lark grammar)"),
        ("choice", Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            Ok(Some(OutputFormat::Choice(
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect(),
            )))
        }
        ("choice", _) => bad("a non-empty array of strings"),
        ("json_object", Value::Bool(true)) => Ok(Some(OutputFormat::JsonObject)),
        ("json_object", _) => bad("true"),
        (other, _) => Err(ApiError::invalid(
            p,
            format!("`{p}.{other}` is not supported (json, regex, choice, grammar, json_object)"),
        )),
    }
}

/// `messages[i].tool_calls` of an assistant message.
pub(crate) fn tool_calls(v: Option<&Value>, p: &str) -> Result<Vec<ToolCall>, ApiError> {
    let a = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(ApiError::invalid(
                format!("{p}.tool_calls"),
                format!("`{p}.tool_calls` must be an array, got {}", kind(v)),
            ))
        }
    };
    a.iter()
        .enumerate()
        .map(|(j, c)| {
            let q = format!("{p}.tool_calls[{j}]");
            let id = c.get("id").and_then(Value::as_str);
            let f = c.get("function");
            let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(ApiError::invalid(
                    &q,
                    format!("`{q}` must have an `id` and a `function` with a `name`"),
                ));
            };
            // OpenAI sends the arguments as JSON text; some clients send the object itself.
            let arguments = match f.and_then(|f| f.get("arguments")) {
                None | Some(Value::Null) => "{}".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            Ok(ToolCall {
                id: id.to_string(),
                name: name.to_string(),
                arguments,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn tools_and_choices_parse_and_bad_ones_name_the_field() {
        let weather = json!({"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
        let (t, c, par) = tools(&obj(json!({"tools": [weather]}))).unwrap();
        assert_eq!((t.len(), c, par), (1, ToolChoice::Auto, true));
        let (_, c, par) = tools(&obj(
            json!({"tools": [weather], "parallel_tool_calls": false,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        ))
        .unwrap();
        assert_eq!(
            (c, par),
            (ToolChoice::Function("get_weather".into()), false)
        );
        let none = json!({"type": "function", "function": {"name": "ping"}});
        let (t, _, _) = tools(&obj(json!({"tools": [none]}))).unwrap();
        assert_eq!(
            t[0].parameters,
            json!({"type": "object", "properties": {}, "additionalProperties": false})
        );
        for (body, param) in [
            (
                json!({"tools": [weather, weather]}),
                "tools[1].function.name",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools[0].function.name",
            ),
            (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
            (
                json!({"tools": [weather], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
                "tool_choice",
            ),
            (
                json!({"tools": [weather], "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
                "tools[0].function.parameters",
            ),
        ] {
            let e = tools(&obj(body.clone())).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
        }
    }

    #[test]
    fn strict_schemas_close_every_object_they_do_not_open() {
        let mut s = json!({"type": "object", "properties": {
            "a": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "b": {"type": "array", "items": {"properties": {"y": {}}}},
            "c": {"anyOf": [{"type": "object"}, {"type": "string"}]},
            "d": {"type": "object", "additionalProperties": {"type": "integer"}}},
            "$defs": {"D": {"type": "object"}}});
        close_objects(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert_eq!(s["properties"]["b"]["items"]["additionalProperties"], false);
        assert_eq!(
            s["properties"]["c"]["anyOf"][0]["additionalProperties"],
            false
        );
        assert!(s["properties"]["c"]["anyOf"][1]
            .get("additionalProperties")
            .is_none());
        assert_eq!(
            s["properties"]["d"]["additionalProperties"],
            json!({"type": "integer"})
        );
        assert_eq!(s["$defs"]["D"]["additionalProperties"], false);
    }

    #[test]
    fn output_formats_parse_and_conflicts_are_refused() {
        let s = json!({"type": "object"});
        assert_eq!(
            output_format(&obj(json!({"response_format": {"type": "text"}}))).unwrap(),
            (None, "response_format")
        );
        assert_eq!(
            output_format(&obj(json!({"response_format": {"type": "json_object"}}))).unwrap(),
            (Some(OutputFormat::JsonObject), "response_format")
        );
        assert_eq!(
            output_format(&obj(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "r", "schema": s, "strict": true}}})))
            .unwrap(),
            (
                Some(OutputFormat::JsonSchema {
                    name: "r".into(),
                    schema: json!({"type": "object", "additionalProperties": false})
                }),
                "response_format"
            )
        );
        assert_eq!(
            output_format(&obj(json!({"structured_outputs": {"choice": ["a", "b"]}}))).unwrap(),
            (
                Some(OutputFormat::Choice(vec!["a".into(), "b".into()])),
                "structured_outputs"
            )
        );
        for (body, param) in [
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "r"}}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name", "schema": s}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"response_format": {"type": "yaml"}}),
                "response_format.type",
            ),
            (
                json!({"structured_outputs": {"regex": "a", "choice": ["a"]}}),
                "structured_outputs",
            ),
            (
                json!({"structured_outputs": {"choice": []}}),
                "structured_outputs.choice",
            ),
            (
                json!({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}),
                "structured_outputs",
            ),
        ] {
            let e = output_format(&obj(body.clone())).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
        }
    }
}
