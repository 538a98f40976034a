//! The aggregated catalog (tools, prompts, resources, resource templates) and its naming and
//! routing rules, kept up to date one server at a time.
//!
//! A server's tool or prompt `t` is exposed as `{server}_{t}` (or, with `--aggregate-names bare`,
//! as `t`, falling back to `{server}_{t}` when an earlier server took `t`). Exposed names must match
//! `^[A-Za-z0-9_-]{1,64}$` (what LLM APIs accept), so a name that would not is made to fit
//! deterministically: other characters become `_`, and a name over 64 characters keeps its first
//! 55 and gets `_` plus 8 hex digits of a hash of (server, name). First come keeps its names: a
//! server whose name would collide with one already exposed (server `my` with tool `pi_echo`
//! against server `my_pi` with tool `echo`) gets the hash suffix, and a live server's names
//! never change because of a newcomer. Routing never splits names at `_`: a table maps each
//! exposed name back to (server, original).
//!
//! Resources keep their URIs. A URI goes to the first server that listed it (a later server's
//! copy is not listed, and is taken up if the first one leaves); a URI that no server lists is
//! matched against the templates, the most specific match winning (most literal characters; on
//! a tie, the first come), so a catch-all template never captures what a narrower one serves,
//! and no template captures a URI a server lists. A URI nobody lists or matches is not routed.
//! (Template matching itself is `template.rs`'s.)
//!
//! Adding, replacing or removing a server costs work in proportion to that server's own lists,
//! never to the whole catalog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::gateway::link::lists::{ListKind, Lists};
use crate::gateway::tables::template::{UriTemplate, MAX_URI};

/// The gateway's own tool, always listed first.
pub(crate) const LIST_SERVERS: &str = "list_servers";

const MAX_NAME: usize = 64;

/// What the aggregated view exposes, server by server in the order they came, with the tables
/// that route names and URIs back to them.
#[derive(Default)]
pub(crate) struct Catalog {
    /// Names as the servers gave them, where free (`--aggregate-names bare`).
    bare: bool,
    /// Servers by arrival (the registration's link serial). Boxed: the map's nodes stay small,
    /// and so do the frames of the link owners that insert into it.
    servers: BTreeMap<u64, Box<Entry>>,
    order: HashMap<String, u64>,
    tool_routes: HashMap<String, (String, String)>,
    prompt_routes: HashMap<String, (String, String)>,
    /// Listed URIs: the server that serves each, and later servers that listed it too.
    uri_routes: HashMap<String, UriOwner>,
    /// Templates by (server arrival, position).
    templates: BTreeMap<(u64, usize), Template>,
    /// Template texts exposed, to keep a second copy of one out.
    template_texts: HashMap<String, (u64, usize)>,
    counts: [usize; 4],
}

/// One server's share of the catalog.
#[derive(Default)]
struct Entry {
    name: String,
    lists: Arc<Lists>,
    /// Per list kind, the items exposed, as positions in `lists` (nothing is copied: a page is
    /// built from the server's own items), and their route keys, in step: a tool's or prompt's
    /// key is the name it is exposed under, a resource's its URI, a template's its text.
    exposed: [Vec<usize>; 4],
    keys: [Vec<String>; 4],
    /// URIs it lists that an earlier server serves (it waits to take them over).
    waits: Vec<String>,
}

/// A filter of list items, given each item's server and its name there.
pub(crate) type Keep<'a> = &'a dyn Fn(&str, &str) -> bool;

/// One page of an aggregated list.
pub(crate) struct Page {
    pub items: Vec<Value>,
    /// Where the next page starts, if anything is left.
    pub next: Option<usize>,
    /// The length of the whole list.
    pub total: usize,
    /// Items the filter kept out of this page.
    pub hidden: usize,
}

/// What a server listed that the catalog could not expose, told once per change (by the
/// caller, after the registry's lock is released) rather than once per item.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Ignored {
    /// Tools and prompts without a name.
    pub unnamed: usize,
    /// Tools and prompts whose names collide even after hashing.
    pub colliding: usize,
}

impl Entry {
    /// The item at `pos` of a list, as clients see it: a tool or prompt under its exposed `key`.
    fn shown(&self, kind: ListKind, pos: usize, key: &str) -> Value {
        let mut item = kind.items(&self.lists)[pos].value();
        if matches!(kind, ListKind::Tools | ListKind::Prompts) {
            item["name"] = Value::String(key.to_string());
        }
        item
    }
}

struct UriOwner {
    server: u64,
    /// Later servers that list the URI too, in arrival order, each with the URI's position in
    /// its list (so taking over costs no search of that list).
    waiting: Vec<(u64, usize)>,
}

struct Template {
    server: String,
    template: UriTemplate,
}

impl Catalog {
    /// An empty catalog; `bare`: expose names unprefixed where they are free.
    pub(crate) fn new(bare: bool) -> Catalog {
        Catalog { bare, ..Catalog::default() }
    }

    /// Adds a server that came in (`order` increases with arrival), or replaces what it lists.
    /// Returns the aggregated lists that changed, and what could not be exposed. Costs work in
    /// proportion to this server's lists, however big the catalog.
    pub(crate) fn put(&mut self, order: u64, name: &str, lists: Arc<Lists>) -> (Vec<ListKind>, Ignored) {
        // A refresh keeps what the server held: URIs it still lists stay its own (and its place
        // among the waiters of others'), and are not handed to another server and back.
        let listed: std::collections::HashSet<&str> =
            lists.resources.iter().filter_map(|r| r.key()).collect();
        // And its tools and prompts keep the names they had: a refresh never renames what a
        // live server still lists (with bare names, a name that another server's departure
        // freed is not taken over by a refresh either).
        let previous = self.names_of(name);
        let mut changed = self.remove_keeping(name, |uri| listed.contains(uri));
        self.order.insert(name.to_string(), order);
        let mut entry = Box::new(Entry { name: name.to_string(), lists: lists.clone(), ..Entry::default() });
        let mut ignored = Ignored::default();
        for kind in ListKind::ALL {
            if self.expose(order, &mut entry, kind, &previous, &mut ignored) && !changed.contains(&kind) {
                changed.push(kind);
            }
        }
        self.servers.insert(order, entry);
        (changed, ignored)
    }

    /// The names a server's tools and prompts are exposed under now, by original name.
    fn names_of(&self, name: &str) -> [HashMap<String, String>; 2] {
        let mut names = [HashMap::new(), HashMap::new()];
        let Some(entry) = self.order.get(name).and_then(|o| self.servers.get(o)) else { return names };
        let kinds = [(ListKind::Tools, &self.tool_routes), (ListKind::Prompts, &self.prompt_routes)];
        for (slot, (kind, routes)) in kinds.into_iter().enumerate() {
            for key in &entry.keys[index(kind)] {
                if let Some((_, original)) = routes.get(key) {
                    names[slot].insert(original.clone(), key.clone());
                }
            }
        }
        names
    }

    /// Replaces one list of a server. Returns the aggregated lists that changed, and what could
    /// not be exposed.
    pub(crate) fn put_list(
        &mut self,
        name: &str,
        kind: ListKind,
        lists: Arc<Lists>,
    ) -> (Vec<ListKind>, Ignored) {
        let Some(&order) = self.order.get(name) else { return (Vec::new(), Ignored::default()) };
        let (mut changed, ignored) = self.put(order, name, lists);
        // The server's other lists went out and came back as they were: only lists announced by
        // the same notification as this one can have changed.
        changed.retain(|k| k.changed_notification() == kind.changed_notification());
        (changed, ignored)
    }

    /// The URIs a server waits for.
    #[cfg(test)]
    fn entry_waits(&self, name: &str) -> Vec<String> {
        self.order.get(name).and_then(|o| self.servers.get(o)).map(|e| e.waits.clone()).unwrap_or_default()
    }

    /// The lists the catalog exposes of a server.
    #[cfg(test)]
    pub(crate) fn lists_of(&self, name: &str) -> Option<Arc<Lists>> {
        self.order.get(name).and_then(|o| self.servers.get(o)).map(|e| e.lists.clone())
    }

    /// Removes a server and everything it exposed. Returns the aggregated lists that changed.
    pub(crate) fn remove(&mut self, name: &str) -> Vec<ListKind> {
        self.remove_keeping(name, |_| false)
    }

    /// `remove`, except that the URIs `kept` says the server keeps (a refresh that lists them
    /// again) stay its own, or stay waited for in its place.
    fn remove_keeping(&mut self, name: &str, kept: impl Fn(&str) -> bool) -> Vec<ListKind> {
        let Some(order) = self.order.remove(name) else { return Vec::new() };
        let Some(entry) = self.servers.remove(&order) else { return Vec::new() };
        let mut changed = Vec::new();
        for kind in ListKind::ALL {
            let i = index(kind);
            if !entry.exposed[i].is_empty() {
                changed.push(kind);
            }
            self.counts[i] -= entry.exposed[i].len();
            for key in &entry.keys[i] {
                match kind {
                    ListKind::Tools => drop(self.tool_routes.remove(key)),
                    ListKind::Prompts => drop(self.prompt_routes.remove(key)),
                    ListKind::Resources if kept(key) => {}
                    ListKind::Resources => self.release_uri(key, order, &mut changed),
                    ListKind::Templates => self.release_template(key, order),
                }
            }
        }
        // URIs it only waited for (its own list of them: no scan of the whole catalog).
        for uri in entry.waits.iter().filter(|uri| !kept(uri)) {
            if let Some(owner) = self.uri_routes.get_mut(uri) {
                owner.waiting.retain(|(w, _)| *w != order);
            }
        }
        changed
    }

    /// Exposes one list of a new entry. Returns whether anything was exposed.
    #[inline(never)]
    fn expose(
        &mut self,
        order: u64,
        entry: &mut Entry,
        kind: ListKind,
        previous: &[HashMap<String, String>; 2],
        ignored: &mut Ignored,
    ) -> bool {
        let i = index(kind);
        let lists = entry.lists.clone();
        let had =
            |slot: usize, key: Option<&str>| key.and_then(|k| previous[slot].get(k)).map(String::as_str);
        for (pos, item) in kind.items(&lists).iter().enumerate() {
            let exposed = match kind {
                ListKind::Tools => {
                    let naming = Naming { bare: self.bare, had: had(0, item.key()) };
                    name_item(&mut self.tool_routes, &entry.name, item.key(), naming, ignored)
                }
                ListKind::Prompts => {
                    let naming = Naming { bare: self.bare, had: had(1, item.key()) };
                    name_item(&mut self.prompt_routes, &entry.name, item.key(), naming, ignored)
                }
                ListKind::Resources => self.claim_uri(order, pos, item.key(), &mut entry.waits),
                ListKind::Templates => self.claim_template(order, pos, &entry.name, item.key()),
            };
            if let Some(key) = exposed {
                entry.keys[i].push(key);
                entry.exposed[i].push(pos);
            }
        }
        self.counts[i] += entry.exposed[i].len();
        !entry.exposed[i].is_empty()
    }

    #[inline(never)]
    fn claim_uri(
        &mut self,
        order: u64,
        pos: usize,
        uri: Option<&str>,
        waits: &mut Vec<String>,
    ) -> Option<String> {
        let uri = uri.filter(|u| u.len() <= MAX_URI)?;
        match self.uri_routes.get_mut(uri) {
            // Its own already (a refresh that lists it again).
            Some(owner) if owner.server == order => Some(uri.to_string()),
            Some(owner) => {
                match owner.waiting.iter_mut().find(|(w, _)| *w == order) {
                    Some(waiter) => waiter.1 = pos,
                    None => owner.waiting.push((order, pos)),
                }
                waits.push(uri.to_string());
                None
            }
            None => {
                self.uri_routes.insert(uri.to_string(), UriOwner { server: order, waiting: Vec::new() });
                Some(uri.to_string())
            }
        }
    }

    /// A URI's server left: the next server that listed it takes it over.
    #[inline(never)]
    fn release_uri(&mut self, uri: &str, order: u64, changed: &mut Vec<ListKind>) {
        let Some(owner) = self.uri_routes.get_mut(uri) else { return };
        if owner.server != order {
            return;
        }
        let next = (!owner.waiting.is_empty()).then(|| owner.waiting.remove(0));
        let Some(next) = next else {
            self.uri_routes.remove(uri);
            return;
        };
        let (next, pos) = next;
        owner.server = next;
        if let Some(entry) = self.servers.get_mut(&next) {
            let i = index(ListKind::Resources);
            entry.keys[i].push(uri.to_string());
            entry.exposed[i].push(pos);
            self.counts[i] += 1;
            if !changed.contains(&ListKind::Resources) {
                changed.push(ListKind::Resources);
            }
        }
    }

    #[inline(never)]
    fn claim_template(&mut self, order: u64, pos: usize, server: &str, text: Option<&str>) -> Option<String> {
        let text = text.filter(|t| t.len() <= MAX_URI)?;
        if self.template_texts.contains_key(text) {
            return None;
        }
        let template = Template { server: server.to_string(), template: UriTemplate::parse(text)? };
        self.templates.insert((order, pos), template);
        self.template_texts.insert(text.to_string(), (order, pos));
        Some(text.to_string())
    }

    #[inline(never)]
    fn release_template(&mut self, text: &str, order: u64) {
        if let Some(key) = self.template_texts.get(text).copied().filter(|k| k.0 == order) {
            self.template_texts.remove(text);
            self.templates.remove(&key);
        }
    }

    /// The (server, original tool name) behind an exposed tool name (not for `list_servers`).
    pub(crate) fn route(&self, exposed: &str) -> Option<(&str, &str)> {
        self.tool_routes.get(exposed).map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// The (server, original prompt name) behind an exposed prompt name.
    pub(crate) fn route_prompt(&self, exposed: &str) -> Option<(&str, &str)> {
        self.prompt_routes.get(exposed).map(|(s, t)| (s.as_str(), t.as_str()))
    }

    /// The server that serves a resource URI: the one that lists it, else the one whose
    /// template matches it most specifically.
    pub(crate) fn route_uri(&self, uri: &str) -> Option<&str> {
        if uri.len() > MAX_URI {
            return None;
        }
        if let Some(owner) = self.uri_routes.get(uri) {
            return self.servers.get(&owner.server).map(|e| e.name.as_str());
        }
        let mut best: Option<&Template> = None;
        for t in self.templates.values() {
            if best.is_some_and(|b| b.template.literal_len() >= t.template.literal_len()) {
                continue; // it could not win: first come keeps ties
            }
            if t.template.matches(uri) {
                best = Some(t);
            }
        }
        best.map(|t| t.server.as_str())
    }

    /// The server that owns a resource template, by its exact text.
    pub(crate) fn route_template(&self, template: &str) -> Option<&str> {
        let key = self.template_texts.get(template)?;
        self.templates.get(key).map(|t| t.server.as_str())
    }

    /// One page of an aggregated list (`list_servers` first among the tools): from position
    /// `start` of the whole list, at most `n` items that `keep` keeps (all, without it), given
    /// each item's server and the name it has there (a tool's or prompt's name, a URI, a
    /// template). `keep` runs under the registry's lock: it must only decide.
    pub(crate) fn page(&self, kind: ListKind, start: usize, n: usize, keep: Option<Keep<'_>>) -> Page {
        let own = usize::from(kind == ListKind::Tools);
        let total = self.counts[index(kind)] + own;
        let mut page = Page { items: Vec::new(), next: None, total, hidden: 0 };
        if own == 1 && start == 0 {
            page.items.push(list_servers_tool());
        }
        let mut at = own;
        for entry in self.servers.values() {
            let (list, keys) = (&entry.exposed[index(kind)], &entry.keys[index(kind)]);
            if at + list.len() <= start {
                at += list.len();
                continue;
            }
            let items = kind.items(&entry.lists);
            for (i, (&pos, key)) in list.iter().zip(keys).enumerate().skip(start.saturating_sub(at)) {
                if page.items.len() >= n {
                    page.next = Some(at + i);
                    return page;
                }
                let name = items[pos].key().unwrap_or_default();
                if keep.is_none_or(|keep| keep(&entry.name, name)) {
                    page.items.push(entry.shown(kind, pos, key));
                } else {
                    page.hidden += 1;
                }
            }
            at += list.len();
        }
        page
    }

    /// The exposed names of one server's tools, in its list's order.
    pub(crate) fn exposed_for(&self, server: &str) -> Vec<String> {
        let entry = self.order.get(server).and_then(|o| self.servers.get(o));
        entry.map(|e| e.keys[index(ListKind::Tools)].clone()).unwrap_or_default()
    }
}

fn index(kind: ListKind) -> usize {
    ListKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Exposes a tool or prompt under its name, unless an earlier server holds that name (then
/// with the hash suffix), and records the route back to the original. What cannot be exposed is
/// counted in `ignored`, not logged: this runs under the registry's lock.
#[inline(never)]
fn name_item(
    routes: &mut HashMap<String, (String, String)>,
    server: &str,
    name: Option<&str>,
    naming: Naming<'_>,
    ignored: &mut Ignored,
) -> Option<String> {
    let Some(original) = name else {
        ignored.unnamed += 1;
        return None;
    };
    let taken = |exposed: &str| routes.contains_key(exposed) || exposed == LIST_SERVERS;
    if let Some(had) = naming.had.filter(|had| !taken(had)) {
        routes.insert(had.to_string(), (server.to_string(), original.to_string()));
        return Some(had.to_string());
    }
    let bare = naming.bare;
    let mut exposed = match bare {
        true => fit(original, server, original),
        false => exposed_name(server, original),
    };
    if bare && (exposed.is_empty() || taken(&exposed)) {
        exposed = exposed_name(server, original);
    }
    if taken(&exposed) {
        exposed = with_hash(&exposed, server, original);
    }
    if routes.contains_key(&exposed) {
        ignored.colliding += 1;
        return None;
    }
    routes.insert(exposed.clone(), (server.to_string(), original.to_string()));
    Some(exposed)
}

/// How a tool or prompt is named: bare or prefixed, and the name it had before a refresh.
#[derive(Clone, Copy)]
struct Naming<'a> {
    bare: bool,
    had: Option<&'a str>,
}

/// `{server}_{tool}`, made to fit `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn exposed_name(server: &str, tool: &str) -> String {
    fit(&format!("{server}_{tool}"), server, tool)
}

/// `raw` made to fit `^[A-Za-z0-9_-]{1,64}$` (the hash is of `server` and `tool`).
fn fit(raw: &str, server: &str, tool: &str) -> String {
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
    use crate::gateway::link::lists::Item;

    fn tool(name: &str) -> Value {
        json!({"name": name, "inputSchema": {"type": "object"}})
    }

    fn with_tools(tools: Vec<Value>) -> Arc<Lists> {
        Arc::new(Lists { tools: Item::all(ListKind::Tools, &tools), ..Lists::default() })
    }

    /// Lists with these resources only.
    fn listing(uris: &[&str]) -> Arc<Lists> {
        let items: Vec<Value> = uris.iter().map(|u| json!({"uri": u, "name": u})).collect();
        Arc::new(Lists { resources: Item::all(ListKind::Resources, &items), ..Lists::default() })
    }

    fn names(c: &Catalog) -> Vec<String> {
        c.page(ListKind::Tools, 0, 1000, None)
            .items
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn prefixes_and_routes_without_splitting() {
        let mut c = Catalog::default();
        c.put(1, "my_pi", with_tools(vec![tool("get_temp"), tool("echo")]));
        c.put(2, "router", with_tools(vec![tool("echo")]));
        assert_eq!(names(&c), ["list_servers", "my_pi_get_temp", "my_pi_echo", "router_echo"]);
        assert_eq!(c.route("my_pi_get_temp"), Some(("my_pi", "get_temp")));
        assert_eq!(c.route("router_echo"), Some(("router", "echo")));
        assert_eq!(c.route("pi_get_temp"), None);
        assert_eq!(c.route("list_servers"), None);
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
    fn first_come_keeps_its_names_and_the_newcomer_gets_the_suffix() {
        for (first, second) in
            [(("my_pi", "echo"), ("my", "pi_echo")), (("my", "pi_echo"), ("my_pi", "echo"))]
        {
            let mut c = Catalog::default();
            c.put(1, first.0, with_tools(vec![tool(first.1)]));
            c.put(2, second.0, with_tools(vec![tool(second.1)]));
            assert_eq!(c.route("my_pi_echo"), Some(first), "the first comer keeps the plain name");
            let hashed = c.exposed_for(second.0);
            assert!(hashed[0].starts_with("my_pi_echo_") && hashed[0].len() == 19, "{hashed:?}");
            assert_eq!(c.route(&hashed[0]), Some(second));
            // When the first comer leaves, the newcomer keeps its name: names never move under a client.
            c.remove(first.0);
            assert_eq!(c.route(&hashed[0]), Some(second));
            assert_eq!(c.route("my_pi_echo"), None);
        }
    }

    #[test]
    fn bare_names_are_their_own_until_taken() {
        let mut c = Catalog::new(true);
        c.put(1, "pi", with_tools(vec![tool("greet"), tool("list_servers"), tool("")]));
        c.put(2, "nas", with_tools(vec![tool("greet"), tool("backup")]));
        assert_eq!(c.route("greet"), Some(("pi", "greet")));
        assert_eq!(c.route("nas_greet"), Some(("nas", "greet")), "taken by an earlier server");
        assert_eq!(c.route("backup"), Some(("nas", "backup")));
        assert_eq!(c.route("pi_list_servers"), Some(("pi", "list_servers")), "the gateway's own");
        assert_eq!(c.route("pi_"), Some(("pi", "")), "an empty name is never exposed bare");
        // A refresh of the first keeps its names; the second keeps its own.
        c.put(1, "pi", with_tools(vec![tool("greet")]));
        assert_eq!(c.route("greet"), Some(("pi", "greet")));
        assert_eq!(c.route("nas_greet"), Some(("nas", "greet")));
        // The first leaves, the second refreshes: it keeps its name (a call by name never
        // silently reaches another server's tool), and the first comes back to its own.
        c.remove("pi");
        c.put(2, "nas", with_tools(vec![tool("greet"), tool("backup"), tool("new")]));
        assert_eq!(c.route("nas_greet"), Some(("nas", "greet")));
        assert_eq!(c.route("greet"), None);
        assert_eq!(c.route("new"), Some(("nas", "new")));
        c.put(3, "pi", with_tools(vec![tool("greet")]));
        assert_eq!(c.route("greet"), Some(("pi", "greet")));
    }

    #[test]
    fn keeps_every_other_field_untouched() {
        let t = json!({"name": "x", "title": "T", "inputSchema": {"type": "object"}, "outputSchema": {"type": "object"}, "_meta": {"k": 1}});
        let mut c = Catalog::default();
        c.put(1, "s", with_tools(vec![t.clone()]));
        let mut expected = t;
        expected["name"] = json!("s_x");
        assert_eq!(c.page(ListKind::Tools, 1, 10, None).items, [expected]);
    }

    #[test]
    fn uris_go_to_their_first_lister_and_templates_by_specificity() {
        let a = Lists {
            prompts: Item::all(ListKind::Prompts, &[json!({"name": "greet"})]),
            resources: Item::all(
                ListKind::Resources,
                &[json!({"uri": "file:///etc/hosts", "name": "hosts"})],
            ),
            templates: Item::all(
                ListKind::Templates,
                &[json!({"uriTemplate": "pi://sensor/{id}", "name": "sensor"})],
            ),
            ..Lists::default()
        };
        let b = Lists {
            resources: Item::all(
                ListKind::Resources,
                &[
                    json!({"uri": "file:///etc/hosts", "name": "theirs"}),
                    json!({"uri": "b://x", "name": "x"}),
                ],
            ),
            templates: Item::all(
                ListKind::Templates,
                &[
                    json!({"uriTemplate": "{+anything}", "name": "all"}),
                    json!({"uriTemplate": "pi://sensor/{id}"}),
                ],
            ),
            ..Lists::default()
        };
        let mut c = Catalog::default();
        c.put(1, "a", Arc::new(a));
        let (changed, _) = c.put(2, "b", Arc::new(b));
        assert_eq!(changed, [ListKind::Resources, ListKind::Templates]);
        assert_eq!(c.route_prompt("a_greet"), Some(("a", "greet")));
        assert_eq!(
            c.page(ListKind::Resources, 0, 10, None).total,
            2,
            "the second copy of a URI is not listed"
        );
        assert_eq!(c.page(ListKind::Templates, 0, 10, None).total, 2, "nor a second copy of a template");
        assert_eq!(c.route_uri("file:///etc/hosts"), Some("a"));
        assert_eq!(c.route_uri("b://x"), Some("b"));
        assert_eq!(c.route_uri("pi://sensor/7"), Some("a"), "the narrower template wins over a catch-all");
        assert_eq!(c.route_uri("file:///home/victim/.ssh/id_rsa"), Some("b"), "only the catch-all matches");
        assert_eq!(c.route_template("{+anything}"), Some("b"));
        // The first lister leaves: the other server's copy is served (and listed) now.
        let changed = c.remove("a");
        assert!(changed.contains(&ListKind::Resources));
        assert_eq!(c.route_uri("file:///etc/hosts"), Some("b"));
        assert_eq!(c.page(ListKind::Resources, 0, 10, None).total, 2);
        assert_eq!(c.route_uri(&format!("x://{}", "a".repeat(MAX_URI))), None, "too long to route");
    }

    #[test]
    fn what_cannot_be_exposed_is_counted_once_not_logged_per_item() {
        let mut c = Catalog::default();
        let nameless = || json!({"description": "no name", "inputSchema": {}});
        let (_, ignored) = c.put(1, "s", with_tools(vec![nameless(), tool("a"), nameless()]));
        assert_eq!(ignored, Ignored { unnamed: 2, colliding: 0 });
        assert_eq!(names(&c), ["list_servers", "s_a"]);
    }

    /// A server that only waited for a URI leaves without touching any other URI's record, and
    /// a URI taken over goes to the next lister still there.
    #[test]
    fn a_waiting_lister_leaves_cleanly() {
        let mut c = Catalog::default();
        c.put(1, "a", listing(&["x://1", "x://2"]));
        c.put(2, "b", listing(&["x://1"]));
        c.put(3, "c", listing(&["x://1"]));
        assert_eq!(c.entry_waits("b"), ["x://1"]);
        c.remove("b");
        c.remove("a");
        assert_eq!(c.route_uri("x://1"), Some("c"), "the next lister still there takes it over");
        assert_eq!(c.route_uri("x://2"), None);
    }

    /// A refresh keeps what a server held: the URIs it still lists stay its own, not handed to
    /// the next lister and back, and a waiter keeps its place; a takeover finds the URI's item
    /// by the position noted when the waiter listed it.
    #[test]
    fn a_refresh_keeps_uris_and_a_takeover_needs_no_search() {
        let mut c = Catalog::default();
        c.put(1, "a", listing(&["x://1", "x://2"]));
        c.put(2, "b", listing(&["x://0", "x://2", "x://1"]));
        c.put(3, "c", listing(&["x://1"]));
        let (changed, _) = c.put_list("a", ListKind::Resources, listing(&["x://2", "x://1"]));
        assert_eq!((c.route_uri("x://1"), c.route_uri("x://2")), (Some("a"), Some("a")), "{changed:?}");
        assert_eq!(c.uri_routes["x://1"].waiting, [(2, 2), (3, 0)], "b still first, c second");
        c.put_list("b", ListKind::Resources, listing(&["x://1", "x://2"]));
        assert_eq!(c.uri_routes["x://1"].waiting, [(2, 0), (3, 0)], "b kept its place, at its new position");
        c.remove("a");
        assert_eq!((c.route_uri("x://1"), c.route_uri("x://2")), (Some("b"), Some("b")));
        let shown = c.page(ListKind::Resources, 0, 10, None).items;
        let mut uris: Vec<&str> = shown.iter().filter_map(|r| r["uri"].as_str()).collect();
        uris.sort();
        assert_eq!(uris, ["x://1", "x://2"], "b's items, found at the positions noted");
    }

    #[test]
    fn pages_walk_the_servers_in_order() {
        let mut c = Catalog::default();
        for (order, name) in [(1, "a"), (2, "b"), (3, "c")] {
            c.put(order, name, with_tools((0..5).map(|i| tool(&format!("t{i}"))).collect()));
        }
        let page = c.page(ListKind::Tools, 4, 4, None);
        assert_eq!((page.total, page.next), (16, Some(8)));
        let got: Vec<&str> = page.items.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(got, ["a_t3", "a_t4", "b_t0", "b_t1"]);
        // Filtered, a page still holds up to n items, and its cursor is a place in the whole list.
        let only_odd = |_: &str, name: &str| name.ends_with(['1', '3']);
        let page = c.page(ListKind::Tools, 4, 3, Some(&only_odd));
        let got: Vec<&str> = page.items.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!((got, page.next, page.hidden), (vec!["a_t3", "b_t1", "b_t3"], Some(10), 3));
        let last = c.page(ListKind::Tools, 14, 3, Some(&only_odd));
        assert_eq!((last.items.len(), last.next, last.hidden), (1, None, 1));
        let mut lists = (*c.servers[&2].lists).clone();
        lists.tools = Item::all(ListKind::Tools, &[tool("only")]);
        c.put_list("b", ListKind::Tools, Arc::new(lists));
        assert_eq!(c.page(ListKind::Tools, 0, 100, None).total, 12);
        assert_eq!(c.route("b_only"), Some(("b", "only")));
        assert_eq!(c.route("b_t0"), None);
    }
}
