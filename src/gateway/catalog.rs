//! The aggregated tool catalog and its naming rule.
//!
//! A server's tool `t` is exposed as `{server}_{t}`. Exposed names must match
//! `^[A-Za-z0-9_-]{1,64}$` (what LLM APIs accept), so a name that would not is made to fit
//! deterministically: other characters become `_`, and a name over 64 characters keeps its first
//! 55 and gets `_` plus 8 hex digits of a hash of (server, tool). Two tools that would end up with
//! the same exposed name (say server `a_b` tool `c` and server `a` tool `b_c`) are told apart the
//! same way: the first in (server name, tool order) keeps the plain name, the later one gets the
//! hash suffix. Routing never splits names at `_`: a table maps each exposed name back to its
//! (server, original name).

use std::collections::HashMap;

use serde_json::{json, Value};

/// The gateway's own tool, always listed first.
pub(crate) const LIST_SERVERS: &str = "list_servers";

const MAX_NAME: usize = 64;

/// The exposed tools and the table that routes their names.
pub(crate) struct Catalog {
    /// Exposed tool objects, in a stable order: `list_servers`, then servers by name.
    pub tools: Vec<Value>,
    routes: HashMap<String, (String, String)>,
}

impl Catalog {
    /// Builds the catalog from (server name, tools) pairs given in server-name order.
    pub(crate) fn build(servers: &[(String, Vec<Value>)]) -> Catalog {
        let mut catalog = Catalog { tools: vec![list_servers_tool()], routes: HashMap::new() };
        for (server, tools) in servers {
            for tool in tools {
                let Some(original) = tool.get("name").and_then(Value::as_str) else {
                    log::warn!("server {server}: ignoring a tool without a name");
                    continue;
                };
                catalog.add(server, original, tool);
            }
        }
        catalog
    }

    fn add(&mut self, server: &str, original: &str, tool: &Value) {
        let mut exposed = exposed_name(server, original);
        if exposed == LIST_SERVERS || self.routes.contains_key(&exposed) {
            exposed = with_hash(&exposed, server, original);
        }
        if self.routes.contains_key(&exposed) {
            log::warn!("server {server}: tool {original:?} collides even after hashing; not exposed");
            return;
        }
        let mut tool = tool.clone();
        tool["name"] = Value::String(exposed.clone());
        self.tools.push(tool);
        self.routes.insert(exposed, (server.to_string(), original.to_string()));
    }

    /// The (server, original tool name) behind an exposed name.
    pub(crate) fn route(&self, exposed: &str) -> Option<(&str, &str)> {
        self.routes.get(exposed).map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// The exposed names of one server's tools, in catalog order.
    pub(crate) fn exposed_for(&self, server: &str) -> Vec<String> {
        self.tools
            .iter()
            .filter_map(|t| t["name"].as_str())
            .filter(|n| self.route(n).is_some_and(|(s, _)| s == server))
            .map(String::from)
            .collect()
    }
}

/// `{server}_{tool}`, made to fit `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn exposed_name(server: &str, tool: &str) -> String {
    let raw = format!("{server}_{tool}");
    let clean: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if clean.len() <= MAX_NAME {
        clean
    } else {
        with_hash(&clean, server, tool)
    }
}

/// `name` cut to 55 characters, then `_` and 8 hex digits of a hash of (server, tool).
fn with_hash(name: &str, server: &str, tool: &str) -> String {
    let prefix: String = name.chars().take(MAX_NAME - 9).collect();
    format!("{prefix}_{:08x}", fnv1a(&[server.as_bytes(), b"\0", tool.as_bytes()]) as u32)
}

/// FNV-1a, 64 bits: tiny, and stable across runs and platforms (unlike std's hasher).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn list_servers_tool() -> Value {
    json!({
        "name": LIST_SERVERS,
        "title": "List registered MCP servers",
        "description": "List the MCP servers registered with this mcpport gateway, with their ids, \
                        addresses, connection times and the names under which their tools are exposed.",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": true, "openWorldHint": false}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Value {
        json!({"name": name, "inputSchema": {"type": "object"}})
    }

    fn names(c: &Catalog) -> Vec<&str> {
        c.tools.iter().map(|t| t["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn prefixes_and_routes_without_splitting() {
        let c = Catalog::build(&[
            ("my_pi".into(), vec![tool("get_temp"), tool("echo")]),
            ("router".into(), vec![tool("echo")]),
        ]);
        assert_eq!(names(&c), ["list_servers", "my_pi_get_temp", "my_pi_echo", "router_echo"]);
        assert_eq!(c.route("my_pi_get_temp"), Some(("my_pi", "get_temp")));
        assert_eq!(c.route("router_echo"), Some(("router", "echo")));
        assert_eq!(c.route("pi_get_temp"), None);
        assert_eq!(c.exposed_for("my_pi"), ["my_pi_get_temp", "my_pi_echo"]);
    }

    #[test]
    fn names_are_made_to_fit_deterministically() {
        assert_eq!(exposed_name("pi", "read.file/v2"), "pi_read_file_v2");
        let long = exposed_name("server", &"x".repeat(80));
        assert_eq!(long.len(), 64);
        assert_eq!(long, exposed_name("server", &"x".repeat(80)));
        assert_ne!(long, exposed_name("server", &"x".repeat(81)));
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }

    #[test]
    fn collisions_get_a_hash_suffix_and_still_route() {
        let c = Catalog::build(&[("a".into(), vec![tool("b_c")]), ("a_b".into(), vec![tool("c")])]);
        let n = names(&c);
        assert_eq!(n[1], "a_b_c");
        assert!(n[2].starts_with("a_b_c_") && n[2].len() == 14, "{}", n[2]);
        assert_eq!(c.route(n[1]), Some(("a", "b_c")));
        assert_eq!(c.route(n[2]), Some(("a_b", "c")));
    }

    #[test]
    fn keeps_every_other_field_untouched() {
        let t = json!({"name": "x", "title": "T", "inputSchema": {"type": "object"}, "outputSchema": {"type": "object"}, "_meta": {"k": 1}});
        let c = Catalog::build(&[("s".into(), vec![t.clone()])]);
        let mut expected = t;
        expected["name"] = json!("s_x");
        assert_eq!(c.tools[1], expected);
    }
}
