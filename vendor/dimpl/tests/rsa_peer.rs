//! wisp: DTLS 1.2 between dimpl (ECDSA certificate, as str0m's) and OpenSSL
//! with an RSA 2048 certificate, as GStreamer's webrtcbin and other OpenSSL
//! peers have. Both roles, mutual authentication as in WebRTC, the RSA
//! signature forced to PKCS#1 v1.5 or RSA-PSS, application data both ways.
//! Datagrams pass in memory; OpenSSL reads them through `Pipe`.
#![cfg(feature = "aws-lc-rs")]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use dimpl::crypto::{HashAlgorithm, SignatureAlgorithm};
use dimpl::{Config, Dtls, Output};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use openssl::ssl::{HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslMethod};
use openssl::ssl::{SslStream, SslVerifyMode};
use openssl::x509::{X509, X509NameBuilder};

/// Handshake messages whose signature algorithm the tests read off the wire.
const SERVER_KEY_EXCHANGE: u8 = 12;
const CERTIFICATE_VERIFY: u8 = 15;

/// One direction of in-memory datagrams: OpenSSL reads one datagram a call.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Ossl {
    Handshaking(MidHandshakeSslStream<Pipe>),
    Connected(SslStream<Pipe>),
    Failed(String),
}

impl Ossl {
    fn pipe(&mut self) -> &mut Pipe {
        match self {
            Ossl::Handshaking(s) => s.get_mut(),
            Ossl::Connected(s) => s.get_mut(),
            Ossl::Failed(e) => panic!("OpenSSL failed: {e}"),
        }
    }

    fn step(self) -> Self {
        match self {
            Ossl::Handshaking(mid) => from_handshake(mid.handshake()),
            other => other,
        }
    }
}

fn from_handshake(r: Result<SslStream<Pipe>, HandshakeError<Pipe>>) -> Ossl {
    match r {
        Ok(s) => Ossl::Connected(s),
        Err(HandshakeError::WouldBlock(mid)) => Ossl::Handshaking(mid),
        Err(HandshakeError::Failure(mid)) => Ossl::Failed(mid.error().to_string()),
        Err(HandshakeError::SetupFailure(e)) => Ossl::Failed(e.to_string()),
    }
}

fn self_signed(pkey: &PKey<Private>) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "gstreamer")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(pkey).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(pkey, MessageDigest::sha256()).unwrap();
    b.build()
}

fn rsa_key(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// An OpenSSL DTLS endpoint like GStreamer's dtlsagent: an RSA certificate,
/// peer certificate required (WebRTC checks it against the SDP fingerprint),
/// DTLS-SRTP, and the signature algorithms it may use limited to `sigalgs`.
fn openssl_ctx(key: &PKey<Private>, cert: &X509, sigalgs: &str) -> SslContext {
    let mut ctx = SslContext::builder(SslMethod::dtls()).unwrap();
    // Security level 0 lets the key-size test load a 1024-bit key.
    ctx.set_security_level(0);
    ctx.set_cipher_list("ECDHE+AESGCM:ECDHE+CHACHA20").unwrap();
    ctx.set_sigalgs_list(sigalgs).unwrap();
    ctx.set_tlsext_use_srtp("SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
        .unwrap();
    ctx.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    ctx.set_private_key(key).unwrap();
    ctx.set_certificate(cert).unwrap();
    ctx.build()
}

/// The signature algorithm of the first `msg_type` handshake message in a
/// plaintext (epoch 0) DTLS datagram.
fn signature_algorithm_in(datagram: &[u8], msg_type: u8) -> Option<u16> {
    let mut rec = datagram;
    while rec.len() >= 13 {
        let len = u16::from_be_bytes([rec[11], rec[12]]) as usize;
        let body = rec.get(13..13 + len)?;
        let epoch = u16::from_be_bytes([rec[3], rec[4]]);
        // Handshake record, handshake message of the type, first fragment.
        if rec[0] == 22 && epoch == 0 && body.len() >= 12 && body[0] == msg_type {
            let frag_off = u32::from_be_bytes([0, body[6], body[7], body[8]]);
            let msg = &body[12..];
            if frag_off == 0 {
                let at = if msg_type == SERVER_KEY_EXCHANGE {
                    // curve_type, named_group, public key (length-prefixed)
                    4 + *msg.get(3)? as usize
                } else {
                    0
                };
                return Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]));
            }
        }
        rec = &rec[13 + len..];
    }
    None
}

/// What one handshake run saw.
struct Run {
    /// The handshake error dimpl returned, in words.
    dimpl_error: Option<String>,
    /// Whether OpenSSL completed its handshake.
    ossl_connected: bool,
    /// The RSA signature algorithm OpenSSL used on the wire.
    ossl_sigalg: Option<u16>,
    dimpl_connected: bool,
    peer_cert: Option<Vec<u8>>,
    keying_material: Option<Vec<u8>>,
    ossl_keying_material: Option<Vec<u8>>,
    dimpl_received: Vec<u8>,
    ossl_received: Vec<u8>,
}

/// Runs a DTLS 1.2 handshake between dimpl (ECDSA, like str0m) and OpenSSL
/// with `ossl_key`, then sends a message each way.
fn run(dimpl_is_client: bool, ossl_key: &PKey<Private>, sigalgs: &str) -> Run {
    let _ = env_logger::try_init();
    let ossl_cert = self_signed(ossl_key);
    let ctx = openssl_ctx(ossl_key, &ossl_cert, sigalgs);
    let mut ssl = Ssl::new(&ctx).unwrap();
    ssl.set_mtu(1150).unwrap();

    let config = Arc::new(Config::builder().use_server_cookie(false).build().unwrap());
    let cert = dimpl::certificate::generate_self_signed_certificate().unwrap();
    let now = Instant::now();
    let mut dimpl = Dtls::new_12(config, cert, now);
    dimpl.set_active(dimpl_is_client);

    let mut ossl = if dimpl_is_client {
        from_handshake(ssl.accept(Pipe::default()))
    } else {
        from_handshake(ssl.connect(Pipe::default()))
    };
    // The message whose signature is the RSA peer's.
    let watched = if dimpl_is_client {
        SERVER_KEY_EXCHANGE
    } else {
        CERTIFICATE_VERIFY
    };

    let mut out = Run {
        dimpl_error: None,
        ossl_connected: false,
        ossl_sigalg: None,
        dimpl_connected: false,
        peer_cert: None,
        keying_material: None,
        ossl_keying_material: None,
        dimpl_received: Vec::new(),
        ossl_received: Vec::new(),
    };
    let mut buf = vec![0u8; 2048];
    let mut sent = false;
    for _ in 0..50 {
        dimpl.handle_timeout(now).unwrap();
        loop {
            match dimpl.poll_output(&mut buf) {
                Output::Packet(p) => ossl.pipe().incoming.push_back(p.to_vec()),
                Output::Connected => out.dimpl_connected = true,
                Output::PeerCert(der) => out.peer_cert = Some(der.to_vec()),
                Output::KeyingMaterial(km, _) => out.keying_material = Some(km.to_vec()),
                Output::ApplicationData(d) => out.dimpl_received.extend_from_slice(d),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        ossl = ossl.step();
        if let Ossl::Failed(_) = ossl {
            break;
        }
        if let Ossl::Connected(s) = &mut ossl {
            out.ossl_connected = true;
            let mut rbuf = [0u8; 2048];
            match s.ssl_read(&mut rbuf) {
                Ok(n) => out.ossl_received.extend_from_slice(&rbuf[..n]),
                Err(e) if e.code() == openssl::ssl::ErrorCode::WANT_READ => {}
                Err(e) => panic!("OpenSSL read: {e}"),
            }
        }
        if out.dimpl_connected && out.ossl_connected && !sent {
            sent = true;
            dimpl.send_application_data(b"hello from dimpl").unwrap();
            if let Ossl::Connected(s) = &mut ossl {
                s.ssl_write(b"hello from openssl").unwrap();
            }
            continue;
        }
        let datagrams: Vec<_> = ossl.pipe().outgoing.drain(..).collect();
        for d in datagrams {
            if out.ossl_sigalg.is_none() {
                out.ossl_sigalg = signature_algorithm_in(&d, watched);
            }
            if let Err(e) = dimpl.handle_packet(&d) {
                out.dimpl_error = Some(e.to_string());
                return out;
            }
        }
        if sent && !out.dimpl_received.is_empty() && !out.ossl_received.is_empty() {
            break;
        }
    }
    if let Ossl::Failed(e) = ossl {
        panic!("OpenSSL handshake failed: {e}");
    }
    if let (Ossl::Connected(s), Some(km)) = (&ossl, &out.keying_material) {
        let mut ossl_km = vec![0u8; km.len()];
        s.ssl()
            .export_keying_material(&mut ossl_km, "EXTRACTOR-dtls_srtp", None)
            .unwrap();
        out.ossl_keying_material = Some(ossl_km);
    }
    out
}

fn assert_connected(run: &Run, expected_sigalg: u16, ossl_key: &PKey<Private>) {
    assert_eq!(run.dimpl_error, None);
    assert!(run.dimpl_connected, "dimpl connected");
    assert!(run.ossl_connected, "OpenSSL connected");
    assert_eq!(
        run.ossl_sigalg,
        Some(expected_sigalg),
        "OpenSSL signed with {expected_sigalg:#06x}"
    );
    // The certificate str0m checks against the SDP fingerprint is OpenSSL's.
    assert_eq!(
        run.peer_cert.as_deref(),
        Some(self_signed_der_of(run, ossl_key).as_slice())
    );
    let km = run.keying_material.as_ref().expect("dimpl keying material");
    assert!(!km.is_empty());
    assert_eq!(
        run.ossl_keying_material.as_ref(),
        Some(km),
        "same SRTP keys"
    );
    assert_eq!(run.dimpl_received, b"hello from openssl");
    assert_eq!(run.ossl_received, b"hello from dimpl");
}

/// The DER dimpl reported, checked to carry OpenSSL's public key (the
/// certificate itself is made per run).
fn self_signed_der_of(run: &Run, ossl_key: &PKey<Private>) -> Vec<u8> {
    let der = run.peer_cert.clone().expect("peer certificate");
    let cert = X509::from_der(&der).unwrap();
    assert!(cert.public_key().unwrap().public_eq(ossl_key));
    der
}

#[test]
fn dimpl_server_accepts_rsa_client_pkcs1_sha256() {
    let key = rsa_key(2048);
    let run = run(false, &key, "RSA+SHA256:ECDSA+SHA256");
    assert_connected(&run, 0x0401, &key);
}

#[test]
fn dimpl_server_accepts_rsa_client_pss_sha256() {
    let key = rsa_key(2048);
    let run = run(false, &key, "rsa_pss_rsae_sha256:ECDSA+SHA256");
    assert_connected(&run, 0x0804, &key);
}

#[test]
fn dimpl_server_accepts_rsa_client_pss_sha512() {
    let key = rsa_key(2048);
    let run = run(false, &key, "rsa_pss_rsae_sha512:ECDSA+SHA256");
    assert_connected(&run, 0x0806, &key);
}

#[test]
fn dimpl_client_accepts_rsa_server_pkcs1_sha256() {
    let key = rsa_key(2048);
    let run = run(true, &key, "RSA+SHA256:ECDSA+SHA256");
    assert_connected(&run, 0x0401, &key);
}

#[test]
fn dimpl_client_accepts_rsa_server_pss_sha256() {
    let key = rsa_key(2048);
    let run = run(true, &key, "rsa_pss_rsae_sha256:ECDSA+SHA256");
    assert_connected(&run, 0x0804, &key);
}

#[test]
fn dimpl_client_accepts_rsa_server_pkcs1_sha384() {
    let key = rsa_key(2048);
    let run = run(true, &key, "RSA+SHA384:ECDSA+SHA256");
    assert_connected(&run, 0x0501, &key);
}

#[test]
fn dimpl_server_refuses_small_rsa_key_in_words() {
    let key = rsa_key(1024);
    let run = run(false, &key, "RSA+SHA256:ECDSA+SHA256");
    let error = run.dimpl_error.expect("dimpl refuses a 1024-bit key");
    assert!(error.contains("1024 bits"), "{error}");
    assert!(!run.dimpl_connected);
}

#[test]
fn dimpl_client_refuses_small_rsa_key_in_words() {
    let key = rsa_key(1024);
    let run = run(true, &key, "RSA+SHA256:ECDSA+SHA256");
    let error = run.dimpl_error.expect("dimpl refuses a 1024-bit key");
    assert!(error.contains("1024 bits"), "{error}");
    assert!(!run.dimpl_connected);
}

fn verify(cert: &X509, data: &[u8], sig: &[u8], wire: u16) -> Result<(), String> {
    let provider = dimpl::crypto::aws_lc_rs::default_provider();
    provider
        .signature_verification
        .verify_signature(
            &cert.to_der().unwrap(),
            data,
            sig,
            HashAlgorithm::from_u8((wire >> 8) as u8),
            SignatureAlgorithm::from_u8(wire as u8),
        )
        .map_err(|e| e.to_string())
}

fn rsa_sign(key: &PKey<Private>, data: &[u8], md: MessageDigest, pss: bool) -> Vec<u8> {
    let mut signer = Signer::new(md, key).unwrap();
    if pss {
        signer.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        signer
            .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
            .unwrap();
    }
    signer.update(data).unwrap();
    signer.sign_to_vec().unwrap()
}

#[test]
fn verifier_checks_every_rsa_scheme_and_says_why_it_refuses() {
    let key = rsa_key(2048);
    let cert = self_signed(&key);
    let data = b"client_random || server_random || params";
    let schemes = [
        (0x0401, MessageDigest::sha256(), false),
        (0x0501, MessageDigest::sha384(), false),
        (0x0601, MessageDigest::sha512(), false),
        (0x0804, MessageDigest::sha256(), true),
        (0x0805, MessageDigest::sha384(), true),
        (0x0806, MessageDigest::sha512(), true),
    ];
    for (wire, md, pss) in schemes {
        let mut sig = rsa_sign(&key, data, md, pss);
        assert_eq!(verify(&cert, data, &sig, wire), Ok(()), "{wire:#06x}");
        let last = sig.len() - 1;
        sig[last] ^= 1;
        let error = verify(&cert, data, &sig, wire).unwrap_err();
        assert!(error.contains("does not verify"), "{error}");
    }

    let sig = rsa_sign(&key, data, MessageDigest::sha512(), true);
    let error = verify(&cert, data, &sig, 0x0806)
        .and(verify(&cert, b"other data", &sig, 0x0806))
        .unwrap_err();
    assert_eq!(
        error,
        "peer's RSA_PSS_RSAE_SHA512 signature does not verify with its 2048-bit RSA key"
    );

    // A PKCS#1 signature presented as RSA-PSS does not verify either.
    let pkcs1 = rsa_sign(&key, data, MessageDigest::sha256(), false);
    assert!(verify(&cert, data, &pkcs1, 0x0804).is_err());

    // An RSA scheme with an EC certificate.
    let ec = ec_key();
    let ec_cert = self_signed(&ec);
    let error = verify(&ec_cert, data, &pkcs1, 0x0401).unwrap_err();
    assert_eq!(
        error,
        "peer signed with RSA_PKCS1_SHA256 but its certificate has no RSA key for it"
    );
}
