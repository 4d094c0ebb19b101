//! `caer-fleet bundle keygen | sign | verify`: the operator's side of signed bundles and
//! calibration files (the format and the device's check: `caer::pipeline::model::signature`).
//!
//! The private key file holds the Ed25519 PKCS#8 document as hex, created with mode 0600 and
//! never overwritten. Signing a bundle directory signs its `manifest.json`, which holds the
//! sha256 of every other file; signing a file (a `calibration.json`) signs its bytes.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use caer::pipeline::model::bundle::{Bundle, MANIFEST_FILE};
use caer::pipeline::model::signature::{self, PublicKey};

use crate::error::FleetError;

fn read(path: &Path) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|source| FleetError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The file a signature covers: `manifest.json` of a bundle directory, or the file itself.
pub fn signed_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(MANIFEST_FILE)
    } else {
        path.to_path_buf()
    }
}

/// Writes a new private key to `out` (refusing to overwrite one) and returns its public key.
pub fn keygen(out: &Path) -> Result<PublicKey, FleetError> {
    let (pkcs8, public) =
        signature::generate_key().map_err(|e| FleetError::Usage(e.to_string()))?;
    let text = signature::hex(&pkcs8);
    let write = |source| FleetError::Write {
        what: out.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(write)?;
    file.write_all(format!("{text}\n").as_bytes())
        .map_err(write)?;
    Ok(public)
}

/// Signs `path` (a bundle directory or a file) with the private key in `key`; a bundle is
/// loaded first, so that a bundle whose files do not match its manifest is never signed.
/// Returns the signature file written.
pub fn sign(key: &Path, path: &Path) -> Result<(PathBuf, PublicKey), FleetError> {
    let text = String::from_utf8_lossy(&read(key)?).trim().to_string();
    let pkcs8 = signature::unhex(&text).ok_or_else(|| {
        FleetError::Usage(format!(
            "{}: not a key written by `bundle keygen`",
            key.display()
        ))
    })?;
    if path.is_dir() {
        Bundle::load(path).map_err(|e| FleetError::Usage(format!("not signed: {e}")))?;
    }
    let file = signed_file(path);
    let sig =
        signature::sign(&read(&file)?, &pkcs8).map_err(|e| FleetError::Usage(e.to_string()))?;
    let public: PublicKey = sig.public_key.parse().map_err(FleetError::Usage)?;
    let out = signature::signature_path(&file);
    let json = serde_json::to_vec_pretty(&sig).expect("a signature serialises");
    std::fs::write(&out, json).map_err(|source| FleetError::Write {
        what: out.display().to_string(),
        source,
    })?;
    Ok((out, public))
}

/// Checks `path` as a device with `trusted` keys would.
pub fn verify(trusted: &[String], path: &Path) -> Result<(), FleetError> {
    let keys = trusted
        .iter()
        .map(|k| {
            k.parse::<PublicKey>()
                .map_err(|e| FleetError::Usage(format!("--trusted {k:?} {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if path.is_dir() {
        Bundle::load_verified(path, &keys).map_err(|e| FleetError::Usage(e.to_string()))?;
    } else {
        signature::verify(path, &read(path)?, &keys)
            .map_err(|e| FleetError::Usage(e.to_string()))?;
    }
    Ok(())
}
