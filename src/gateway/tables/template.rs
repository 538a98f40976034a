//! RFC 6570 URI templates as resource servers list them, matched against URIs without
//! backtracking: the time is linear in the URI (times the template's parts), on URIs of at most
//! `MAX_URI` bytes and templates of at most `MAX_TEMPLATE_PARTS` expressions, whatever a server
//! or a client sends.

/// The longest URI the gateway routes (and a template it matches against).
pub(crate) const MAX_URI: usize = 8 * 1024;
/// Expressions in one template (more and the template is not routed).
const MAX_TEMPLATE_PARTS: usize = 32;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UriTemplate {
    parts: Vec<Part>,
    literal_len: usize,
}

/// A template, cut into literal text and `{…}` expressions.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// An expression; `slashes` when it may span `/` (`{+…}`, `{#…}`, `{/…}`).
    Expr {
        slashes: bool,
    },
}

impl UriTemplate {
    /// Parses a template; `None` for one that is malformed or has too many expressions.
    pub(crate) fn parse(text: &str) -> Option<UriTemplate> {
        let parts = parse_template(text)?;
        let literal_len = parts.iter().map(|p| if let Part::Literal(l) = p { l.len() } else { 0 }).sum();
        Some(UriTemplate { parts, literal_len })
    }

    /// How many literal characters it has: the more, the more specific.
    pub(crate) fn literal_len(&self) -> usize {
        self.literal_len
    }

    /// Whether `uri` fits the template (never for a URI over `MAX_URI` bytes).
    pub(crate) fn matches(&self, uri: &str) -> bool {
        uri.len() <= MAX_URI && parts_match(&self.parts, uri)
    }
}

/// Cuts an RFC 6570 template into literals and expressions; `None` for one that is malformed or
/// has too many expressions.
fn parse_template(text: &str) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_string()));
        }
        let close = rest[open..].find('}')? + open;
        let slashes = matches!(rest[open + 1..close].chars().next(), Some('+' | '#' | '/'));
        parts.push(Part::Expr { slashes });
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_string()));
    }
    let exprs = parts.iter().filter(|p| matches!(p, Part::Expr { .. })).count();
    (exprs <= MAX_TEMPLATE_PARTS).then_some(parts)
}

/// Whether `uri` fits an RFC 6570 template: literal parts must match exactly, and each `{…}`
/// expression matches one or more characters (`/` only for `{+…}`, `{#…}` and `{/…}`). `None`
/// for a malformed template.
#[cfg(test)]
fn template_matches(template: &str, uri: &str) -> bool {
    UriTemplate::parse(template).is_some_and(|t| t.matches(uri))
}

/// The match itself, without backtracking: the set of positions in the URI reachable after each
/// part, carried forward part by part (an expression extends every reachable position over a
/// run of the characters it may take, with a difference array), so the work is
/// O(URI length × parts) whatever the template.
fn parts_match(parts: &[Part], uri: &str) -> bool {
    let u = uri.as_bytes();
    let n = u.len();
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for part in parts {
        let mut next = vec![false; n + 1];
        match part {
            Part::Literal(lit) => {
                let lit = lit.as_bytes();
                for p in (0..=n).filter(|&p| reach[p]) {
                    if u[p..].starts_with(lit) {
                        next[p + lit.len()] = true;
                    }
                }
            }
            Part::Expr { slashes } => {
                // From each reachable p, positions p+1 ..= end of the run of allowed bytes from
                // p (never ending inside a UTF-8 character).
                let mut run_end = vec![0usize; n + 1];
                let mut end = n;
                for p in (0..=n).rev() {
                    if p < n && u[p] == b'/' && !slashes {
                        end = p;
                    }
                    run_end[p] = end;
                }
                let mut diff = vec![0i32; n + 2];
                for p in (0..n).filter(|&p| reach[p]) {
                    if run_end[p] > p {
                        diff[p + 1] += 1;
                        diff[run_end[p] + 1] -= 1;
                    }
                }
                let mut open = 0;
                for (q, slot) in next.iter_mut().enumerate() {
                    open += diff[q];
                    *slot = open > 0 && uri.is_char_boundary(q);
                }
            }
        }
        reach = next;
        if !reach.contains(&true) {
            return false;
        }
    }
    reach[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_like_rfc_6570() {
        assert!(template_matches("test://template/{id}/data", "test://template/42/data"));
        assert!(!template_matches("test://template/{id}/data", "test://template/4/2/data"));
        assert!(!template_matches("test://template/{id}/data", "test://template//data"));
        assert!(template_matches("file://{+path}", "file://a/b/c"));
        assert!(template_matches("x://{a}-{b}", "x://1-2"));
        assert!(template_matches("x://{a}{b}", "x://12"));
        assert!(!template_matches("x://{a}{b}", "x://1"));
        assert!(!template_matches("x://{a}", "y://1"));
        assert!(template_matches("é://{a}", "é://ü"));
        assert!(!template_matches("x://{a", "x://1"), "malformed");
    }

    #[test]
    fn template_matching_takes_linear_time_on_hostile_input() {
        // Once quadratic (8.8 s) and exponential (41 s); now a few milliseconds each.
        let long = format!("sample://echo/{}", "a".repeat(MAX_URI - 20));
        let adjacent = format!("x://{}", "{a}".repeat(10));
        let started = std::time::Instant::now();
        assert!(template_matches("sample://echo/{text}", &long));
        assert!(!template_matches(&adjacent, &format!("x://{}/", "b".repeat(37))));
        assert!(!template_matches(&format!("{}z", "{a}".repeat(32)), &"a".repeat(MAX_URI)));
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
