//! `subscriptions/listen` of the stateless era (`modern.rs` hands it over): the POST held
//! open as an SSE stream of the `list_changed` and `resources/updated` notices it asked for,
//! agreed against what the view announces, each tagged with its `subscriptionId`, the stream
//! being a session of the registry's for as long as the client keeps it open.

use std::time::{Duration, Instant};

use std::sync::Arc;

use serde_json::{json, Value};

use crate::gateway::clients::mailbox::{Empty, Item};
use crate::gateway::error::Error;
use crate::gateway::front::exchange::{respond, Asker, Exchange, Opening, Outcome};
use crate::gateway::front::stream::Attached;
use crate::gateway::shared::{Gateway, Tally};
use crate::gateway::views::mcp;
use crate::http::sse::SseWriter;
use crate::http::{Conn, Transport};
use crate::jsonrpc::{self, Message};
use crate::protocol::META_CAPABILITIES;
use crate::protocol::META_SUBSCRIPTION;

/// URIs one `subscriptions/listen` may ask updates for.
pub(crate) const MAX_LISTEN_URIS: usize = 64;

/// The notices a `subscriptions/listen` asked for.
#[derive(Debug, Default, PartialEq)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

impl Filter {
    fn read(params: &Value) -> Result<Filter, Error> {
        let n = &params["notifications"];
        let flag = |key: &str| n[key].as_bool().unwrap_or(false);
        let uris: Vec<String> = match &n["resourceSubscriptions"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => return Err(Error::InvalidParams("resourceSubscriptions must be an array of URIs".into())),
        };
        if uris.len() > MAX_LISTEN_URIS {
            return Err(Error::InvalidParams(format!(
                "subscriptions/listen takes at most {MAX_LISTEN_URIS} resourceSubscriptions"
            )));
        }
        Ok(Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
        })
    }

    /// What the gateway agrees to: the list notices this view announces, and the URIs whose
    /// subscription a server accepted.
    fn agreed(&self, capabilities: &Value, subscribed: Vec<String>) -> Filter {
        let changes = |cap: &str| capabilities[cap]["listChanged"].as_bool().unwrap_or(false);
        Filter {
            tools: self.tools && changes("tools"),
            prompts: self.prompts && changes("prompts"),
            resources: self.resources && changes("resources"),
            uris: subscribed,
        }
    }

    fn to_json(&self) -> Value {
        let uris = self.uris.iter().map(String::as_str).collect();
        crate::gateway::link::eras::listen_filter([self.tools, self.prompts, self.resources], uris)
    }

    fn passes(&self, msg: &Value) -> bool {
        match msg["method"].as_str().unwrap_or_default() {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            "notifications/resources/updated" => {
                let uri = msg["params"]["uri"].as_str().unwrap_or_default();
                self.uris.iter().any(|sub| crate::gateway::link::uri_covers(sub, uri))
            }
            _ => false,
        }
    }
}

/// `subscriptions/listen`: a session of the registry's (so list changes and updates find it)
/// for as long as the client keeps this stream open.
pub(crate) fn listen(
    gw: &Arc<Gateway>,
    conn: &mut Conn<Box<dyn Transport>>,
    asker: Asker<'_>,
    id: Value,
    params: &Value,
) -> Outcome {
    let wanted = match Filter::read(params) {
        Ok(f) => f,
        Err(e) => return respond(e.to_http_for(&id)),
    };
    let opening = Opening::Listen { capabilities: params["_meta"][META_CAPABILITIES].clone() };
    let opened = Exchange::open(gw, &asker, opening).and_then(|exchange| {
        let described =
            mcp::description(gw, &asker.scope, "subscriptions/listen", &gw.access.grant(&asker.principal))?;
        let stream = exchange.attach(gw)?;
        Ok((exchange, described["capabilities"].clone(), stream))
    });
    // The exchange and the stream end with this function, however it ends.
    let (exchange, capabilities, stream) = match opened {
        Ok(opened) => opened,
        Err(e) => return respond(e.to_http_for(&id)),
    };
    let subscribed = subscribe_all(gw, &exchange, &wanted.uris);
    let agreed = wanted.agreed(&capabilities, subscribed);
    let _stream = Tally::new(&gw.streams);
    log::info!("{}: subscriptions/listen {} opened", asker.peer, exchange.session.id);
    let mut head = vec![("X-Accel-Buffering", "no".to_string())];
    head.extend_from_slice(asker.cors);
    let why = match SseWriter::start(&mut conn.stream, &head) {
        Ok(mut sse) => write_listen(gw, &stream, &mut sse, &agreed, &id),
        Err(_) => "client went away",
    };
    log::info!("{}: subscriptions/listen {} ended ({why})", asker.peer, exchange.session.id);
    Outcome::Close
}

/// Subscribes the listen session to each URI through the views (the link of the server that
/// holds it does the rest); returns the URIs a server accepted.
fn subscribe_all(gw: &Arc<Gateway>, exchange: &Exchange, uris: &[String]) -> Vec<String> {
    let requests = uris.iter().enumerate().map(|(i, uri)| Message::Request {
        id: json!(i),
        method: "resources/subscribe".into(),
        params: Some(json!({"uri": uri})),
    });
    let posted = exchange.post(gw, requests.collect());
    let deadline = Instant::now() + gw.cfg.timeout_rpc;
    let mut accepted = Vec::new();
    let mut left = posted.requests;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let item = match posted.mailbox.recv(wait) {
            Ok(Item::Related(_)) => continue,
            Ok(item) => item,
            Err(_) => break,
        };
        left -= 1;
        if let Item::Answer(answer) = item {
            if answer.get("result").is_some() {
                if let Some(uri) = answer["id"].as_u64().and_then(|i| uris.get(i as usize)) {
                    accepted.push(uri.clone());
                }
            }
        }
    }
    accepted
}

/// The listen stream: the acknowledgement, then the notices that pass the filter, each tagged;
/// when the gateway ends the stream (shutdown), a final result says it ended gracefully.
fn write_listen(
    gw: &Gateway,
    stream: &Attached,
    sse: &mut SseWriter<&mut Box<dyn Transport>>,
    agreed: &Filter,
    id: &Value,
) -> &'static str {
    let tag = json!({ META_SUBSCRIPTION: id });
    let ack = jsonrpc::notification(
        "notifications/subscriptions/acknowledged",
        json!({"_meta": tag, "notifications": agreed.to_json()}),
    );
    if sse.event(Some("message"), &ack.to_string()).is_err() {
        return "client went away";
    }
    loop {
        let written = match stream.rx.recv(gw.cfg.keepalive) {
            Ok(Item::Related(mut msg) | Item::Answer(mut msg)) => {
                stream.session.written(&stream.rx, &msg);
                if !agreed.passes(&msg) {
                    continue;
                }
                if let Some(params) = msg.get_mut("params").and_then(Value::as_object_mut) {
                    params.insert("_meta".into(), tag.clone());
                } else {
                    msg["params"] = json!({"_meta": tag});
                }
                sse.event(Some("message"), &msg.to_string())
            }
            Ok(Item::NoAnswer) => continue,
            Err(Empty::Timeout) => sse.comment("keep-alive"),
            Err(Empty::Closed) => {
                let done = json!({"resultType": "complete", "_meta": tag});
                let _ = sse.event(Some("message"), &jsonrpc::result_response(id, done).to_string());
                let _ = sse.finish();
                return "ended by the gateway";
            }
        };
        if written.is_err() {
            return "client went away";
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_filters_and_agrees_only_to_what_the_view_announces() {
        let f =
            Filter::read(&json!({"notifications": {"promptsListChanged": true, "toolsListChanged": true}}))
                .unwrap();
        let agreed = f.agreed(&json!({"tools": {"listChanged": true}, "prompts": {}}), vec![]);
        assert_eq!(agreed.to_json(), json!({"toolsListChanged": true}));
        assert!(agreed.passes(&jsonrpc::notification("notifications/tools/list_changed", json!({}))));
        assert!(!agreed.passes(&jsonrpc::notification("notifications/prompts/list_changed", json!({}))));
        let many: Vec<String> = (0..=MAX_LISTEN_URIS).map(|i| format!("x://{i}")).collect();
        assert!(Filter::read(&json!({"notifications": {"resourceSubscriptions": many}})).is_err());
    }
}
