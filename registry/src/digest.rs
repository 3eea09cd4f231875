//! sha256 digests in their OCI text form (`sha256:<hex>`): validation,
//! computation, and a writer that hashes what passes through it. The only
//! algorithm accepted is sha256, which is what every registry berth talks
//! to produces; anything else is refused rather than trusted unverified.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{RegistryError, Result};

/// Checks that `value` is `sha256:` followed by 64 lowercase hex digits and
/// returns the hex part.
pub fn hex_part(value: &str) -> Result<&str> {
    match value.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(RegistryError::Digest {
            value: value.to_string(),
        }),
    }
}

/// The digest of `bytes`, as `sha256:<hex>`.
pub fn of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A writer that hashes and counts every byte before passing it on.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Returns the inner writer, the digest (`sha256:<hex>`) and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        let d = of(b"x");
        assert!(hex_part(&d).is_ok());
        assert!(hex_part("sha256:abc").is_err());
        assert!(hex_part("md5:00").is_err());
        assert!(hex_part(&d.to_uppercase()).is_err());
    }
}
