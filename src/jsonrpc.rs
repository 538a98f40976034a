//! The JSON-RPC 2.0 envelope, and nothing of MCP beyond it.
//!
//! Messages are classified by which keys they carry (`method`+`id` is a request, `method` alone a
//! notification, `result`/`error` a response); `params` and `result` stay opaque `serde_json::Value`s.
//! The gateway never deserializes tool schemas or tool results: it only reads the envelope and the
//! few fields it must rewrite. Error codes and the builders for error responses live here too.

use serde_json::{json, Map, Value};

/// Invalid JSON was received.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters (unknown tool, bad arguments, ...).
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// Internal error; also what the gateway answers when an upstream server fails or vanishes
/// (MCP reserves -32000..-32099 for the spec, so the gateway's own failures use -32603).
pub(crate) const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC message, classified by its keys. Ids are kept as raw JSON values (string or number).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    Request { id: Value, method: String, params: Option<Value> },
    Notification { method: String, params: Option<Value> },
    Response { id: Value, outcome: Result<Value, Value> },
}

/// Why a JSON value is not a JSON-RPC message; each maps to a JSON-RPC error code.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Invalid {
    /// Not JSON at all (-32700).
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 message (-32600); carries the id when one could be read.
    Envelope { id: Option<Value>, why: &'static str },
}

impl Invalid {
    /// The error response to send back for this invalid input.
    pub(crate) fn to_response(&self) -> Value {
        match self {
            Invalid::Parse(why) => error_response(&Value::Null, PARSE_ERROR, &format!("parse error: {why}")),
            Invalid::Envelope { id, why } => {
                error_response(id.as_ref().unwrap_or(&Value::Null), INVALID_REQUEST, why)
            }
        }
    }
}

/// Parses bytes into a JSON value, or says why they are not JSON.
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, Invalid> {
    serde_json::from_slice(bytes).map_err(|e| Invalid::Parse(e.to_string()))
}

/// Classifies one JSON value (not a batch) as a JSON-RPC message.
pub(crate) fn classify(value: Value) -> Result<Message, Invalid> {
    let Value::Object(mut obj) = value else {
        return Err(Invalid::Envelope { id: None, why: "a JSON-RPC message must be a JSON object" });
    };
    let id = obj.remove("id");
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Invalid::Envelope { id, why: "missing or wrong \"jsonrpc\": \"2.0\"" });
    }
    if let Some(id) = &id {
        // A response may carry a null id (its request's id could not be read); nothing else may.
        let null_response_id = id.is_null() && obj.contains_key("error") && !obj.contains_key("method");
        if !valid_id(id) && !null_response_id {
            return Err(Invalid::Envelope { id: None, why: "\"id\" must be a string or an integer" });
        }
    }
    match obj.remove("method") {
        Some(Value::String(method)) => classify_call(id, method, obj.remove("params")),
        Some(_) => Err(Invalid::Envelope { id, why: "\"method\" must be a string" }),
        None => classify_response(id, obj),
    }
}

fn classify_call(id: Option<Value>, method: String, params: Option<Value>) -> Result<Message, Invalid> {
    if let Some(p) = &params {
        if !p.is_object() && !p.is_array() {
            return Err(Invalid::Envelope { id, why: "\"params\" must be an object or an array" });
        }
    }
    Ok(match id {
        Some(id) => Message::Request { id, method, params },
        None => Message::Notification { method, params },
    })
}

fn classify_response(id: Option<Value>, mut obj: Map<String, Value>) -> Result<Message, Invalid> {
    let outcome = match (obj.remove("result"), obj.remove("error")) {
        (Some(result), None) => Ok(result),
        (None, Some(error)) if error.is_object() => Err(error),
        _ => {
            return Err(Invalid::Envelope { id, why: "a message needs \"method\", \"result\" or \"error\"" })
        }
    };
    // Only an error response may lack an id (when the request's id could not be read).
    match id {
        Some(id) if !id.is_null() => Ok(Message::Response { id, outcome }),
        _ if outcome.is_err() => Ok(Message::Response { id: Value::Null, outcome }),
        _ => Err(Invalid::Envelope { id: None, why: "a result needs the id of its request" }),
    }
}

/// MCP request ids are strings or integers, never null (and never fractions).
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// A request object.
pub(crate) fn request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// A notification object.
pub(crate) fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// A successful response.
pub(crate) fn result_response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error object (the value of a response's `error` member).
pub(crate) fn error_object(code: i64, message: &str) -> Value {
    json!({"code": code, "message": message})
}

/// An error response.
pub(crate) fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error_object(code, message)})
}

/// The size of a message as JSON text, counted without building the text.
pub(crate) fn weight(msg: &Value) -> usize {
    use std::io::Write;
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, msg);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Message, i64>) {
        let got = parse(text.as_bytes()).and_then(classify);
        match (got, expected) {
            (Ok(m), Ok(e)) => assert_eq!(m, e, "{text}"),
            (Err(i), Err(code)) => assert_eq!(i.to_response()["error"]["code"], code, "{text}"),
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn classifies_by_keys() {
        check(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            Ok(Message::Request { id: json!(1), method: "ping".into(), params: None }),
        );
        check(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#,
            Ok(Message::Request {
                id: json!("a"),
                method: "tools/call".into(),
                params: Some(json!({"name":"x"})),
            }),
        );
        check(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Ok(Message::Notification { method: "notifications/initialized".into(), params: None }),
        );
        check(
            r#"{"jsonrpc":"2.0","id":7,"result":{}}"#,
            Ok(Message::Response { id: json!(7), outcome: Ok(json!({})) }),
        );
        check(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"m"}}"#,
            Ok(Message::Response { id: Value::Null, outcome: Err(json!({"code":-1,"message":"m"})) }),
        );
    }

    #[test]
    fn rejects_what_is_not_json_rpc() {
        check("{not json", Err(PARSE_ERROR));
        check("", Err(PARSE_ERROR));
        check("[1]", Err(INVALID_REQUEST));
        check("42", Err(INVALID_REQUEST));
        check(r#"{"id":1,"method":"ping"}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","id":1,"method":5}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","id":1}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","result":{}}"#, Err(INVALID_REQUEST));
        check(r#"{"jsonrpc":"2.0","id":null,"result":{}}"#, Err(INVALID_REQUEST));
    }

    #[test]
    fn invalid_request_keeps_a_readable_id() {
        let err = parse(br#"{"jsonrpc":"1.0","id":9,"method":"ping"}"#).and_then(classify).unwrap_err();
        assert_eq!(err.to_response()["id"], json!(9));
    }

    #[test]
    fn weight_is_the_json_length() {
        let v = json!({"a": [1, "two"]});
        assert_eq!(weight(&v), v.to_string().len());
    }
}
