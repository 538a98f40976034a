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
    let reg = register::Config::new(stdio, format!("ws://{addr}/mcp/register"), NAME.into());
    let base = format!("http://{addr}");
    thread::spawn("demo-banner", move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw.registry.server(NAME).is_some_and(|s| s.is_ready()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("{}", banner(&base, &gw.registry.catalog(|c| c.exposed_for(NAME))));
    })
    .map_err(|e| e.to_string())?;
    register::run(&reg)
}

fn banner(base: &str, tools: &[String]) -> String {
    format!(
        "\n\
         mcpport demo is running: a gateway with the built-in sample server registered as {NAME:?}.\n\
         \n  MCP endpoint:             {base}/mcp (Streamable HTTP)\
         \n  MCP endpoint (legacy SSE): {base}/sse\
         \n  edge registration:        {ws}/mcp/register\
         \n  health:                   {base}/health\
         \n  tools:                    list_servers, {tools}\n\
         \nTry it with the MCP Inspector's CLI (needs Node):\
         \n  npx @modelcontextprotocol/inspector --cli {base}/sse --transport sse --method tools/call --tool-name {NAME}_system_info\n\
         \nRegister another server from any machine that can reach this one:\
         \n  mcpport register --stdio \"mcpport sample-server\" --gateway-url {ws}/mcp/register --server-name pi\n\
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
}
