//! Small text encodings every role uses: standard base64 (RFC 4648 §4) both ways, for the
//! WebSocket keys, `requestState` and the base64 form of the 2026-07-28 headers; base64url
//! (§5), for JSON Web Tokens and PKCE; percent-encoding, for query strings; and decimal
//! seconds (`1.5`), for the command line and the sample server's readings of `/proc`.

use std::time::Duration;

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Standard base64 with padding (RFC 4648 §4).
pub(crate) fn base64(bytes: &[u8]) -> String {
    encode(bytes, STANDARD, true)
}

// Used by the built-in authorization server only.
#[cfg_attr(not(feature = "oauth-server"), allow(dead_code))]
/// base64url without padding (RFC 4648 §5), as JOSE and PKCE write it.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    encode(bytes, URL_SAFE, false)
}

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (RFC 4648 §4), padding optional; `None` for anything else.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    decode(text.trim_end_matches('='), STANDARD)
}

/// base64url without padding (RFC 4648 §5); `None` for anything else, padding included.
pub(crate) fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    decode(text, URL_SAFE)
}

fn decode(text: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = alphabet.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Canonical only: the bits left over must be zero, so no two texts decode the same; and a
    // lone sixth of a byte is no encoding at all.
    (acc == 0 && bits < 6).then_some(out)
}

// Used by the built-in authorization server only.
#[cfg_attr(not(feature = "oauth-server"), allow(dead_code))]
/// Percent-encodes everything but RFC 3986's unreserved characters: a value safe in a query
/// string or a form body.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `30`, `2.5` or `0.001` (seconds, or a load average from /proc): digits, then at most nine
/// decimals. Parsed as integers, so the binary carries no float parser (15 KB on a router, for
/// a few numbers that never need one).
pub(crate) fn decimal_seconds(v: &str) -> Option<Duration> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty()
        || !digits(whole)
        || !digits(frac)
        || frac.len() > 9
        || whole.len() > 9
    {
        return None;
    }
    let secs: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in ["", "f", "fo", "foo", "foob", "fooba", "foobar", "héllo wörld"] {
            assert_eq!(base64_decode(&base64(text.as_bytes())).unwrap(), text.as_bytes());
        }
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn seconds_are_decimal_numbers_without_a_float_parser() {
        assert_eq!(decimal_seconds("30"), Some(Duration::from_secs(30)));
        assert_eq!(decimal_seconds("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(decimal_seconds(".25"), Some(Duration::from_millis(250)));
        assert_eq!(decimal_seconds("1."), Some(Duration::from_secs(1)));
        assert_eq!(decimal_seconds("0.000000001"), Some(Duration::from_nanos(1)));
        for bad in
            ["", ".", "-1", "+1", "1e3", "1.2.3", "0.0000000001", "nan", "inf", " 1", "1 ", "9999999999"]
        {
            assert_eq!(decimal_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base64_of_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn base64url_is_unpadded_and_url_safe() {
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        for bad in ["+/8", "-_8=", "A", "Zh"] {
            assert_eq!(base64url_decode(bad), None, "{bad}");
        }
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64url_decode(&base64url(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
    }
}
