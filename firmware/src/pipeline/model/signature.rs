//! Ed25519 signatures of model bundles and calibration files.
//!
//! A bundle's `manifest.json` holds the sha256 of every file of the bundle, which
//! [`Bundle::load`](super::bundle::Bundle::load) checks; signing the manifest's bytes
//! therefore signs the whole bundle. The signature sits beside the signed file, in
//! `<file>.sig` (`manifest.json.sig`, `calibration.json.sig`):
//!
//! ```json
//! {"schema": "caer.signature.v1", "algorithm": "ed25519",
//!  "public_key": "<64 hex digits>", "signature": "<128 hex digits>"}
//! ```
//!
//! A device with `model.trusted_keys` (several allowed: key rotation) loads only bundles
//! and calibration files signed by one of them: an unsigned file, a file signed by another
//! key, a file changed after signing or a malformed signature file is refused with the
//! reason. The file is read once, and the bytes verified are the bytes parsed.
//! Keys are made and files signed by `caer-fleet bundle keygen` / `bundle sign`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

/// `schema` of a signature file.
pub const SIGNATURE_SCHEMA: &str = "caer.signature.v1";
/// Largest signature file read (it is about 250 bytes).
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// An Ed25519 public key, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bytes = unhex(text.trim())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                "must be an Ed25519 public key: 64 hex digits (caer-fleet bundle keygen prints it)"
                    .to_string()
            })?;
        let mut key = [0; 32];
        key.copy_from_slice(&bytes);
        Ok(PublicKey(key))
    }
}

/// Lowercase hex, as keys and signatures are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string; none if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The contents of a `.sig` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always [`SIGNATURE_SCHEMA`].
    pub schema: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key, hex.
    pub public_key: String,
    /// The signature of the signed file's bytes, hex.
    pub signature: String,
}

/// Why a signed file is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `.sig` file, while `model.trusted_keys` requires one.
    #[error("{} is not signed ({} is missing) and model.trusted_keys requires a signature", path.display(), signature_path(path).display())]
    Unsigned {
        /// The signed file.
        path: PathBuf,
    },
    /// The `.sig` file cannot be read or parsed.
    #[error("{}: {reason}", signature_path(path).display())]
    Malformed {
        /// The signed file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signed by a key that is not in `model.trusted_keys`.
    #[error("{} is signed by key {key}, which is not in model.trusted_keys", path.display())]
    UntrustedKey {
        /// The signed file.
        path: PathBuf,
        /// The signer's key.
        key: PublicKey,
    },
    /// The signature does not match the file: changed after signing, or forged.
    #[error("{}: the signature does not match its contents (changed after signing, or not signed by the key it names)", path.display())]
    BadSignature {
        /// The signed file.
        path: PathBuf,
    },
    /// A private key that is not an Ed25519 PKCS#8 document.
    #[error("not an Ed25519 private key (PKCS#8): {0}")]
    PrivateKey(String),
}

/// `<file>.sig`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Checks that `bytes` (the contents of `file`) carry a valid signature by one of
/// `trusted`, from `<file>.sig`.
pub fn verify(file: &Path, bytes: &[u8], trusted: &[PublicKey]) -> Result<(), SignatureError> {
    let sig_path = signature_path(file);
    let data = match crate::pipeline::files::read_capped(&sig_path, MAX_SIGNATURE_BYTES) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignatureError::Unsigned {
                path: file.to_owned(),
            })
        }
        Err(e) => {
            return Err(SignatureError::Malformed {
                path: file.to_owned(),
                reason: format!("cannot read: {e}"),
            })
        }
    };
    verify_bytes(file, &data, bytes, trusted)
}

/// [`verify`] with the signature file's contents at hand (`signature`, e.g. received with a
/// bundle offer); `file` names the signed file in messages.
pub fn verify_bytes(
    file: &Path,
    signature: &[u8],
    bytes: &[u8],
    trusted: &[PublicKey],
) -> Result<(), SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed {
        path: file.to_owned(),
        reason,
    };
    if signature.len() as u64 > MAX_SIGNATURE_BYTES {
        return Err(malformed(format!(
            "is {} bytes; a signature file is at most {MAX_SIGNATURE_BYTES}",
            signature.len()
        )));
    }
    let parsed: SignatureFile = serde_json::from_slice(signature)
        .map_err(|e| malformed(format!("not a signature file: {e}")))?;
    if parsed.schema != SIGNATURE_SCHEMA || parsed.algorithm != "ed25519" {
        return Err(malformed(format!(
            "schema {:?}, algorithm {:?}; expected {SIGNATURE_SCHEMA:?}, \"ed25519\"",
            parsed.schema, parsed.algorithm
        )));
    }
    let key: PublicKey = parsed
        .public_key
        .parse()
        .map_err(|e| malformed(format!("public_key {e}")))?;
    if !trusted.contains(&key) {
        return Err(SignatureError::UntrustedKey {
            path: file.to_owned(),
            key,
        });
    }
    let signature = unhex(&parsed.signature)
        .filter(|s| s.len() == 64)
        .ok_or_else(|| malformed("signature must be 128 hex digits".into()))?;
    UnparsedPublicKey::new(&ED25519, key.0)
        .verify(bytes, &signature)
        .map_err(|_| SignatureError::BadSignature {
            path: file.to_owned(),
        })
}

/// A new Ed25519 private key (PKCS#8 v2 document) and its public key.
pub fn generate_key() -> Result<(Vec<u8>, PublicKey), SignatureError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| SignatureError::PrivateKey(e.to_string()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| SignatureError::PrivateKey(e.to_string()))?;
    let public = public_key_of(&pair);
    Ok((pkcs8.as_ref().to_vec(), public))
}

fn public_key_of(pair: &Ed25519KeyPair) -> PublicKey {
    let mut key = [0; 32];
    key.copy_from_slice(pair.public_key().as_ref());
    PublicKey(key)
}

/// Signs `bytes` with the private key `pkcs8`.
pub fn sign(bytes: &[u8], pkcs8: &[u8]) -> Result<SignatureFile, SignatureError> {
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| SignatureError::PrivateKey(e.to_string()))?;
    Ok(SignatureFile {
        schema: SIGNATURE_SCHEMA.into(),
        algorithm: "ed25519".into(),
        public_key: public_key_of(&pair).to_string(),
        signature: hex(pair.sign(bytes).as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(dir: &Path, content: &[u8], pkcs8: &[u8]) -> PathBuf {
        let file = dir.join("manifest.json");
        std::fs::write(&file, content).unwrap();
        let sig = sign(content, pkcs8).unwrap();
        std::fs::write(signature_path(&file), serde_json::to_vec(&sig).unwrap()).unwrap();
        file
    }

    #[test]
    fn only_the_signed_bytes_by_a_trusted_key_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (pkcs8, public) = generate_key().unwrap();
        let (_, other) = generate_key().unwrap();
        let file = signed(dir.path(), b"{\"a\": 1}", &pkcs8);
        verify(&file, b"{\"a\": 1}", &[other, public]).unwrap();
        assert!(matches!(
            verify(&file, b"{\"a\": 2}", &[public]),
            Err(SignatureError::BadSignature { .. })
        ));
        assert!(matches!(
            verify(&file, b"{\"a\": 1}", &[other]),
            Err(SignatureError::UntrustedKey { key, .. }) if key == public
        ));
        std::fs::write(signature_path(&file), b"{\"schema\": 1}").unwrap();
        assert!(matches!(
            verify(&file, b"{\"a\": 1}", &[public]),
            Err(SignatureError::Malformed { .. })
        ));
        std::fs::remove_file(signature_path(&file)).unwrap();
        let unsigned = verify(&file, b"{\"a\": 1}", &[public]).unwrap_err();
        assert!(matches!(unsigned, SignatureError::Unsigned { .. }));
        assert!(unsigned
            .to_string()
            .contains("manifest.json.sig is missing"));
    }

    #[test]
    fn a_signature_naming_a_trusted_key_but_made_by_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (pkcs8, _) = generate_key().unwrap();
        let (_, trusted) = generate_key().unwrap();
        let file = signed(dir.path(), b"x", &pkcs8);
        let mut sig: SignatureFile =
            serde_json::from_slice(&std::fs::read(signature_path(&file)).unwrap()).unwrap();
        sig.public_key = trusted.to_string();
        std::fs::write(signature_path(&file), serde_json::to_vec(&sig).unwrap()).unwrap();
        assert!(matches!(
            verify(&file, b"x", &[trusted]),
            Err(SignatureError::BadSignature { .. })
        ));
    }

    #[test]
    fn public_keys_are_64_hex_digits() {
        let (_, key) = generate_key().unwrap();
        assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
        assert!("abc".parse::<PublicKey>().is_err());
        assert!("zz".repeat(32).parse::<PublicKey>().is_err());
    }
}
