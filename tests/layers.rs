//! The gateway's layers, read off its source: every module under `src/gateway/` names only
//! modules of its own floor or below (ARCHITECTURE.md, "Layers"). A module names another by a
//! `crate::gateway::…` path (the only form the gateway's files use across folders); `super::`
//! stays inside a module and its own children. Test code is left out. Together with
//! the development hook's module-cycle check (no cycles), this keeps the folders true
//! to the layering the documents claim.

use std::path::{Path, PathBuf};

/// The floors, from the bottom: a module may name modules of its floor or a lower one.
const FLOORS: [(&str, u8); 15] = [
    ("config", 0),
    ("access", 0),
    ("credential", 0),
    ("error", 0),
    ("metrics", 0),
    ("admission", 0),
    ("link", 1),
    ("clients", 2),
    ("tables", 3),
    ("shared", 4),
    ("views", 5),
    ("edges", 5),
    ("ops", 5),
    ("authz", 1),
    ("front", 6),
];

/// The floor of the module at `src/gateway/<first>…` (`mod.rs` itself is the top).
fn floor(first: &str) -> u8 {
    FLOORS.iter().find(|(name, _)| *name == first).map_or(7, |(_, f)| *f)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its `#[cfg(test)] mod tests { … }` and comments.
fn without_tests(src: &str) -> String {
    let code = match src.find("#[cfg(test)]\nmod ") {
        Some(i) => &src[..i],
        None => src,
    };
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

#[test]
fn gateway_modules_name_only_their_floor_and_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 30, "the gateway's sources: {files:?}");
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        if rel.ends_with("tests.rs") {
            continue;
        }
        let first = rel.split(['/', '.']).next().unwrap().to_string();
        let own = if rel == "mod.rs" { 7 } else { floor(&first) };
        let code = without_tests(&std::fs::read_to_string(file).unwrap());
        for (i, _) in code.match_indices("crate::gateway::") {
            let rest = &code[i + "crate::gateway::".len()..];
            // `crate::gateway::{a, b::c}` names each of the group's first segments.
            let names: Vec<String> = match rest.strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(0)]
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or("").to_string())
                    .collect(),
                None => vec![rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()],
            };
            for named in names.into_iter().filter(|n| !n.is_empty() && *n != first) {
                if floor(&named) > own {
                    upward.push(format!("{rel} (floor {own}) names {named} (floor {})", floor(&named)));
                }
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "modules naming a higher floor:\n{}", upward.join("\n"));
}
