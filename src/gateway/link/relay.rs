//! The reverse of MRTR, in the link: a 2026-07-28 edge answers a legacy client's `tools/call`,
//! `prompts/get` or `resources/read` with `input_required`, and the legacy client, which takes
//! server requests and no `input_required`, is asked each question as a server request
//! (`sampling/createMessage`, `elicitation/create`, `roots/list`) under a gateway-minted id, on
//! its call's stream. When every answer is in, the request goes to the edge again under a new id
//! with `inputResponses` and the edge's `requestState`; its answer, or its next round of
//! questions, belongs to the same call.
//!
//! Bounded: `MAX_ROUNDS` rounds per call, `MAX_INPUTS` questions per round (`eras.rs` checks
//! the result first, and that the client declared each capability), the link's cap on server
//! requests awaiting clients, and `client_timeout` per question. A cancel, the session's end or
//! the link's end ends the call at once; its open questions are withdrawn from the client.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{describe_call, eras, Action, Asker, ClientCall, Link, Pending, ServerRequest, Slot};
use crate::gateway::error::Error;
use crate::jsonrpc::{self, INTERNAL_ERROR};

/// Rounds of questions one call may take.
pub(crate) const MAX_ROUNDS: u32 = 8;

/// What a legacy client's call at a 2026-07-28 edge keeps for its retries.
pub(crate) struct Relay {
    /// The request as the edge first got it (`_meta` and all).
    params: Value,
    /// Rounds of questions asked so far.
    rounds: u32,
    /// The edge's `requestState` of the round being answered.
    state: Option<String>,
    /// The client's answers of this round, by key, and how many questions are still open.
    answers: Map<String, Value>,
    open: usize,
    /// True while the client answers (nothing of this call is at the edge).
    pub(crate) asking: bool,
}

impl Relay {
    pub(crate) fn new(params: Value) -> Relay {
        Relay { params, rounds: 0, state: None, answers: Map::new(), open: 0, asking: false }
    }
}

impl<D: Clone> Link<D> {
    /// A 2026-07-28 edge needs input for `call`: each question goes to the call's client as a
    /// server request, and the call waits (under the id its retry will have) for the answers.
    #[inline(never)]
    pub(super) fn ask_client(&mut self, now: Instant, mut call: Box<ClientCall<D>>, result: Value) {
        let rounds = call.relay.as_ref().map_or(MAX_ROUNDS, |r| r.rounds);
        let questions = result["inputRequests"].as_object().map_or(0, Map::len);
        let checked = eras::check_input_required(&result, call.caps).and_then(|()| {
            if rounds >= MAX_ROUNDS {
                Err(format!("it asked more than {MAX_ROUNDS} rounds of questions"))
            } else if self.server_requests.len() + questions > self.limits.max_server_requests {
                Err("too many questions of this server await clients".into())
            } else {
                Ok(())
            }
        });
        let Some(caller) = call.caller.clone().filter(|_| checked.is_ok()) else {
            let why = checked.err().unwrap_or_else(|| "the call has no caller".into());
            let why = format!("{}: server {}: {why}", describe_call(&call.method, &Value::Null), self.name);
            log::warn!("session {}: {why}", call.session);
            call.relay = None;
            return self.complete(
                now,
                call,
                Err(Error::Unroutable { code: INTERNAL_ERROR, why }.to_object()),
            );
        };
        let id = self.mint();
        let Value::Object(mut result) = result else { return };
        let Some(Value::Object(asked)) = result.remove("inputRequests") else { return };
        if let Some(relay) = call.relay.as_mut() {
            relay.rounds += 1;
            relay.state = result.remove("requestState").and_then(|s| s.as_str().map(str::to_string));
            relay.answers.clear();
            relay.open = asked.len();
            relay.asking = true;
        }
        for (key, question) in asked {
            self.put_question(now, id, &call, caller.clone(), key, question);
        }
        // Bounded while asking by its questions' deadlines; a retry gets the call's own again.
        self.by_client.insert((call.session.clone(), call.client_id.to_string()), id);
        self.requests.insert(id, Pending::Client(call));
    }

    /// One question of call `id`'s round, as a server request to its client.
    fn put_question(
        &mut self,
        now: Instant,
        id: u64,
        call: &ClientCall<D>,
        caller: D,
        key: String,
        q: Value,
    ) {
        let n = self.next_n;
        self.next_n += 1;
        let method = q["method"].as_str().unwrap_or_default().to_string();
        let params = q.get("params").filter(|p| p.is_object()).cloned().unwrap_or_else(|| json!({}));
        let deadline = now + self.limits.client_timeout;
        self.deadlines.insert((deadline, Slot::ServerRequest(n)));
        let request = jsonrpc::request(self.client_facing_id(n), &method, params);
        let asker = Asker::Round { call: id, key };
        let session = call.session.clone();
        self.server_requests
            .insert(n, ServerRequest { asker, session, method, caller: caller.clone(), deadline });
        self.out.push_back(Action::Related { caller, message: request });
    }

    /// The client answered question `key` of call `id`; with the round's last answer, the
    /// request goes to the edge again.
    pub(super) fn round_answered(
        &mut self,
        now: Instant,
        id: u64,
        key: String,
        outcome: Result<Value, Value>,
    ) {
        let answer = match outcome {
            Ok(answer) => answer,
            Err(e) => {
                let why = format!("the client answered the server's question {key:?} with an error: {e}");
                return self.round_failed(now, id, &why);
            }
        };
        let Some(Pending::Client(call)) = self.requests.get_mut(&id) else { return };
        let Some(relay) = call.relay.as_mut().filter(|r| r.asking) else { return };
        relay.answers.insert(key, answer);
        relay.open = relay.open.saturating_sub(1);
        if relay.open == 0 {
            self.retry_at_edge(now, id);
        }
    }

    /// Sends call `id` to the edge again, with the round's answers and the edge's state.
    fn retry_at_edge(&mut self, now: Instant, id: u64) {
        let Some(Pending::Client(call)) = self.requests.get_mut(&id) else { return };
        let Some(relay) = call.relay.as_mut() else { return };
        relay.asking = false;
        let mut params = relay.params.clone();
        if let Some(token) = params.pointer_mut("/_meta/progressToken") {
            *token = json!(id);
        }
        eras::carry_input(&mut params, std::mem::take(&mut relay.answers), relay.state.take());
        call.deadline = now + call.timeout;
        self.deadlines.insert((call.deadline, Slot::Request(id)));
        let request = jsonrpc::request(id, &call.method, params);
        self.out.push_back(Action::ToEdge(request));
    }

    /// A question of call `id` failed (the client's error, or no answer in time): the call ends
    /// with an error saying why.
    pub(super) fn round_failed(&mut self, now: Instant, id: u64, why: &str) {
        let Some(Pending::Client(call)) = self.requests.get(&id) else { return };
        let why = format!("{}: server {}: {why}", describe_call(&call.method, &Value::Null), self.name);
        log::warn!("session {}: {why}", call.session);
        self.end_call(
            now,
            id,
            "its client could not answer",
            Some(Error::Unroutable { code: INTERNAL_ERROR, why }),
        );
    }

    /// Withdraws call `id`'s open questions from its client.
    pub(super) fn drop_questions(&mut self, id: u64, why: &str) {
        let open: Vec<u64> = self
            .server_requests
            .iter()
            .filter(|(_, r)| matches!(&r.asker, Asker::Round { call, .. } if *call == id))
            .map(|(n, _)| *n)
            .collect();
        for n in open {
            let Some(req) = self.server_requests.remove(&n) else { continue };
            self.deadlines.remove(&(req.deadline, Slot::ServerRequest(n)));
            let message = jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": self.client_facing_id(n), "reason": why}),
            );
            self.out.push_back(Action::Related { caller: req.caller, message });
        }
    }
}
