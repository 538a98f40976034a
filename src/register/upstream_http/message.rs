//! What the adapter reads of a JSON-RPC message without building it: whether a text is one JSON
//! value exactly as serde_json reads a `Value` (`valid`: serde_json's own parser, building
//! nothing), the texts of an object's members or an array's elements (`members`, `fields`), and
//! the few parts the adapter looks at in a message from the upstream (`Rpc`).

use std::fmt;

use serde_core::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What the adapter looks at in a message from the upstream, found without building it.
pub(super) struct Rpc<'a> {
    /// `"jsonrpc": "2.0"`.
    pub(super) jsonrpc: bool,
    /// The id's JSON text.
    pub(super) id: Option<&'a [u8]>,
    /// Whether it has a method (a request or a notification, not an answer).
    pub(super) method: bool,
    /// The result's JSON text.
    pub(super) result: Option<&'a [u8]>,
}

impl<'a> Rpc<'a> {
    /// `None` when `text` is not JSON; what is not an object has none of the fields.
    pub(super) fn of(text: &'a [u8]) -> Option<Rpc<'a>> {
        valid(text).then(|| Rpc::within(text))?
    }

    /// `of` for a text already found `valid` (an element of a valid batch).
    pub(super) fn within(text: &'a [u8]) -> Option<Rpc<'a>> {
        let [jsonrpc, id, method, result] = fields(text, ["jsonrpc", "id", "method", "result"])?;
        Some(Rpc {
            jsonrpc: jsonrpc.is_some_and(|v| string_is(v, "2.0")),
            id,
            method: method.is_some(),
            result,
        })
    }
}

/// The JSON texts of the members named `names` of the object `text`, a `valid` text (the last
/// of each, as serde_json keeps it); all `None` when `text` is no object.
pub(super) fn fields<'a, const N: usize>(text: &'a [u8], names: [&str; N]) -> Option<[Option<&'a [u8]>; N]> {
    let mut found = [None; N];
    find_fields(text, &names, &mut found)?;
    Some(found)
}

/// `fields`, for any number of names.
fn find_fields<'a>(text: &'a [u8], names: &[&str], found: &mut [Option<&'a [u8]>]) -> Option<()> {
    members(text, &mut |key, value| {
        if let Some(at) = key.and_then(|k| names.iter().position(|name| string_is(k, name))) {
            found[at] = Some(value);
        }
    })
}

/// Whether the JSON text `text` is the string `want`.
fn string_is(text: &[u8], want: &str) -> bool {
    let plain = text.len() == want.len() + 2 && text.get(1..=want.len()) == Some(want.as_bytes());
    plain || (text.contains(&b'\\') && short_string(text, want.len()).as_deref() == Some(want))
}

/// The JSON text `text` decoded, when it is a string of at most `max` bytes (its text is then at
/// most six bytes a byte, escaped, and quoted: a longer one is not decoded).
pub(super) fn short_string(text: &[u8], max: usize) -> Option<String> {
    if text.len() > 6 * max + 2 {
        return None;
    }
    string(text).filter(|s| s.len() <= max)
}

/// The JSON text `text` decoded, when it is a string (anything else is not read).
pub(super) fn string(text: &[u8]) -> Option<String> {
    match text.first() {
        Some(b'"') => match serde_json::from_slice(text) {
            Ok(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `text` is one JSON value, exactly as `serde_json::from_slice::<Value>` reads one:
/// it is read by that same parser (`Check`), which builds nothing of it (no memory but a copy of
/// a string with escapes, however large it is).
pub(super) fn valid(text: &[u8]) -> bool {
    serde_json::from_slice::<Check>(text).is_ok()
}

/// Any JSON value, read by serde_json's parser as it reads a `Value` (`deserialize_any`: the
/// same numbers, strings, nesting limit and errors) and kept nowhere.
struct Check;

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
        d.deserialize_any(Check)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = Check;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_str<E>(self, _: &str) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_unit<E>(self) -> Result<Check, E> {
        Ok(Check)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
        while seq.next_element::<Check>()?.is_some() {}
        Ok(Check)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
        while map.next_entry::<Check, Check>()?.is_some() {}
        Ok(Check)
    }
}

/// `valid`, then `members`: what the tests call to compare with serde_json.
#[cfg(test)]
fn walk<'a>(text: &'a [u8], mut each: impl FnMut(Option<&'a [u8]>, &'a [u8])) -> Option<()> {
    valid(text).then_some(())?;
    members(text, &mut each)
}

/// Gives `each` the text of every member (with its key's text) or element at the top of the
/// JSON text `text`, in order; `text` is `valid` (anything else may be misread). Each is found
/// by serde_json reading it as `Check`: nothing of it is built.
pub(super) fn members<'a>(text: &'a [u8], each: &mut dyn FnMut(Option<&'a [u8]>, &'a [u8])) -> Option<()> {
    let mut at = space(text, 0);
    let open = *text.get(at)?;
    if !matches!(open, b'{' | b'[') {
        return Some(());
    }
    at += 1;
    loop {
        at = space(text, at);
        match *text.get(at)? {
            b',' => {
                at += 1;
                continue;
            }
            b'}' | b']' => return Some(()),
            _ => {}
        }
        let key = match open {
            b'{' => {
                let end = skip(text, at)?;
                let key = &text[at..end];
                at = space(text, end) + 1; // the colon
                Some(key)
            }
            _ => None,
        };
        let start = space(text, at);
        at = skip(text, start)?;
        each(key, &text[start..at]);
    }
}

/// Where the JSON value at `at` in the valid text `text` ends.
pub(super) fn skip(text: &[u8], at: usize) -> Option<usize> {
    let mut values = serde_json::Deserializer::from_slice(text.get(at..)?).into_iter::<Check>();
    values.next()?.ok()?;
    Some(at + values.byte_offset())
}

/// Where the JSON whitespace at `at` ends.
fn space(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `walk` accepts exactly what `serde_json::from_slice::<Value>` accepts, and finds the top
    /// level's members and elements.
    #[test]
    fn walking_reads_json_exactly_as_serde_json_does() {
        let nested = |n: usize, open: &str, close: &str| format!("{}1{}", open.repeat(n), close.repeat(n));
        let mut cases: Vec<Vec<u8>> = [
            "0",
            "-0",
            "1.5e-3",
            "1E+2",
            "-12.0",
            "1e308",
            "1e-400",
            "0e999999",
            "123456789012345678901234567890",
            r#""a\"b\\\/\b\f\n\r\t\u00e9""#,
            r#""\ud83d\ude00""#,
            "\"\u{e9}\u{1F600}\"",
            "[]",
            "{}",
            " [ 1 , 2 ]\n",
            r#"{"a":{"b":[true,false,null]},"":0,"a":1}"#,
            "[1,[2,[3]],{}]",
            "\"\u{7f}\"",
            r#"{"a" :1 , "b": [ ] }"#,
            "",
            " ",
            "01",
            "-01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "1e309",
            "-1e309",
            "[01]",
            "NaN",
            "Infinity",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "[}",
            "{]",
            "[1]]",
            "[1] x",
            "{\"a\":1}}",
            "tru",
            "truex",
            "nul",
            "[",
            "{\"a\":",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800\n""#,
            r#""\ud800x""#,
            r#""\x""#,
            r#""\u12g4""#,
            r#""\u""#,
            "\"a",
            "\"tab\there\"",
            "\"nl\nhere\"",
            "\"\u{1f}\"",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        cases.extend(
            [&b"\"\xff\""[..], b"[\"\xc3\"]", b"\"\xed\xa0\x80\"", b"\xef\xbb\xbf1"].map(<[u8]>::to_vec),
        );
        for digits in [300, 308, 309, 400] {
            cases.push(format!("1{}", "0".repeat(digits)).into_bytes());
            cases.push(format!("-2{}.5", "0".repeat(digits)).into_bytes());
        }
        for n in [1, 126, 127, 128, 200] {
            cases.push(nested(n, "[", "]").into_bytes());
            cases.push(nested(n, "{\"a\":", "}").into_bytes());
            cases.push(nested(n, "[{\"a\":[", "]}]").into_bytes());
        }
        for case in &cases {
            let ours = walk(case, |_, _| {}).is_some();
            let theirs = serde_json::from_slice::<Value>(case).is_ok();
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(case));
        }

        let text = br#" {"a" : [1, {"b": 2}], "\u0069d": "x", "a": null} "#;
        let mut top = Vec::new();
        walk(text, |key, value| top.push((key.map(<[u8]>::to_vec), value.to_vec()))).unwrap();
        let expected: [(Option<&[u8]>, &[u8]); 3] = [
            (Some(b"\"a\""), b"[1, {\"b\": 2}]"),
            (Some(br#""\u0069d""#), b"\"x\""),
            (Some(b"\"a\""), b"null"),
        ];
        assert_eq!(top, expected.map(|(k, v)| (k.map(<[u8]>::to_vec), v.to_vec())));
        let found: [Option<&[u8]>; 3] = [Some(b"null"), Some(b"\"x\""), None];
        assert_eq!(fields(text, ["a", "id", "z"]), Some(found), "the last of each; keys decoded");
        assert_eq!(fields(b"[1]", ["a"]), Some([None]));
        let mut elements = Vec::new();
        walk(b"[ {\"a\":1} ,\n[2] ]", |key, value| elements.push((key.is_none(), value.to_vec()))).unwrap();
        assert_eq!(elements, [(true, b"{\"a\":1}".to_vec()), (true, b"[2]".to_vec())]);
    }
}
