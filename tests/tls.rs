//! TLS and mTLS with certificates made by scripts/generate-certs.sh: https:// and wss:// on the
//! gateway's one port, register trusting a private CA (or not verifying), client certificates
//! required and presented, every key format, and clear errors for bad files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::util::{Gateway, Proc, Watchdog};

/// A fresh directory of certificates with keys of `kind` (ec, rsa, rsa-pkcs1, ec-sec1).
pub(crate) fn certs(kind: &str) -> PathBuf {
    certs_with(&["--key", kind])
}

/// A fresh directory of certificates made with these extra options of generate-certs.sh.
fn certs_with(extra: &[&str]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("mcpport-tls-{}-{n}", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/generate-certs.sh");
    let mut args = vec![script, "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = Command::new("bash").args(&args).output().unwrap();
    assert!(out.status.success(), "generate-certs: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// A gateway serving TLS with the certificates in `dir` (mTLS when `mtls`).
pub(crate) fn tls_gateway(dir: &Path, mtls: bool) -> Gateway {
    let (cert, key, ca) = (file(dir, "server.crt"), file(dir, "server.key"), file(dir, "ca.crt"));
    let mut args = vec!["--ssl-enabled", "--ssl-certfile", &cert, "--ssl-keyfile", &key];
    if mtls {
        args.extend(["--ssl-ca-certs", &ca]);
    }
    let gw = Gateway::start(&args);
    gw.proc.wait_log("listening on https://");
    gw
}

/// A TLS client trusting the CA of `dir`, presenting its client certificate if asked.
fn tls_client(
    port: u16,
    dir: &Path,
    client_cert: bool,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if client_cert {
        let chain =
            CertificateDer::pem_file_iter(dir.join("client.crt")).unwrap().map(|c| c.unwrap()).collect();
        builder
            .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap())
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// GET /health over TLS, trusting the CA of `dir`, presenting the client certificate if asked.
pub(crate) fn https_health(port: u16, dir: &Path, client_cert: bool) -> Result<String, String> {
    let mut tls = tls_client(port, dir, client_cert);
    let req = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    match tls.read_to_string(&mut out) {
        Ok(_) => Ok(out),
        Err(_) if out.starts_with("HTTP/1.1") => Ok(out), // a close without close_notify
        Err(e) => Err(e.to_string()),
    }
}

fn register(gw: &Gateway, name: &str, extra: &[&str]) -> Proc {
    let url = format!("wss://localhost:{}/mcp/register", gw.port);
    let stdio = format!("{} sample-server", crate::util::BIN);
    let mut args = vec![
        "register",
        "--stdio",
        &stdio,
        "--gateway-url",
        &url,
        "--server-name",
        name,
        "--require-gateway",
    ];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

#[test]
fn https_and_wss_on_one_port_with_a_private_ca() {
    let _w = Watchdog::new("https_and_wss", Duration::from_secs(60));
    let dir = certs("ec");
    let gw = tls_gateway(&dir, false);
    assert!(https_health(gw.port, &dir, false).unwrap().contains("\"status\":\"ok\""));

    let ca = file(&dir, "ca.crt");
    let pi = register(&gw, "pi", &["--ssl-ca-cert", &ca]);
    pi.wait_log("registered as");

    let mut untrusting = register(&gw, "nope", &[]);
    assert_eq!(untrusting.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(untrusting.log_text().contains("--ssl-ca-cert"), "{}", untrusting.log_text());

    let blind = register(&gw, "blind", &["--no-ssl-verify"]);
    blind.wait_log("registered as");
    assert!(blind.log_text().contains("NOT checked"));

    // Plain HTTP on the TLS port is told in plain HTTP to use https (as nginx does), and the
    // gateway goes on serving.
    let mut plain = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{answer:?}");
    gw.proc.wait_log("plain HTTP to this TLS port");
    assert!(https_health(gw.port, &dir, false).is_ok());
}

#[test]
fn mtls_requires_a_client_certificate_from_the_ca() {
    let _w = Watchdog::new("mtls", Duration::from_secs(60));
    let dir = certs("ec");
    let gw = tls_gateway(&dir, true);
    assert!(https_health(gw.port, &dir, false).is_err(), "no client certificate, no service");
    assert!(https_health(gw.port, &dir, true).unwrap().contains("\"status\":\"ok\""));

    let ca = file(&dir, "ca.crt");
    let mut anonymous = register(&gw, "anon", &["--ssl-ca-cert", &ca]);
    assert_eq!(anonymous.wait_exit(Duration::from_secs(10)).code(), Some(1));

    let (cert, key) = (file(&dir, "client.crt"), file(&dir, "client.key"));
    let pi = register(&gw, "pi", &["--ssl-ca-cert", &ca, "--ssl-certfile", &cert, "--ssl-keyfile", &key]);
    pi.wait_log("registered as");

    // A certificate from another CA does not pass.
    let other = certs("ec");
    let (cert, key) = (file(&other, "client.crt"), file(&other, "client.key"));
    let mut stranger =
        register(&gw, "stranger", &["--ssl-ca-cert", &ca, "--ssl-certfile", &cert, "--ssl-keyfile", &key]);
    assert_eq!(stranger.wait_exit(Duration::from_secs(10)).code(), Some(1));
}

#[test]
fn without_tokens_a_name_belongs_to_the_certificate_that_registered_it() {
    let _w = Watchdog::new("mtls_names", Duration::from_secs(60));
    let dir = certs_with(&["--client", "edge2"]);
    let gw = tls_gateway(&dir, true);
    let ca = file(&dir, "ca.crt");
    let with = |cert: &str| {
        let (c, k) = (file(&dir, &format!("{cert}.crt")), file(&dir, &format!("{cert}.key")));
        ["--ssl-ca-cert".to_string(), ca.clone(), "--ssl-certfile".into(), c, "--ssl-keyfile".into(), k]
    };
    let args = |cert: &str| {
        let mut a = with(cert).to_vec();
        a.extend(["--server-id".to_string(), "same-id".to_string()]);
        a
    };
    let first = args("client");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let pi = register(&gw, "pi", &first);
    pi.wait_log("registered as");
    // Another certificate from the same CA, the same name and the same id: refused.
    let other = args("edge2");
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let mut thief = register(
        &gw,
        "pi",
        &["--require-gateway"].into_iter().chain(other.iter().copied()).collect::<Vec<_>>(),
    );
    thief.wait_log("another credential");
    let _ = thief.child.kill();
    // The first edge keeps its name (it is still registered and was never replaced).
    assert!(!pi.log_text().contains("replaced"), "{}", pi.log_text());
    gw.proc.wait_log("held by a live server that registered with another credential");
}

#[test]
fn every_key_format_loads() {
    let _w = Watchdog::new("key_formats", Duration::from_secs(60));
    for kind in ["rsa", "rsa-pkcs1", "ec-sec1"] {
        let dir = certs(kind);
        let gw = tls_gateway(&dir, false);
        assert!(https_health(gw.port, &dir, false).unwrap().contains("\"status\":\"ok\""), "{kind}");
    }
}

#[test]
fn bad_tls_files_are_clear_errors() {
    let _w = Watchdog::new("bad_tls_files", Duration::from_secs(60));
    let (a, b) = (certs("ec"), certs("ec"));
    let missing = file(&a, "nope.crt");
    let (cert, key, other_key) = (file(&a, "server.crt"), file(&a, "server.key"), file(&b, "server.key"));
    for (args, needle) in [
        (vec!["--ssl-enabled", "--ssl-certfile", &missing, "--ssl-keyfile", &key], "nope.crt"),
        (vec!["--ssl-enabled", "--ssl-certfile", &cert, "--ssl-keyfile", &other_key], "does the key belong"),
        (vec!["--ssl-enabled", "--ssl-certfile", &key, "--ssl-keyfile", &key], "no PEM certificate"),
    ] {
        let mut all = vec!["gateway", "--host", "127.0.0.1", "--port", "0"];
        all.extend(args);
        let mut p = Proc::start(&all);
        assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(1));
        assert!(p.log_text().contains(needle), "{needle}: {}", p.log_text());
    }
}

#[test]
fn an_expired_gateway_certificate_is_refused_with_a_clear_error() {
    let _w = Watchdog::new("expired_certificate", Duration::from_secs(60));
    let dir = certs_with(&["--expired"]);
    let gw = tls_gateway(&dir, false);
    let ca = file(&dir, "ca.crt");
    let mut edge = register(&gw, "late", &["--ssl-ca-cert", &ca]);
    assert_eq!(edge.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(edge.log_text().contains("certificate expired"), "{}", edge.log_text());
    assert!(!edge.log_text().contains("private CA?"), "no misleading hint: {}", edge.log_text());
}

#[test]
fn generate_certs_says_when_the_server_certificate_is_expired() {
    let dir = std::env::temp_dir().join(format!("mcpport-tls-expired-say-{}", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/generate-certs.sh");
    let out =
        Command::new("bash").args([script, "--out", dir.to_str().unwrap(), "--expired"]).output().unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("EXPIRED on 2020-01-02"), "{said}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The wrong scheme either way is named on both sides: register suggests the other scheme, the
/// gateway logs what the client did; a TLS client on a plain port gets no confusing HTTP answer,
/// a plain HTTP client on a TLS port gets one saying to use https.
#[test]
fn the_wrong_scheme_is_named_on_both_sides() {
    let _w = Watchdog::new("the_wrong_scheme_is_named_on_both_sides", Duration::from_secs(60));
    let stdio = format!("{} sample-server", crate::util::BIN);
    let dir = certs("ec");
    let tls = tls_gateway(&dir, false);
    let url = format!("ws://localhost:{}/mcp/register", tls.port);
    let mut plain_to_tls =
        Proc::start(&["register", "--stdio", &stdio, "--gateway-url", &url, "--require-gateway"]);
    assert_eq!(plain_to_tls.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(plain_to_tls.log_text().contains("wss://"), "{}", plain_to_tls.log_text());
    tls.proc.wait_log("a client spoke plain HTTP to this TLS port");
    let mut s = TcpStream::connect(("127.0.0.1", tls.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("https://"), "{answer}");
    // The right scheme, but a certificate of a CA it was not given: the hint names the flag.
    let url = format!("wss://localhost:{}/mcp/register", tls.port);
    let mut untrusting =
        Proc::start(&["register", "--stdio", &stdio, "--gateway-url", &url, "--require-gateway"]);
    assert_eq!(untrusting.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(
        untrusting.log_text().contains("a private CA? pass it with --ssl-ca-cert"),
        "{}",
        untrusting.log_text()
    );

    let plain = Gateway::start(&[]);
    let url = format!("wss://localhost:{}/mcp/register", plain.port);
    let ca = file(&dir, "ca.crt");
    let mut tls_to_plain = Proc::start(&[
        "register",
        "--stdio",
        &stdio,
        "--gateway-url",
        &url,
        "--require-gateway",
        "--ssl-ca-cert",
        &ca,
    ]);
    assert_eq!(tls_to_plain.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(tls_to_plain.log_text().contains("use ws://"), "{}", tls_to_plain.log_text());
    plain.proc.wait_log("a client tried TLS on this plain-HTTP port");
    assert!(!plain.proc.log_text().contains("bad request (400)"), "{}", plain.proc.log_text());
    let mut s = TcpStream::connect(("127.0.0.1", plain.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0]).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(answer.is_empty(), "a TLS client got {:?}", String::from_utf8_lossy(&answer));
}

/// An idle TLS keep-alive connection rests like a plain one: it waits for the socket (rustls
/// holds no decrypted input then) and keeps no stack page below its wait.
#[test]
fn an_idle_tls_connection_rests() {
    let _w = Watchdog::new("idle_tls_rests", Duration::from_secs(30));
    let dir = certs("ec");
    let gw = tls_gateway(&dir, false);
    let mut tls = tls_client(gw.port, &dir, false);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\"status\"") {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed a keep-alive connection");
        got.extend_from_slice(&buf[..n]);
    }
    // A quiet thread rests a second after its last work: wait for that (a few seconds at most).
    let rested = |(_, _, below): &(String, usize, usize)| *below == 0;
    let threads = crate::operator::sample_until(gw.proc.pid(), 1, Duration::from_secs(5), rested);
    assert!(!threads.is_empty(), "the connection waits");
    let below: Vec<_> = threads.iter().filter(|(_, _, below)| *below > 0).collect();
    assert!(below.is_empty(), "resting threads keeping pages below their wait: {below:?}");
    // Still served after the rest.
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut rest = String::new();
    let _ = tls.read_to_string(&mut rest);
    assert!(rest.contains("\"status\""), "{rest}");
}
