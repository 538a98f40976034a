//! `subscriptions/listen` of the stateless era (a child module of `modern.rs`): the POST held
//! open as an SSE stream of the `list_changed` and `resources/updated` notices it asked for,
//! agreed against what the view announces, each tagged with its `subscriptionId`, the stream
//! being a session of the registry's for as long as the client keeps it open.

use std::time::{Duration, Instant};

use std::sync::Arc;

use serde_json::{json, Value};

use crate::gateway::clients::mailbox::{Empty, Mailbox};
use crate::gateway::clients::reply::Reply;
use crate::gateway::clients::session::Session;
use crate::gateway::error::Error;
use crate::gateway::front::exchange::{respond, stateless_session, Asker, Outcome, POST_BYTES};
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
    let Asker { scope, owner, peer, cors } = asker;
    let wanted = match Filter::read(params) {
        Ok(f) => f,
        Err(e) => return respond(e.to_http_for(&id)),
    };
    let capabilities = match mcp::description(gw, &scope, "subscriptions/listen") {
        Ok(d) => d["capabilities"].clone(),
        Err(e) => return respond(e.to_http_for(&id)),
    };
    let session = stateless_session(scope, owner, peer, &params["_meta"][META_CAPABILITIES]);
    if let Err(e) = gw.registry.admit(session.clone(), gw.cfg.max_sessions, gw.cfg.max_sessions_per_client) {
        log::warn!("{peer}: refusing subscriptions/listen: {e}");
        return respond(e.to_http_for(&id));
    }
    let guard = gw.registry.guard(session.clone());
    let Some(rx) = session.attach_stream(&gw.queue_budget) else {
        return respond(Error::Busy("the listen stream could not be attached".into()).to_http_for(&id));
    };
    let subscribed = subscribe_all(gw, &session, &wanted.uris);
    let agreed = wanted.agreed(&capabilities, subscribed);
    let _stream = Tally::new(&gw.streams);
    log::info!("{peer}: subscriptions/listen {} opened", session.id);
    let mut head = vec![("X-Accel-Buffering", "no".to_string())];
    head.extend_from_slice(cors);
    let why = match SseWriter::start(&mut conn.stream, &head) {
        Ok(mut sse) => write_listen(gw, &session, &mut sse, &rx, &agreed, &id),
        Err(_) => "client went away",
    };
    log::info!("{peer}: subscriptions/listen {} ended ({why})", session.id);
    drop(guard);
    Outcome::Close
}

/// Subscribes the listen session to each URI through the views (the link of the server that
/// holds it does the rest); returns the URIs a server accepted.
fn subscribe_all(gw: &Arc<Gateway>, session: &Arc<Session>, uris: &[String]) -> Vec<String> {
    let mailbox = Mailbox::new(MAX_LISTEN_URIS + 1, POST_BYTES, Some(gw.queue_budget.clone()));
    let reply = Reply::Post(mailbox.clone());
    for (i, uri) in uris.iter().enumerate() {
        let request = Message::Request {
            id: json!(i),
            method: "resources/subscribe".into(),
            params: Some(json!({"uri": uri})),
        };
        mcp::handle_message(gw, session, request, &reply);
    }
    let deadline = Instant::now() + gw.cfg.timeout_rpc;
    let mut accepted = Vec::new();
    for _ in 0..uris.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(answer) = mailbox.recv(left.max(Duration::from_millis(1))) else { break };
        if answer.get("result").is_some() {
            if let Some(uri) = answer["id"].as_u64().and_then(|i| uris.get(i as usize)) {
                accepted.push(uri.clone());
            }
        }
    }
    mailbox.close();
    accepted
}

/// The listen stream: the acknowledgement, then the notices that pass the filter, each tagged;
/// when the gateway ends the stream (shutdown), a final result says it ended gracefully.
fn write_listen(
    gw: &Gateway,
    session: &Session,
    sse: &mut SseWriter<&mut Box<dyn Transport>>,
    rx: &Mailbox,
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
        let written = match rx.recv(gw.cfg.keepalive) {
            Ok(mut msg) => {
                session.written(&msg);
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
