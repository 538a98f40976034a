//! mcpport: one binary, two roles. `gateway` serves MCP clients and accepts edge registrations;
//! `register` runs a stdio MCP server on an edge device and dials out to a gateway. This file
//! only parses the command line, starts the logger, dispatches, and maps the outcome to an exit
//! status (2 for a bad command line, as is customary).
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]

mod budget;
mod cli;
mod codec;
mod demo;
#[cfg(test)]
mod fuzz;
mod gateway;
mod http;
mod jose;
mod jsonrpc;
mod logger;
mod protocol;
mod register;
mod sample_server;
mod sys;
mod thread;
mod tls;
mod ws;

use std::process::ExitCode;

use cli::Command;

/// glibc malloc arenas (see `sys::limit_malloc_arenas`): one per CPU of a small router, not
/// eight; chosen in BENCHMARKS.md.
const MALLOC_ARENAS: i32 = 2;

fn main() -> ExitCode {
    sys::limit_malloc_arenas(MALLOC_ARENAS);
    let env_tokens = std::env::var("MCP_GATEWAY_AUTH_TOKENS").ok();
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let parsed = match cli::parse_from(args.clone(), env_tokens) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("mcpport: {msg}\n{}", cli::help_hint(&args));
            return ExitCode::from(2);
        }
    };
    if matches!(parsed.command, Command::Gateway(_)) {
        sys::drop_malloc_thread_caches();
    }
    logger::init(parsed.log_level, parsed.log_json);
    let outcome = match parsed.command {
        Command::Help(text) => {
            print!("{text}");
            Ok(0)
        }
        Command::Version => {
            println!("{}", cli::version_line());
            Ok(0)
        }
        Command::Gateway(cfg) => gateway::run(*cfg).map(|()| 0),
        Command::Register(cfg) => register::fleet::run(&cfg),
        Command::Demo { host, port } => demo::run(&host, port),
        Command::SampleServer(cfg) => sample_server::run(cfg).map(|()| 0),
        Command::OAuth { state_dir, revoke } => gateway::oauth_command(&state_dir, revoke.as_deref()),
    };
    match outcome {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(msg) => {
            log::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}
