//! The aggregated catalog (tools, prompts, resources, resource templates) and its naming and
//! routing rules.
//!
//! A server's tool or prompt `t` is exposed as `{server}_{t}`. Exposed names must match
//! `^[A-Za-z0-9_-]{1,64}$` (what LLM APIs accept), so a name that would not is made to fit
//! deterministically: other characters become `_`, and a name over 64 characters keeps its first
//! 55 and gets `_` plus 8 hex digits of a hash of (server, name). Two names that would end up the
//! same (say server `a_b` tool `c` and server `a` tool `b_c`) are told apart the same way: the
//! first in (server name, list order) keeps the plain name, the later one gets the hash suffix.
//! Routing never splits names at `_`: a table maps each exposed name back to (server, original).
//!
//! Resources keep their URIs. Reads, subscriptions and completions are routed by exact URI
//! first, then by the first resource template that matches; both in server-name order, so when
//! two servers list the same URI, the one whose name sorts first serves it (the other's copy is
//! not listed).

use std::collections::HashMap;

use serde_json::{json, Value};

/// The gateway's own tool, always listed first.
pub(crate) const LIST_SERVERS: &str = "list_servers";

const MAX_NAME: usize = 64;

/// What one server lists, as the handshake or a refresh read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Lists {
    pub tools: Vec<Value>,
    pub prompts: Vec<Value>,
    pub resources: Vec<Value>,
    pub templates: Vec<Value>,
}

/// The four list methods: what they are called, where their items are, which capability has them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub(crate) const ALL: [ListKind; 4] =
        [ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::Templates];

    pub(crate) fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The key of the items in the list result.
    pub(crate) fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The server capability that says the list exists.
    pub(crate) fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        }
    }

    /// The `list_changed` notification that announces a change of this list.
    pub(crate) fn changed_notification(self) -> &'static str {
        match self {
            ListKind::Tools => "notifications/tools/list_changed",
            ListKind::Prompts => "notifications/prompts/list_changed",
            ListKind::Resources | ListKind::Templates => "notifications/resources/list_changed",
        }
    }

    pub(crate) fn items(self, lists: &Lists) -> &Vec<Value> {
        match self {
            ListKind::Tools => &lists.tools,
            ListKind::Prompts => &lists.prompts,
            ListKind::Resources => &lists.resources,
            ListKind::Templates => &lists.templates,
        }
    }

    pub(crate) fn items_mut(self, lists: &mut Lists) -> &mut Vec<Value> {
        match self {
            ListKind::Tools => &mut lists.tools,
            ListKind::Prompts => &mut lists.prompts,
            ListKind::Resources => &mut lists.resources,
            ListKind::Templates => &mut lists.templates,
        }
    }
}

/// The exposed lists and the tables that route names and URIs back to servers.
#[derive(Default)]
pub(crate) struct Catalog {
    /// The exposed lists, in a stable order: (`list_servers` first), then servers by name.
    pub lists: Lists,
    tool_routes: HashMap<String, (String, String)>,
    prompt_routes: HashMap<String, (String, String)>,
    uri_routes: HashMap<String, String>,
    template_routes: Vec<(String, String)>,
}

impl Catalog {
    /// Builds the catalog from (server name, lists) pairs given in server-name order.
    pub(crate) fn build<L: std::borrow::Borrow<Lists>>(servers: &[(String, L)]) -> Catalog {
        let mut c = Catalog::default();
        c.lists.tools.push(list_servers_tool());
        c.tool_routes.insert(LIST_SERVERS.into(), (String::new(), LIST_SERVERS.into()));
        for (server, lists) in servers {
            let lists: &Lists = lists.borrow();
            for tool in &lists.tools {
                add_named(&mut c.lists.tools, &mut c.tool_routes, server, tool);
            }
            for prompt in &lists.prompts {
                add_named(&mut c.lists.prompts, &mut c.prompt_routes, server, prompt);
            }
            for resource in &lists.resources {
                let Some(uri) = resource["uri"].as_str() else { continue };
                if !c.uri_routes.contains_key(uri) {
                    c.uri_routes.insert(uri.to_string(), server.clone());
                    c.lists.resources.push(resource.clone());
                }
            }
            for template in &lists.templates {
                let Some(t) = template["uriTemplate"].as_str() else { continue };
                c.template_routes.push((server.clone(), t.to_string()));
                c.lists.templates.push(template.clone());
            }
        }
        c
    }

    /// The (server, original tool name) behind an exposed tool name (not for `list_servers`).
    pub(crate) fn route(&self, exposed: &str) -> Option<(&str, &str)> {
        self.tool_routes.get(exposed).filter(|(s, _)| !s.is_empty()).map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// The (server, original prompt name) behind an exposed prompt name.
    pub(crate) fn route_prompt(&self, exposed: &str) -> Option<(&str, &str)> {
        self.prompt_routes.get(exposed).map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// The server that serves a resource URI: the one that lists it, else the first whose
    /// template matches it.
    pub(crate) fn route_uri(&self, uri: &str) -> Option<&str> {
        if let Some(server) = self.uri_routes.get(uri) {
            return Some(server);
        }
        self.template_routes.iter().find(|(_, t)| template_matches(t, uri)).map(|(s, _)| s.as_str())
    }

    /// The server that owns a resource template, by its exact text.
    pub(crate) fn route_template(&self, template: &str) -> Option<&str> {
        self.template_routes.iter().find(|(_, t)| t == template).map(|(s, _)| s.as_str())
    }

    /// The exposed names of one server's tools, in catalog order.
    pub(crate) fn exposed_for(&self, server: &str) -> Vec<String> {
        self.lists
            .tools
            .iter()
            .filter_map(|t| t["name"].as_str())
            .filter(|n| self.route(n).is_some_and(|(s, _)| s == server))
            .map(String::from)
            .collect()
    }
}

/// Adds a tool or prompt under its exposed name, keeping the route back to the original.
fn add_named(
    list: &mut Vec<Value>,
    routes: &mut HashMap<String, (String, String)>,
    server: &str,
    item: &Value,
) {
    let Some(original) = item.get("name").and_then(Value::as_str) else {
        log::warn!("server {server}: ignoring a list item without a name");
        return;
    };
    let mut exposed = exposed_name(server, original);
    if routes.contains_key(&exposed) {
        exposed = with_hash(&exposed, server, original);
    }
    if routes.contains_key(&exposed) {
        log::warn!("server {server}: {original:?} collides even after hashing; not exposed");
        return;
    }
    let mut item = item.clone();
    item["name"] = Value::String(exposed.clone());
    list.push(item);
    routes.insert(exposed, (server.to_string(), original.to_string()));
}

/// Whether `uri` fits an RFC 6570 template: literal parts must match exactly, and each `{…}`
/// expression matches one or more characters (`/` only for `{+…}`, `{#…}` and `{/…}`).
pub(crate) fn template_matches(template: &str, uri: &str) -> bool {
    fn go(t: &str, u: &str) -> bool {
        let Some(open) = t.find('{') else { return t == u };
        let (lit, rest) = t.split_at(open);
        let Some(u) = u.strip_prefix(lit) else { return false };
        let Some(close) = rest.find('}') else { return false };
        let (expr, after) = (&rest[1..close], &rest[close + 1..]);
        let spans_slashes = matches!(expr.chars().next(), Some('+' | '#' | '/'));
        (1..=u.len()).filter(|&n| u.is_char_boundary(n)).any(|n| {
            let (taken, left) = u.split_at(n);
            (spans_slashes || !taken.contains('/')) && go(after, left)
        })
    }
    go(template, uri)
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
        c.lists.tools.iter().map(|t| t["name"].as_str().unwrap()).collect()
    }

    fn with_tools(name: &str, tools: Vec<Value>) -> (String, Lists) {
        (name.to_string(), Lists { tools, ..Lists::default() })
    }

    #[test]
    fn prefixes_and_routes_without_splitting() {
        let c = Catalog::build(&[
            with_tools("my_pi", vec![tool("get_temp"), tool("echo")]),
            with_tools("router", vec![tool("echo")]),
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
        let c = Catalog::build(&[with_tools("a", vec![tool("b_c")]), with_tools("a_b", vec![tool("c")])]);
        let n = names(&c);
        assert_eq!(n[1], "a_b_c");
        assert!(n[2].starts_with("a_b_c_") && n[2].len() == 14, "{}", n[2]);
        assert_eq!(c.route(n[1]), Some(("a", "b_c")));
        assert_eq!(c.route(n[2]), Some(("a_b", "c")));
    }

    #[test]
    fn keeps_every_other_field_untouched() {
        let t = json!({"name": "x", "title": "T", "inputSchema": {"type": "object"}, "outputSchema": {"type": "object"}, "_meta": {"k": 1}});
        let c = Catalog::build(&[with_tools("s", vec![t.clone()])]);
        let mut expected = t;
        expected["name"] = json!("s_x");
        assert_eq!(c.lists.tools[1], expected);
    }

    #[test]
    fn prompts_are_prefixed_and_resources_routed_by_uri_then_template() {
        let a = Lists {
            prompts: vec![json!({"name": "greet"})],
            resources: vec![json!({"uri": "file:///etc/hosts", "name": "hosts"})],
            templates: vec![json!({"uriTemplate": "pi://sensor/{id}", "name": "sensor"})],
            ..Lists::default()
        };
        let b = Lists {
            resources: vec![
                json!({"uri": "file:///etc/hosts", "name": "theirs"}),
                json!({"uri": "b://x", "name": "x"}),
            ],
            templates: vec![json!({"uriTemplate": "pi://{+path}", "name": "any"})],
            ..Lists::default()
        };
        let c = Catalog::build(&[("a".into(), a), ("b".into(), b)]);
        assert_eq!(c.lists.prompts[0]["name"], "a_greet");
        assert_eq!(c.route_prompt("a_greet"), Some(("a", "greet")));
        assert_eq!(c.lists.resources.len(), 2, "the second copy of a URI is not listed");
        assert_eq!(c.route_uri("file:///etc/hosts"), Some("a"));
        assert_eq!(c.route_uri("b://x"), Some("b"));
        assert_eq!(c.route_uri("pi://sensor/7"), Some("a"));
        assert_eq!(c.route_uri("pi://sensor/7/raw"), Some("b"));
        assert_eq!(c.route_uri("nope://"), None);
        assert_eq!(c.route_template("pi://{+path}"), Some("b"));
        assert_eq!(c.route("list_servers"), None);
    }

    #[test]
    fn templates_match_like_rfc_6570() {
        assert!(template_matches("test://template/{id}/data", "test://template/42/data"));
        assert!(!template_matches("test://template/{id}/data", "test://template/4/2/data"));
        assert!(!template_matches("test://template/{id}/data", "test://template//data"));
        assert!(template_matches("file://{+path}", "file://a/b/c"));
        assert!(template_matches("x://{a}-{b}", "x://1-2"));
        assert!(!template_matches("x://{a}", "y://1"));
    }
}
