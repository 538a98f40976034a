//! What one server lists (`Lists`: its tools, prompts, resources and resource templates, as
//! the handshake or a refresh read them), each item kept as compact JSON text (`Item`), and the
//! four list methods (`ListKind`): what they are called, where their items are, which capability
//! has them. The catalog (`catalog.rs`) exposes them; the server's record (`server.rs`) keeps
//! them.

use std::sync::Arc;

use serde_json::Value;

/// What one server lists, as the handshake or a refresh read it. Each list is shared: the
/// server's record and the catalog hold the same one, and a refresh replaces only the list it
/// read (copying a pointer to each of the others).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Lists {
    pub tools: Arc<Vec<Item>>,
    pub prompts: Arc<Vec<Item>>,
    pub resources: Arc<Vec<Item>>,
    pub templates: Arc<Vec<Item>>,
}

/// One item of a server's list, kept as its compact JSON text, with the field that names it
/// (a tool's or prompt's `name`, a resource's `uri`, a template's `uriTemplate`). Parsed, a
/// small tool is a tree of maps of over half a kilobyte each (serde_json's map is a B-tree
/// whose every node has room for eleven entries): as text it takes a tenth of that, for as long
/// as the server stays registered. It is parsed again only to be shown in a list page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    key: Option<Box<str>>,
    json: Box<str>,
}

impl Item {
    pub(crate) fn new(kind: ListKind, item: &Value) -> Item {
        let key = item.get(kind.item_key()).and_then(Value::as_str).map(Box::from);
        Item { key, json: item.to_string().into_boxed_str() }
    }

    /// The field that names it, if it has one as a string.
    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The item as the server listed it.
    pub(crate) fn value(&self) -> Value {
        // It was written from a `Value`: it parses.
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// Items as a list's page brought them.
    pub(crate) fn all(kind: ListKind, items: &[Value]) -> Arc<Vec<Item>> {
        Arc::new(items.iter().map(|v| Item::new(kind, v)).collect())
    }
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

    /// The field of an item that names it.
    pub(crate) fn item_key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => "name",
            ListKind::Resources => "uri",
            ListKind::Templates => "uriTemplate",
        }
    }

    pub(crate) fn items(self, lists: &Lists) -> &Vec<Item> {
        match self {
            ListKind::Tools => &lists.tools,
            ListKind::Prompts => &lists.prompts,
            ListKind::Resources => &lists.resources,
            ListKind::Templates => &lists.templates,
        }
    }

    pub(crate) fn items_mut(self, lists: &mut Lists) -> &mut Arc<Vec<Item>> {
        match self {
            ListKind::Tools => &mut lists.tools,
            ListKind::Prompts => &mut lists.prompts,
            ListKind::Resources => &mut lists.resources,
            ListKind::Templates => &mut lists.templates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An item keeps what the server listed, and the field that names it for its kind.
    #[test]
    fn items_keep_the_server_s_json_and_their_key() {
        let echo = json!({"name": "echo", "description": "Echo", "inputSchema": {"type": "object",
            "properties": {"text": {"type": "string", "x-mcp-header": "Text"}}, "required": ["text"]}});
        let item = Item::new(ListKind::Tools, &echo);
        assert_eq!((item.key(), item.value()), (Some("echo"), echo));
        let resource = json!({"uri": "file:///etc/hosts", "name": "hosts"});
        assert_eq!(Item::new(ListKind::Resources, &resource).key(), Some("file:///etc/hosts"));
        let template = json!({"uriTemplate": "pi://sensor/{id}", "name": "sensor"});
        assert_eq!(Item::new(ListKind::Templates, &template).key(), Some("pi://sensor/{id}"));
        assert_eq!(Item::new(ListKind::Prompts, &json!({"name": 7})).key(), None, "a name must be a string");
    }
}
