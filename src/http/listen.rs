//! Binding the HTTP listener: plain HTTP or HTTPS (rustls, through
//! tiny_http), directly ([`bind`]) or behind the connection front
//! ([`bind_fronted`], what the binary uses).
//!
//! Every failure is one clear line naming the file; a key tiny_http cannot
//! parse is reported, not a panic.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use super::front::{Front, FrontConfig};
use super::types::DEFAULT_BODY_LIMIT;

/// Bind the HTTP listener: plain HTTP, or HTTPS (rustls) when `tls` names a
/// PEM certificate chain and a PEM private key (PKCS#8 or PKCS#1 RSA).
///
/// Every failure is one clear line naming the file; a key tiny_http cannot
/// parse is reported, not a panic.
pub fn bind(addr: SocketAddr, tls: Option<(&Path, &Path)>) -> Result<tiny_http::Server, String> {
    let Some(config) = tls_config(tls)? else {
        return tiny_http::Server::http(addr).map_err(|e| format!("cannot bind HTTP {addr}: {e}"));
    };
    start_https(addr, tls, || tiny_http::Server::https(addr, config))
}

/// [`bind`] behind the connection front ([`super::front`]): `addr` is
/// bound by the front, tiny_http (and TLS, if any) serves a private Unix
/// socket. Start the front with [`Front::spawn`] and the server with
/// [`super::spawn`]; the public address is [`Front::local_addr`].
pub fn bind_fronted(
    addr: SocketAddr,
    tls: Option<(&Path, &Path)>,
) -> Result<(tiny_http::Server, Front), String> {
    let config = tls_config(tls)?;
    // Plain HTTP: the front inspects request heads and answers an over-cap
    // Content-Length itself (413), so tiny_http never has to drop one.
    let front_cfg = FrontConfig {
        plain_http: config.is_none(),
        max_body: DEFAULT_BODY_LIMIT,
    };
    let scheme = if config.is_some() { "HTTPS" } else { "HTTP" };
    let (front, unix) =
        Front::bind(addr, front_cfg).map_err(|e| format!("cannot bind {scheme} {addr}: {e}"))?;
    let server = match config {
        None => tiny_http::Server::from_listener(unix, None)
            .map_err(|e| format!("cannot start HTTP on {addr}: {e}"))?,
        Some(config) => start_https(addr, tls, || {
            tiny_http::Server::from_listener(unix, Some(config))
        })?,
    };
    Ok((server, front))
}

/// Start an HTTPS server with `start`, turning tiny_http's panic on some
/// malformed keys into an error.
fn start_https(
    addr: SocketAddr,
    tls: Option<(&Path, &Path)>,
    start: impl FnOnce() -> Result<tiny_http::Server, Box<dyn std::error::Error + Send + Sync>>,
) -> Result<tiny_http::Server, String> {
    match catch_unwind(AssertUnwindSafe(start)) {
        Ok(Ok(server)) => Ok(server),
        Ok(Err(e)) => Err(format!("cannot start HTTPS on {addr}: {e}")),
        Err(_) => {
            let (cert_path, key_path) = tls.unwrap_or((Path::new("?"), Path::new("?")));
            Err(format!(
                "TLS key {} or certificate {} could not be parsed",
                key_path.display(),
                cert_path.display()
            ))
        }
    }
}

/// Read and check the PEM files of `tls`; `None` for plain HTTP.
fn tls_config(tls: Option<(&Path, &Path)>) -> Result<Option<tiny_http::SslConfig>, String> {
    let Some((cert_path, key_path)) = tls else {
        return Ok(None);
    };
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| format!("cannot read TLS {what} {}: {e}", p.display()))
    };
    let certificate = read("certificate", cert_path)?;
    let private_key = read("key", key_path)?;
    if !has_pem(&certificate, "CERTIFICATE") {
        return Err(format!(
            "TLS certificate {} has no PEM CERTIFICATE block",
            cert_path.display()
        ));
    }
    if !has_pem(&private_key, "PRIVATE KEY") && !has_pem(&private_key, "RSA PRIVATE KEY") {
        let hint = if has_pem(&private_key, "EC PRIVATE KEY") {
            "SEC1 EC keys are not supported; convert with \
             `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8.pem`"
        } else {
            "expected an unencrypted PEM PRIVATE KEY (PKCS#8) or RSA PRIVATE KEY block"
        };
        return Err(format!("TLS key {}: {hint}", key_path.display()));
    }
    Ok(Some(tiny_http::SslConfig {
        certificate,
        private_key,
    }))
}

/// True if `pem` has a `-----BEGIN {label}-----` line.
fn has_pem(pem: &[u8], label: &str) -> bool {
    let marker = format!("-----BEGIN {label}-----");
    pem.windows(marker.len()).any(|w| w == marker.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_rejects_bad_tls_files() {
        let dir = std::env::temp_dir().join(format!("wisp-tls-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let e = bind(addr, Some((&cert, &key))).err().unwrap();
        assert!(e.contains("cert.pem"), "{e}");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = bind(addr, Some((&cert, &key))).err().unwrap();
        assert!(e.contains("openssl pkcs8"), "{e}");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        // Garbage inside valid markers: an error (tiny_http would panic), not a crash.
        assert!(bind(addr, Some((&cert, &key))).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
