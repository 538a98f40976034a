//! Build facts that `mcpport --version` names beside the version: the git revision of the source
//! (`MCPPORT_REVISION` from the environment when set, as packagers building from an archive do;
//! else `git rev-parse`; else `unknown`) and the target triple.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MCPPORT_REVISION");
    let revision =
        std::env::var("MCPPORT_REVISION").ok().filter(|r| !r.is_empty()).unwrap_or_else(git_revision);
    println!("cargo:rustc-env=MCPPORT_REVISION={revision}");
    println!("cargo:rustc-env=MCPPORT_TARGET={}", std::env::var("TARGET").unwrap_or_default());
}

/// The short revision of HEAD, with `-dirty` when tracked files differ from it; `unknown`
/// outside a git work tree. Asks to run again when HEAD moves.
fn git_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) else { return "unknown".into() };
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
        println!("cargo:rerun-if-changed={dir}/index");
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}
