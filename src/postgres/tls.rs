//! How a store URL connects, the way libpq users expect: `sslmode`
//! (`disable`, `prefer` (the default), `require`, `verify-ca`,
//! `verify-full`), `sslrootcert`, `sslcert` and `sslkey` from the URL or
//! from `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY`, and the
//! password from the URL, `PGPASSWORD` or the `~/.pgpass` file
//! (`PGPASSFILE`).
//!
//! TLS is rustls with the ring provider: pure Rust apart from ring's
//! assembly, so no system OpenSSL is needed to build or run. As in libpq,
//! `prefer` and `require` encrypt without checking who answers unless a
//! root certificate is given (then they check the chain, as `verify-ca`
//! does); `verify-ca` checks that the server's certificate chains to the
//! root certificate; `verify-full` also checks that it names the host.

use crate::error::{Error, Result};
use postgres::Config;
use postgres::config::{Host, SslMode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The URL parameters this module reads; the rest go to `postgres::Config`.
const TLS_PARAMS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// What `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode> {
        Ok(match text {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            // libpq's `allow` tries plain text first; not offered.
            other => {
                return Err(Error::InvalidInput(format!(
                    "sslmode {other:?} is not supported: use disable, prefer, require, \
                     verify-ca or verify-full"
                )));
            }
        })
    }
}

/// How to connect: TLS or not, and with which checks.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

/// The options of a store URL, split into what `postgres::Config` reads
/// and the TLS settings it does not.
pub(crate) struct Connection {
    /// The URL without the TLS parameters.
    pub url: String,
    mode: Mode,
    root_cert: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// `%XX` escapes of a URL parameter, decoded; anything else, including a
/// `%` not followed by two hex digits, is kept as it is.
fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Connection {
    /// Splits `url` (a `postgres://` URL) into the part `postgres::Config`
    /// parses and the TLS settings, which the environment completes.
    pub(crate) fn parse(url: &str) -> Result<Connection> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut kept = Vec::new();
        let mut ours = std::collections::HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if TLS_PARAMS.contains(&key) {
                ours.insert(key.to_string(), percent_decode(value));
            } else {
                kept.push(pair);
            }
        }
        let setting = |key: &str, variable: &str| ours.get(key).cloned().or_else(|| env(variable));
        let mode = match setting("sslmode", "PGSSLMODE") {
            Some(text) => Mode::parse(&text)?,
            None => Mode::Prefer,
        };
        let default_file = |name: &str| {
            home()
                .map(|h| h.join(".postgresql").join(name))
                .filter(|p| p.is_file())
        };
        let root_cert = setting("sslrootcert", "PGSSLROOTCERT")
            .map(PathBuf::from)
            .or_else(|| default_file("root.crt"));
        let client_cert = match (
            setting("sslcert", "PGSSLCERT")
                .map(PathBuf::from)
                .or_else(|| default_file("postgresql.crt")),
            setting("sslkey", "PGSSLKEY")
                .map(PathBuf::from)
                .or_else(|| default_file("postgresql.key")),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(Error::InvalidInput(format!(
                    "sslcert {} is given without sslkey",
                    cert.display()
                )));
            }
            (None, Some(key)) => {
                return Err(Error::InvalidInput(format!(
                    "sslkey {} is given without sslcert",
                    key.display()
                )));
            }
        };
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(Connection {
            url,
            mode,
            root_cert,
            client_cert,
        })
    }

    /// Sets the mode on `config` and builds the TLS connector it calls for.
    pub(crate) fn tls(&self, config: &mut Config) -> Result<Tls> {
        config.ssl_mode(match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        });
        if self.mode == Mode::Disable {
            return Ok(Tls::Plain);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.root_cert, self.mode) {
            (None, Mode::VerifyCa | Mode::VerifyFull) => {
                return Err(Error::InvalidInput(format!(
                    "sslmode {} needs the certificate of the CA that signed the server's: \
                     give sslrootcert (or PGSSLROOTCERT, or ~/.postgresql/root.crt)",
                    if self.mode == Mode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    }
                )));
            }
            (None, _) => Arc::new(AnyCertificate(provider.signature_verification_algorithms)),
            (Some(root), mode) => {
                let roots = read_roots(root)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| {
                            Error::InvalidInput(format!("sslrootcert {}: {e}", root.display()))
                        })?;
                if mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidInput(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let client = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| Error::InvalidInput(format!("sslcert {}: {e}", cert.display())))?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| Error::InvalidInput(format!("sslkey {}: {e}", key.display())))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    Error::InvalidInput(format!(
                        "sslcert {} and sslkey {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?
            }
        };
        Ok(Tls::Rustls(MakeRustlsConnect::new(client)))
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::InvalidInput(format!("sslrootcert {}: {e}", path.display())))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::InvalidInput(format!(
            "sslrootcert {} holds no certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// `require` and `prefer` without a root certificate, as in libpq:
/// encryption without knowing who answers. The handshake's signatures are
/// still checked, so the channel is what the certificate's key agreed to.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root certificate; the name in
/// the certificate is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Says which check a failed TLS connection failed, in libpq's terms,
/// when the error is one of the certificate checks.
pub(crate) fn explain(error: &postgres::Error) -> Option<&'static str> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(problem)) = tls {
            return Some(match problem {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "the server's certificate does not name the host connected to \
                     (sslmode verify-full checks the name; verify-ca does not)"
                }
                CertificateError::UnknownIssuer => {
                    "the server's certificate is not signed by a CA in sslrootcert \
                     (the chain check of verify-ca and verify-full)"
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired"
                }
                _ => "the server's certificate failed verification",
            });
        }
        source = e.source();
    }
    None
}

/// The password for `config` when the URL gives none: `PGPASSWORD`, else
/// the first matching line of the password file (`PGPASSFILE`, default
/// `~/.pgpass`), which, as libpq requires, must not be readable by group
/// or others.
pub(crate) fn fill_password(config: &mut Config) -> Result<()> {
    if config.get_password().is_some() {
        return Ok(());
    }
    if let Some(password) = env("PGPASSWORD") {
        config.password(password);
        return Ok(());
    }
    let Some(file) = env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".pgpass")))
    else {
        return Ok(());
    };
    let Ok(meta) = std::fs::metadata(&file) else {
        return Ok(());
    };
    use std::os::unix::fs::PermissionsExt;
    if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
        // libpq warns and ignores such a file; so does this.
        return Ok(());
    }
    let text =
        std::fs::read_to_string(&file).map_err(|e| Error::io("read password file", &file, e))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(_)) | None => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default()
        .to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = pgpass_fields(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], &host)
            && matches(&fields[1], &port)
            && matches(&fields[2], &db)
            && matches(&fields[3], &user)
        {
            config.password(fields[4].clone());
            return Ok(());
        }
    }
    Ok(())
}

/// The `:`-separated fields of a password file line, with `\:` and `\\`
/// unescaped.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field at least").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url_and_the_rest_kept() {
        let c = Connection::parse(
            "postgres://u:p@h:5/db?sslmode=verify-full&options=-csearch_path%3Dx&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(c.url, "postgres://u:p@h:5/db?options=-csearch_path%3Dx");
        assert_eq!(c.mode, Mode::VerifyFull);
        assert_eq!(c.root_cert.as_deref(), Some(Path::new("/tmp/ca.pem")));
        assert!(Connection::parse("postgres://h/db?sslmode=allow").is_err());
    }

    #[test]
    fn percent_escapes_decode_and_anything_else_is_kept() {
        assert_eq!(percent_decode("%2Ftmp%2fca.pem"), "/tmp/ca.pem");
        // A sign is not a hex digit, and a multibyte character after `%`
        // is kept whole (slicing inside it used to panic).
        assert_eq!(percent_decode("%+1"), "%+1");
        assert_eq!(percent_decode("%éa%"), "%éa%");
        assert_eq!(percent_decode("%aé"), "%aé");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn password_file_fields_unescape_colons_and_backslashes() {
        assert_eq!(
            pgpass_fields(r"db.example:5432:*:me:pa\:ss\\word"),
            ["db.example", "5432", "*", "me", r"pa:ss\word"]
        );
    }
}
