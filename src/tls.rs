//! TLS for both roles, with rustls and its `ring` provider: the gateway's server config (PEM
//! certificate chain and key; with a CA file, client certificates are required: mTLS) and
//! register's client config (the bundled webpki roots, plus a private CA, or no verification at
//! all when asked to; optionally a client certificate for an mTLS gateway).
//!
//! The TLS streams implement `http::Transport`, so everything above (HTTP, SSE, WebSocket owner
//! loops) is the same over TLS as over plain TCP. Errors name the file and what is wrong with it.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig, ServerConnection,
    SignatureScheme, StreamOwned,
};

use crate::http::Transport;

/// How long a TLS handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Transport for StreamOwned<ServerConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }

    fn peer_identity(&self) -> Option<[u8; 32]> {
        let leaf = self.conn.peer_certificates()?.first()?;
        let digest = ::ring::digest::digest(&::ring::digest::SHA256, leaf.as_ref());
        digest.as_ref().try_into().ok()
    }

    /// Decrypted input waiting in rustls (or a close it read) is all a socket `poll` could miss;
    /// rustls wants to read only when it holds none, and holds no complete record unprocessed.
    fn holds_input(&self) -> bool {
        !self.conn.wants_read()
    }
}

impl Transport for StreamOwned<ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Decrypted input waiting in rustls (or a close it read) is all a socket `poll` could miss;
    /// rustls wants to read only when it holds none, and holds no complete record unprocessed.
    fn holds_input(&self) -> bool {
        !self.conn.wants_read()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The gateway's TLS configuration; `client_ca` turns on mTLS.
pub(crate) fn server_config(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("--ssl-ca-cert {ca}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!("--ssl-certfile {cert} and --ssl-keyfile: {e} (does the key belong to the certificate?)")
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What register trusts, and what it presents.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientOptions {
    /// A CA file trusted besides the bundled roots.
    pub ca: Option<String>,
    /// Accept any server certificate (loudly warned about).
    pub no_verify: bool,
    /// A client certificate and key, for gateways that require mTLS.
    pub identity: Option<(String, String)>,
}

/// Register's TLS configuration.
pub(crate) fn client_config(opts: &ClientOptions) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if opts.no_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(ca) = &opts.ca {
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| format!("--ssl-ca-cert {ca}: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match &opts.identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("--ssl-certfile {cert} and --ssl-keyfile: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Runs the server side of the handshake on an accepted socket, within `HANDSHAKE_TIMEOUT`
/// (the socket's own timeouts are restored afterwards).
pub(crate) fn accept(
    config: Arc<ServerConfig>,
    mut sock: TcpStream,
) -> io::Result<StreamOwned<ServerConnection, TcpStream>> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    handshake(&mut conn, &mut sock)?;
    Ok(StreamOwned::new(conn, sock))
}

/// Whether a client just connected to a TLS port speaks plain HTTP: a look at its first bytes
/// (a TLS record starts with 0x16; a request line with an upper-case method), waiting for them
/// at most `HANDSHAKE_TIMEOUT`. Nothing is consumed.
pub(crate) fn speaks_plain_http(sock: &TcpStream) -> bool {
    let Ok(before) = sock.read_timeout() else { return false };
    if sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).is_err() {
        return false;
    }
    let mut first = [0u8; 4];
    let peeked = sock.peek(&mut first);
    let _ = sock.set_read_timeout(before);
    peeked.is_ok_and(|n| looks_like_plain_http(&first[..n]))
}

/// Whether these first bytes of a connection are a plain HTTP request line (`GET `, `POST`…).
fn looks_like_plain_http(first: &[u8]) -> bool {
    !first.is_empty()
        && first[0].is_ascii_uppercase()
        && first.iter().all(|b| b.is_ascii_uppercase() || *b == b' ')
}

/// Runs the client side of the handshake to `host` on a connected socket.
pub(crate) fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    mut sock: TcpStream,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    handshake(&mut conn, &mut sock)?;
    Ok(StreamOwned::new(conn, sock))
}

fn handshake<C, D>(conn: &mut C, sock: &mut TcpStream) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let before = (sock.read_timeout()?, sock.write_timeout()?);
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"));
        }
        sock.set_read_timeout(Some(left))?;
        sock.set_write_timeout(Some(left))?;
        conn.complete_io(sock)?;
    }
    // The caller's deadlines hold again for what follows.
    sock.set_read_timeout(before.0)?;
    sock.set_write_timeout(before.1)?;
    Ok(())
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key (PKCS#8, RSA or EC PEM) from {path}: {e}"))
}

fn load_roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(roots)
}

/// `--no-ssl-verify`: accepts any certificate, but still checks that the handshake is signed
/// by the key of the certificate presented (so the link is encrypted, just not authenticated).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
