//! DTLS set-up shared by every session: one certificate and one DTLS
//! configuration per process.
//!
//! Building an `Rtc` with str0m's aws-lc backend costs about a millisecond of
//! CPU, and most of it is not the session's own work: the backend builds a
//! fresh dimpl `Config` for every DTLS instance, and building one checks the
//! whole crypto provider with trial key exchanges on X25519, P-256 and P-384
//! and trial signature checks; without a certificate in the `RtcConfig` it
//! also generates a key pair. Both are per-process facts, so the core makes
//! them once: [`new_dtls_cert`] at `Sfu::new` (`SfuConfig::dtls_cert`) and
//! the provider of [`crypto_provider`], whose DTLS instances share one
//! checked `Config`. The handshake itself (ephemeral key exchange, signature)
//! still runs per session, as it must.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert, DtlsVersion};
use str0m::crypto::dtls::{DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion};
use str0m::crypto::CryptoError;

/// A new self-signed DTLS certificate from the process's crypto provider
/// (the one an `Rtc` would use; see `SfuConfig::dtls_cert`).
pub fn new_dtls_cert() -> DtlsCert {
    base()
        .dtls_provider
        .generate_certificate()
        .expect("the crypto provider generates DTLS certificates")
}

/// The process's crypto provider (the installed default, else str0m's
/// feature-selected one) with DTLS instances that share one checked dimpl
/// `Config` per MTU. For `RtcConfig::set_crypto_provider`.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(CryptoProvider {
                dtls_provider: &SHARED,
                ..base()
            })
        })
        .clone()
}

fn base() -> CryptoProvider {
    match CryptoProvider::get_default() {
        Some(p) => p.clone(),
        None => str0m::crypto::from_feature_flags(),
    }
}

/// Distinct MTUs with a cached `Config`; str0m passes one per `RtcConfig`
/// and wisp sets none, so one entry is the rule.
const MAX_CONFIGS: usize = 4;

static SHARED: SharedConfigDtls = SharedConfigDtls {
    configs: Mutex::new(Vec::new()),
};

/// A [`DtlsProvider`] that builds dimpl DTLS instances on a cached `Config`.
#[derive(Debug)]
struct SharedConfigDtls {
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl SharedConfigDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(c.clone());
        }
        // As str0m's aws-lc backend configures it: ICE has already proven
        // the peer's address before DTLS, so no server cookie.
        let mut b = dimpl::Config::builder().use_server_cookie(false);
        // Fuzz builds only: the same handshake with cheap public-key
        // arithmetic (see `fuzzing::crypto`).
        #[cfg(all(fuzzing, feature = "fuzzing"))]
        {
            b = b.with_crypto_provider(crate::fuzzing::crypto::dimpl_provider());
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        let config = Arc::new(
            b.build()
                .map_err(|e| CryptoError::Other(format!("dimpl config: {e}")))?,
        );
        if configs.len() < MAX_CONFIGS {
            configs.push((mtu, config.clone()));
        }
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        base().dtls_provider.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = cert.clone();
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version: {other}"
                )))
            }
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// One dimpl DTLS endpoint behind str0m's [`DtlsInstance`].
struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}
