//! Listening toward a 2026-07-28 edge, in the link: such a server sends no notification nobody
//! asked for, so the link holds one `subscriptions/listen` open at it, asking for the list
//! changes its capabilities announce and for updates of every URI a client of either era
//! subscribed to (a legacy session's `resources/subscribe`, a 2026-07-28 listen stream's
//! `resourceSubscriptions`: both reach the link as subscribes). When that set changes, the
//! listen is opened again with the new filter (the old one cancelled), changes within `GATHER`
//! coalesced into one. What the edge then sends is handled as a legacy edge's notifications:
//! list refreshes, and updates fanned out to the subscribers.
//!
//! Bounded: one listen per link; its URIs are the link's subscriptions (`max_subscriptions`);
//! one re-open per `GATHER` at most. A listen the edge ends (or refuses) is opened again at the
//! next change of the filter, not before.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{eras, jsonrpc, Era, Link, Phase, Slot, GATHER};
use crate::protocol::META_SUBSCRIPTION;

/// What a modern edge's capabilities say it can notify.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Announces {
    tools: bool,
    prompts: bool,
    resources: bool,
    pub(crate) subscribe: bool,
}

impl Announces {
    pub(crate) fn from_capabilities(caps: &Value) -> Announces {
        let changes = |kind: &str| caps[kind]["listChanged"].as_bool().unwrap_or(false);
        Announces {
            tools: changes("tools"),
            prompts: changes("prompts"),
            resources: changes("resources"),
            subscribe: caps["resources"]["subscribe"].as_bool().unwrap_or(false),
        }
    }
}

/// The listen the link holds open at a modern edge.
#[derive(Debug, Default)]
pub(crate) struct Listening {
    /// The id of the open `subscriptions/listen`, if one is.
    id: Option<u64>,
    /// The filter last asked for.
    filter: Value,
    /// A re-open is due at the next `Slot::Listen`.
    due: bool,
}

impl<D: Clone> Link<D> {
    /// The `notifications` filter the link wants: the announced list changes, and every URI
    /// a client subscribed to.
    fn wanted_filter(&self) -> Value {
        let a = self.announces;
        let uris =
            if a.subscribe { self.subscriptions.keys().map(String::as_str).collect() } else { Vec::new() };
        eras::listen_filter([a.tools, a.prompts, a.resources], uris)
    }

    /// The subscriptions changed: the listen is opened again soon (changes meanwhile join it).
    pub(super) fn relisten_soon(&mut self, now: Instant) {
        if self.era == Era::Modern && !self.listening.due {
            self.listening.due = true;
            self.deadlines.insert((now + GATHER, Slot::Listen));
        }
    }

    /// Opens the listen with the filter wanted now, unless the open one already has it.
    pub(super) fn listen(&mut self) {
        self.listening.due = false;
        if self.era != Era::Modern || self.phase != Phase::Ready {
            return;
        }
        let filter = self.wanted_filter();
        if self.listening.id.is_some() && filter == self.listening.filter {
            return;
        }
        if let Some(old) = self.listening.id.take() {
            self.out.push_back(super::Action::ToEdge(jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": old, "reason": "the gateway listens with another filter"}),
            )));
        }
        self.listening.filter = filter.clone();
        if filter.as_object().is_none_or(Map::is_empty) {
            return;
        }
        let id = self.mint();
        let mut params = eras::discover_params();
        params["notifications"] = filter;
        self.out.push_back(super::Action::ToEdge(jsonrpc::request(id, "subscriptions/listen", params)));
        self.listening.id = Some(id);
    }

    /// Whether `id` is the open listen's.
    pub(super) fn is_listen(&self, id: &Value) -> bool {
        id.as_u64().is_some_and(|id| self.listening.id == Some(id))
    }

    /// The edge answered the open listen: it has ended (its result) or was refused (its error).
    #[inline(never)]
    pub(super) fn listen_ended(&mut self, outcome: &Result<Value, Value>) {
        self.listening.id = None;
        match outcome {
            Ok(_) => log::info!("server {}: ended the gateway's subscriptions/listen", self.name),
            Err(e) => log::warn!("server {}: refused the gateway's subscriptions/listen: {e}", self.name),
        }
    }

    /// The listen's own acknowledgement is the link's; the `subscriptionId` a modern edge tags
    /// its notices with means nothing to the gateway's clients.
    pub(super) fn untag(&self, method: &str, params: &mut Value) -> bool {
        if self.era != Era::Modern {
            return false;
        }
        if method == "notifications/subscriptions/acknowledged" {
            log::debug!("server {}: listening with {}", self.name, params["notifications"]);
            return true;
        }
        if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
            meta.remove(META_SUBSCRIPTION);
            if meta.is_empty() {
                params.as_object_mut().map(|p| p.remove("_meta"));
            }
        }
        false
    }

    pub(super) fn stop_listening(&mut self) {
        self.listening = Listening::default();
    }

    /// The filter last asked of the edge (for tests).
    #[cfg(test)]
    pub(super) fn listening_filter(&self) -> &Value {
        &self.listening.filter
    }
}
