//! `mcpport demo`: a gateway and the built-in sample server registered with it through the real
//! WebSocket path, in one command, with the URLs and a way to try it printed once it is ready.

use std::time::{Duration, Instant};

use crate::{gateway, register, thread};

/// The name the sample server registers under.
const NAME: &str = "sample";

/// Runs the demo until Ctrl-C; returns the exit status.
pub(crate) fn run(host: &str, port: u16) -> Result<i32, String> {
    let cfg = gateway::Config { host: host.to_string(), port, ..gateway::Config::default() };
    let listener = gateway::bind(host, port)?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let gw = gateway::start(cfg, listener)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let stdio = format!("exec {} sample-server", shell_quote(&exe.to_string_lossy()));
    let reg = register::Config::new(
        register::Upstream::Shell(stdio),
        format!("ws://{addr}/mcp/register"),
        NAME.into(),
    );
    let base = format!("http://{addr}");
    let me = invocation(&exe);
    let reach = if addr.ip().is_loopback() {
        format!(
            "from this machine (the demo listens on {} only; --host 0.0.0.0 opens it to others)",
            addr.ip()
        )
    } else {
        "from any machine that can reach this one".to_string()
    };
    thread::spawn("demo-banner", move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw.registry.server(NAME).is_some_and(|s| s.is_ready()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("{}", banner(&base, &me, &reach, &gw.registry.catalog(|c| c.exposed_for(NAME))));
    })
    .map_err(|e| e.to_string())?;
    register::fleet::run(&reg)
}

/// How to call this program in a printed command so that it works as printed: `mcpport` when
/// that name on the PATH is this very program, else the (quoted) path of the running executable.
fn invocation(exe: &std::path::Path) -> String {
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("mcpport")).find(|p| p.is_file()));
    let same = |p: &std::path::Path| {
        std::fs::canonicalize(p).ok().is_some_and(|p| std::fs::canonicalize(exe).is_ok_and(|e| e == p))
    };
    match on_path {
        Some(p) if same(&p) => "mcpport".into(),
        _ => shell_quote(&exe.to_string_lossy()),
    }
}

fn banner(base: &str, me: &str, reach: &str, tools: &[String]) -> String {
    format!(
        "\n\
         mcpport demo is running: a gateway with the built-in sample server registered as {NAME:?}.\n\
         \n  MCP endpoint:             {base}/mcp (Streamable HTTP)\
         \n  MCP endpoint (legacy SSE): {base}/sse\
         \n  edge registration:        {ws}/mcp/register\
         \n  status page (browser):    {base}/\
         \n  health:                   {base}/health\
         \n  tools:                    list_servers, {tools}\n\
         \nTry it with the MCP Inspector's CLI (needs Node):\
         \n  npx -y @modelcontextprotocol/inspector --cli {base}/sse --transport sse --method tools/call --tool-name {NAME}_system_info\n\
         \nRegister another server {reach}:\
         \n  {me} register --stdio \"{me} sample-server\" --gateway-url {ws}/mcp/register --server-name pi\n\
         \nPress Ctrl-C to stop.\n",
        ws = base.replacen("http://", "ws://", 1),
        tools = tools.join(", "),
    )
}

/// Quotes a path for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    #[test]
    fn printed_commands_work_as_printed() {
        let exe = std::path::Path::new("/nowhere/on/path/mcpport");
        assert_eq!(invocation(exe), "'/nowhere/on/path/mcpport'");
        let text = banner("http://127.0.0.1:8765", &invocation(exe), "from this machine", &[]);
        assert!(text.contains(
            "'/nowhere/on/path/mcpport' register --stdio \"'/nowhere/on/path/mcpport' sample-server\""
        ));
        assert!(text.contains("npx -y @modelcontextprotocol/inspector"), "{text}");
        assert!(text.contains("Register another server from this machine"), "{text}");
        assert!(text.contains("status page (browser):    http://127.0.0.1:8765/"), "{text}");
    }
}
