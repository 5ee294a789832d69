//! Cheap DTLS public-key operations for fuzz builds only (`cfg(fuzzing)`,
//! which cargo-fuzz sets; never in a test or release build).
//!
//! A DTLS handshake's key exchange and signatures cost about 3 M
//! instructions per side, more than everything else a join does, so the
//! bodies that connect real peers (`core_ops`, `sdp_offer`) spent most of
//! their time in aws-lc. As BoringSSL's fuzzer mode does, this provider
//! keeps every message and state of the handshake but replaces the
//! arithmetic:
//!
//! - **Key exchange:** the public key is random bytes of the group's real
//!   length and the private key is the same bytes; the shared secret is
//!   the two keys XORed, so both sides agree. A peer key of the wrong length
//!   is refused as aws-lc refuses it.
//! - **Signatures:** signing writes one fixed value. A signature equal to it
//!   is accepted; any other goes to the real aws-lc verifier, so a mutated
//!   or foreign signature is still checked (and refused).
//!
//! The record layer (AES-GCM), hashes, PRF and SRTP keys stay real.

use dimpl::crypto::{
    ActiveKeyExchange, Buf, CryptoProvider, HashAlgorithm, KeyProvider, NamedGroup,
    SignatureAlgorithm, SignatureVerifier, SigningKey, SupportedKxGroup,
};
use dimpl::CryptoError;

/// The signature every fake signing key writes: a well-formed DER
/// `ECDSA-Sig-Value` (r = 1, s = 1).
const FAKE_SIGNATURE: [u8; 8] = [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];

/// aws-lc's dimpl provider with the key exchange and signatures above.
pub fn dimpl_provider() -> CryptoProvider {
    CryptoProvider {
        kx_groups: &KX_GROUPS,
        signature_verification: &VERIFIER,
        key_provider: &KEYS,
        ..dimpl::crypto::aws_lc_rs::default_provider()
    }
}

#[derive(Debug)]
struct FakeGroup(NamedGroup);

static X25519: FakeGroup = FakeGroup(NamedGroup::X25519);
static P256: FakeGroup = FakeGroup(NamedGroup::Secp256r1);
static P384: FakeGroup = FakeGroup(NamedGroup::Secp384r1);
static KX_GROUPS: [&dyn SupportedKxGroup; 3] = [&X25519, &P256, &P384];

impl FakeGroup {
    /// (public key length, shared secret length) of the real group.
    fn lengths(&self) -> (usize, usize) {
        match self.0 {
            NamedGroup::Secp256r1 => (65, 32),
            NamedGroup::Secp384r1 => (97, 48),
            _ => (32, 32),
        }
    }
}

impl SupportedKxGroup for FakeGroup {
    fn name(&self) -> NamedGroup {
        self.0
    }

    fn start_exchange(&self, mut buf: Buf) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let (len, secret) = self.lengths();
        buf.clear();
        // Drawn from the generator the fuzz body seeds, so an input runs
        // the same way every time.
        for _ in 0..len {
            buf.push(fastrand::u8(..));
        }
        if len > secret {
            buf.as_mut()[0] = 0x04; // an uncompressed point, as on the wire
        }
        Ok(Box::new(FakeExchange {
            group: self.0,
            public: buf,
            secret,
        }))
    }
}

#[derive(Debug)]
struct FakeExchange {
    group: NamedGroup,
    public: Buf,
    secret: usize,
}

impl ActiveKeyExchange for FakeExchange {
    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn complete(self: Box<Self>, peer_pub: &[u8], out: &mut Buf) -> Result<(), CryptoError> {
        if peer_pub.len() != self.public.len() {
            return Err(CryptoError::InvalidPublicKey(self.group));
        }
        let skip = self.public.len() - self.secret;
        out.clear();
        for (a, b) in self.public[skip..].iter().zip(&peer_pub[skip..]) {
            out.push(a ^ b);
        }
        Ok(())
    }

    fn group(&self) -> NamedGroup {
        self.group
    }
}

#[derive(Debug)]
struct FakeKeys;
static KEYS: FakeKeys = FakeKeys;

impl KeyProvider for FakeKeys {
    fn load_private_key(&self, key_der: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        // The real key, for its algorithm and hash (and to refuse what
        // aws-lc refuses); only `sign` is replaced.
        let real = dimpl::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(key_der)?;
        Ok(Box::new(FakeSigner(real)))
    }
}

#[derive(Debug)]
struct FakeSigner(Box<dyn SigningKey>);

impl SigningKey for FakeSigner {
    fn sign(
        &mut self,
        _data: &[u8],
        hash: HashAlgorithm,
        out: &mut Buf,
    ) -> Result<(), CryptoError> {
        let key_hash = self.0.hash_algorithm();
        if hash != key_hash {
            // As the real key answers a hash it is not locked to.
            return Err(CryptoError::SigningKeyHashMismatch {
                key_hash,
                requested: hash,
            });
        }
        out.clear();
        out.extend_from_slice(&FAKE_SIGNATURE);
        Ok(())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }

    fn hash_algorithm(&self) -> HashAlgorithm {
        self.0.hash_algorithm()
    }

    fn supported_hash_algorithms(&self) -> &[HashAlgorithm] {
        self.0.supported_hash_algorithms()
    }
}

#[derive(Debug)]
struct FakeVerifier;
static VERIFIER: FakeVerifier = FakeVerifier;

impl SignatureVerifier for FakeVerifier {
    fn verify_signature(
        &self,
        cert_der: &[u8],
        data: &[u8],
        signature: &[u8],
        hash_alg: HashAlgorithm,
        sig_alg: SignatureAlgorithm,
    ) -> Result<(), CryptoError> {
        if signature == FAKE_SIGNATURE {
            return Ok(());
        }
        dimpl::crypto::aws_lc_rs::default_provider()
            .signature_verification
            .verify_signature(cert_der, data, signature, hash_alg, sig_alg)
    }
}
