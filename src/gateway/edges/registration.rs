//! An edge's registration, before its link runs: the `register` frame (the original's JSON-RPC
//! form, or its older `{"name": …}` form) read within a deadline and a size cap, the server name
//! and id checked, and a refusal told to the edge (an error frame, then close 1008, or 1009 for a
//! message too big).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message as WsMessage, WebSocket};

use crate::http::Transport;
use crate::protocol::valid_server_name;

/// How long an edge has to send its `register` frame after the upgrade.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the edge's first frame said.
pub(crate) struct Registration {
    pub name: String,
    pub id: String,
    /// Which edge registered it (`host#mark`, as mcpport's register says; absent from others).
    pub edge: Option<String>,
    /// How the edge reaches the server: `stdio`, `streamable-http` or `sse`.
    pub transport: Option<&'static str>,
}

/// Reads and checks the `register` frame (the original's JSON-RPC form, or its older
/// `{"name": …}` form): the whole message within `REGISTER_TIMEOUT` of the upgrade, however it
/// is trickled, and no bigger than `FIRST_MESSAGE` bytes (it is a name and an id); later
/// messages may be up to `max_message` bytes.
pub(crate) fn read_registration(
    ws: &mut WebSocket<Box<dyn Transport>>,
    max_message: usize,
) -> Result<Registration, Refused> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let first = FIRST_MESSAGE.min(max_message);
    ws.set_config(|c| {
        c.max_message_size = Some(first);
        c.max_frame_size = Some(first);
    });
    ws.get_ref().socket().set_nonblocking(true).map_err(|e| e.to_string())?;
    let text = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(
                format!("no complete registration frame within {} s", REGISTER_TIMEOUT.as_secs()).into()
            );
        }
        match ws.read() {
            Ok(WsMessage::Text(t)) => break t.as_str().to_owned(),
            Ok(WsMessage::Binary(b)) => break String::from_utf8_lossy(&b).into_owned(),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(ws.get_ref().socket());
                crate::sys::poll(&[(fd, false)], Some(left)).map_err(|e| e.to_string())?;
            }
            Err(tungstenite::Error::Capacity(_)) if first < max_message => {
                let why =
                    format!("registration frame too big: the register frame may be {first} bytes at most");
                return Err(Refused::too_big(why));
            }
            Err(tungstenite::Error::Capacity(e)) => {
                return Err(Refused::too_big(format!("message too big (see --max-ws-message-bytes): {e}")))
            }
            Err(e) => return Err(format!("no registration frame: {e}").into()),
        }
    };
    ws.get_ref().socket().set_nonblocking(false).map_err(|e| e.to_string())?;
    ws.set_config(|c| {
        c.max_message_size = Some(max_message);
        c.max_frame_size = Some(max_message);
    });
    let info: Value =
        serde_json::from_str(&text).map_err(|e| format!("the registration frame is not JSON: {e}"))?;
    let name = if info["method"] == "register" { &info["params"]["name"] } else { &info["name"] };
    let name = name.as_str().ok_or("the registration frame has no server name (params.name)")?;
    if !valid_server_name(name) {
        return Err(format!("invalid server name {:?}: use 1 to 64 of A-Z a-z 0-9 _ -", cut(name)).into());
    }
    let id = match &info["id"] {
        Value::String(s) if valid_server_id(s) => s.clone(),
        Value::String(s) if !s.is_empty() => {
            return Err(format!(
                "invalid server id {:?}: use 1 to {MAX_ID} printable ASCII characters",
                cut(s)
            )
            .into())
        }
        Value::Number(n) => n.to_string(),
        _ => crate::sys::random_uuid(),
    };
    let params = &info["params"];
    let edge = params["edge"].as_str().filter(|e| valid_server_id(e)).map(str::to_string);
    let transport = ["stdio", "streamable-http", "sse"].into_iter().find(|t| params["transport"] == *t);
    Ok(Registration { name: name.to_string(), id, edge, transport })
}

/// The longest first message (the `register` frame) accepted.
const FIRST_MESSAGE: usize = 16 * 1024;
/// The longest server id accepted.
const MAX_ID: usize = 128;

/// Server ids are identifiers (a UUID, usually), never secrets: short printable ASCII.
fn valid_server_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A peer's text, cut short for a message.
fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Why a registration was refused: what the edge is told, and the close code it gets (1008, or
/// 1009 for a message too big).
pub(crate) struct Refused {
    pub why: String,
    pub code: u16,
}

impl Refused {
    /// A refusal closed with 1008 (policy).
    pub(crate) fn policy(why: impl Into<String>) -> Refused {
        Refused { why: why.into(), code: 1008 }
    }

    fn too_big(why: String) -> Refused {
        Refused { why, code: 1009 }
    }
}

impl From<String> for Refused {
    fn from(why: String) -> Refused {
        Refused::policy(why)
    }
}

impl From<&str> for Refused {
    fn from(why: &str) -> Refused {
        Refused::policy(why)
    }
}

/// Reports a failed registration to the edge (an error frame, then its close code) and logs it.
pub(crate) fn refuse(ws: &mut WebSocket<Box<dyn Transport>>, remote: SocketAddr, refused: Refused) {
    let Refused { why, code } = refused;
    log::warn!("{remote}: registration refused: {why}");
    let _ = ws.get_ref().socket().set_write_timeout(Some(Duration::from_secs(2)));
    let _ = ws.send(WsMessage::text(json!({"status": "error", "message": why}).to_string()));
    let frame =
        tungstenite::protocol::CloseFrame { code: code.into(), reason: "registration refused".into() };
    let _ = ws.close(Some(frame));
    let _ = ws.flush();
}

pub(crate) fn status_frame(status: &str, id: &str, message: &str) -> Value {
    json!({"status": status, "id": id, "message": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_follow_the_pattern() {
        for ok in ["pi", "my-router_2", &"a".repeat(64)] {
            assert!(valid_server_name(ok), "{ok}");
        }
        for bad in ["", "has space", "dot.ted", "ü", &"a".repeat(65)] {
            assert!(!valid_server_name(bad), "{bad}");
        }
    }
}
