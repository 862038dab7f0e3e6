//! Secrets of a data directory and the primitives that use them.
//!
//! - `secrets.json` (mode 0600) holds the data-encryption key (XChaCha20-Poly1305, for upstream
//!   credentials at rest), the admin-session signing key and, unless `ENCRYPTION_KEY` is
//!   configured, the key-hash secret.
//! - `tls_client_config`: TLS for crs's own connections (upstreams, SMTP), and how the
//!   servers' certificates are checked.
//! - API keys are stored as `sha256(plaintext + key_hash_secret)` in lowercase hex: exactly v1's
//!   scheme, so v1 keys keep working once imported with the same secret.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const SECRETS_VERSION: u32 = 1;
/// Prefix of values encrypted by crs, so a plaintext value is never mistaken for ciphertext.
pub const ENC_PREFIX: &str = "enc1:";

#[derive(Serialize, Deserialize)]
struct SecretsFile {
    version: u32,
    /// 32 bytes, hex.
    data_key: String,
    /// 64 bytes, hex: HMAC key for admin session tokens.
    session_key: String,
    /// v1's ENCRYPTION_KEY equivalent: appended to API keys before hashing.
    key_hash_secret: String,
    /// Where key_hash_secret came from: "generated" or "ENCRYPTION_KEY".
    #[serde(default)]
    key_hash_source: String,
}

/// The loaded secrets. Debug output never shows key material.
pub struct Secrets {
    cipher: XChaCha20Poly1305,
    pub session_key: Vec<u8>,
    key_hash_secret: String,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(..)")
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Secrets {
    /// Load `secrets.json` from the data dir, creating it on first start.
    ///
    /// `encryption_key` is the configured v1 `ENCRYPTION_KEY`. On first start it becomes the
    /// key-hash secret; later it must match the stored one, because a different secret would
    /// silently invalidate every existing API key.
    pub fn load_or_create(path: &Path, encryption_key: Option<&str>) -> Result<(Self, bool)> {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let file: SecretsFile = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            if file.version > SECRETS_VERSION {
                bail!(
                    "{} was written by a newer crs (version {}); upgrade crs",
                    path.display(),
                    file.version
                );
            }
            if let Some(k) = encryption_key
                && k != file.key_hash_secret
            {
                bail!(
                    "ENCRYPTION_KEY differs from the key-hash secret this data directory was created with \
                     ({}); existing API keys would stop authenticating. Unset ENCRYPTION_KEY or use the original value",
                    path.display()
                );
            }
            return Ok((Self::from_file(&file)?, false));
        }
        let file = SecretsFile {
            version: SECRETS_VERSION,
            data_key: random_hex(32),
            session_key: random_hex(64),
            key_hash_secret: encryption_key
                .map(str::to_owned)
                .unwrap_or_else(|| random_hex(16)),
            key_hash_source: if encryption_key.is_some() {
                "ENCRYPTION_KEY".into()
            } else {
                "generated".into()
            },
        };
        write_private(path, serde_json::to_string_pretty(&file)?.as_bytes())?;
        Ok((Self::from_file(&file)?, true))
    }

    /// Replace the key-hash secret stored in the data dir (used by `crs import`, which must
    /// adopt the v1 deployment's ENCRYPTION_KEY for its keys to keep working).
    pub fn set_key_hash_secret(path: &Path, secret: &str) -> Result<()> {
        let text = std::fs::read_to_string(path)?;
        let mut file: SecretsFile = serde_json::from_str(&text)?;
        file.key_hash_secret = secret.to_owned();
        file.key_hash_source = "ENCRYPTION_KEY".into();
        write_private(path, serde_json::to_string_pretty(&file)?.as_bytes())
    }

    fn from_file(f: &SecretsFile) -> Result<Self> {
        let data_key = hex::decode(&f.data_key).context("secrets: data_key is not hex")?;
        if data_key.len() != 32 {
            bail!("secrets: data_key must be 32 bytes");
        }
        let session_key = hex::decode(&f.session_key).context("secrets: session_key is not hex")?;
        if session_key.len() < 32 {
            bail!("secrets: session_key must be at least 32 bytes");
        }
        Ok(Secrets {
            cipher: XChaCha20Poly1305::new_from_slice(&data_key).expect("32-byte key"),
            session_key,
            key_hash_secret: f.key_hash_secret.clone(),
        })
    }

    /// For tests and tools: secrets from explicit material.
    pub fn from_parts(data_key: [u8; 32], session_key: Vec<u8>, key_hash_secret: &str) -> Self {
        Secrets {
            cipher: XChaCha20Poly1305::new_from_slice(&data_key).expect("32-byte key"),
            session_key,
            key_hash_secret: key_hash_secret.to_owned(),
        }
    }

    /// v1's API key hash: lowercase hex sha256(key + secret).
    pub fn hash_api_key(&self, key: &str) -> String {
        hex::encode(self.hash_api_key_raw(key))
    }

    pub fn hash_api_key_raw(&self, key: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update(self.key_hash_secret.as_bytes());
        h.finalize().into()
    }

    /// Encrypt a secret for storage: `enc1:` + base64(nonce || ciphertext).
    pub fn encrypt(&self, plaintext: &str) -> String {
        let nonce_bytes = random_bytes::<24>();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let ct = self
            .cipher
            .encrypt(nonce, plaintext.as_bytes())
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(24 + ct.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        format!("{ENC_PREFIX}{}", B64.encode(out))
    }

    pub fn decrypt(&self, stored: &str) -> Result<String> {
        let Some(b64) = stored.strip_prefix(ENC_PREFIX) else {
            bail!("value is not encrypted by crs");
        };
        let raw = B64.decode(b64).context("encrypted value is not base64")?;
        if raw.len() < 24 + 16 {
            bail!("encrypted value is too short");
        }
        let (nonce, ct) = raw.split_at(24);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| {
                anyhow::anyhow!("encrypted value does not decrypt with this data directory's key")
            })?;
        String::from_utf8(pt).context("decrypted value is not UTF-8")
    }

    /// A stored secret, decrypted and masked for display ("" when none or unreadable).
    pub fn masked(&self, stored: &str) -> String {
        if stored.is_empty() {
            return String::new();
        }
        self.decrypt(stored).map(|k| mask(&k)).unwrap_or_default()
    }
}

/// Compare two secrets in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Write a file readable only by its owner (0600), atomically (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Create the data directory if it is missing and keep it to its owner: the directory 0700
/// and the files crs writes in it (the store `crs.redb` and copies named after it, `secrets.*`)
/// 0600. Returns what was tightened in a directory that already existed, as
/// `"name 0755 -> 0700"` items (empty when nothing was, and for a new directory).
pub fn private_data_dir(dir: &Path) -> Result<Vec<String>> {
    let existed = dir.exists();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let mut changed = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut restrict = |path: &Path, name: &str, mode: u32| -> Result<()> {
            let meta = std::fs::symlink_metadata(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let old = meta.permissions().mode() & 0o777;
            // Symbolic links are left alone: their target is not necessarily ours.
            if meta.file_type().is_symlink() || old & !mode == 0 {
                return Ok(());
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(old & mode))
                .with_context(|| format!("restricting {} to its owner", path.display()))?;
            changed.push(format!("{name} {old:04o} -> {:04o}", old & mode));
            Ok(())
        };
        restrict(dir, ".", 0o700)?;
        for entry in std::fs::read_dir(dir)
            .with_context(|| format!("reading data directory {}", dir.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("crs.redb") || name.starts_with("secrets.") {
                restrict(&entry.path(), &name, 0o600)?;
            }
        }
    }
    if !existed {
        changed.clear();
    }
    Ok(changed)
}

/// Hash an admin password with argon2id (PHC string).
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16-byte salt encodes");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default params cannot fail")
        .to_string()
}

/// Check a password against an argon2 PHC string, or a bcrypt hash imported from v1
/// (`$2a$`/`$2b$`; the caller rehashes with argon2 after a successful login).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    if is_bcrypt(phc) {
        return bcrypt::verify(password, phc).unwrap_or(false);
    }
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

pub fn is_bcrypt(hash: &str) -> bool {
    hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")
}

/// Show the first and last few characters of a secret, for logs and UIs.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 12 {
        return "*".repeat(n.min(8));
    }
    let head: String = secret.chars().take(6).collect();
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("{head}...{tail}")
}

/// A decrypted secret held in memory. Its Debug output is masked.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", mask(&self.0))
    }
}

/// TLS settings for the connections crs makes (upstreams, SMTP): ring, the safe default
/// protocol versions, no client certificate, and servers' certificates checked by
/// `server_cert_verifier` against the system's roots plus `extra`.
pub fn tls_client_config(
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = server_cert_verifier(provider.clone(), extra)
        .context("setting up TLS certificate verification")?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// How crs checks the certificates of the servers it connects to: against the system's trust
/// store, plus `extra` roots (a private gateway's or a TLS-inspecting proxy's CA). A system
/// with no CA certificates at all (an empty container or chroot, a minimal image without a CA
/// package) gets the Mozilla roots built into crs (webpki-roots) instead, with a warning,
/// rather than a server that does not start.
fn server_cert_verifier(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> anyhow::Result<std::sync::Arc<dyn rustls::client::danger::ServerCertVerifier>> {
    use rustls_platform_verifier::Verifier;
    use std::sync::Arc;
    let system = if extra.is_empty() {
        Verifier::new(provider.clone())
    } else {
        Verifier::new_with_extra_roots(extra.clone(), provider.clone())
    };
    let error = match system {
        Ok(v) => return Ok(Arc::new(v)),
        Err(e) => e,
    };
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            error = %error,
            "no CA certificates found on this system: upstream certificates are checked against \
             the Mozilla roots built into crs (install the system's CA package or set \
             SSL_CERT_FILE to use its own)"
        )
    });
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let (_, unusable) = roots.add_parsable_certificates(extra);
    anyhow::ensure!(
        unusable == 0,
        "{unusable} extra CA certificates are not usable"
    );
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()?;
    Ok(verifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_key_hash_worked_example() {
        let s = Secrets::from_parts([0; 32], vec![0; 32], "crs-fixture-a-encryption-key-32c");
        assert_eq!(
            s.hash_api_key("cr_824ac134d15d10fdd4bbe6cb6e089d23396eb382521fa94b28bca5477d1ff010"),
            "5880fa813ff78adcf99006dd2afae80576b387131100f7d24e13703c63ac2d8b"
        );
    }

    #[test]
    fn encrypt_round_trip_and_tamper() {
        let s = Secrets::from_parts(random_bytes(), vec![1; 32], "x");
        let c = s.encrypt("sk-ant-api03-secret");
        assert!(c.starts_with("enc1:"));
        assert!(!c.contains("sk-ant"));
        assert_eq!(s.decrypt(&c).unwrap(), "sk-ant-api03-secret");
        assert_ne!(c, s.encrypt("sk-ant-api03-secret"), "fresh nonce per value");
        let mut tampered = c.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(s.decrypt(&String::from_utf8(tampered).unwrap()).is_err());
        let other = Secrets::from_parts(random_bytes(), vec![1; 32], "x");
        assert!(other.decrypt(&c).is_err());
        assert!(s.decrypt("plain").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn data_directory_is_kept_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        assert!(
            private_data_dir(&dir).unwrap().is_empty(),
            "a new directory"
        );
        assert_eq!(mode(&dir), 0o700);

        // An existing directory with looser modes is tightened; other files are left alone.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, m) in [
            ("crs.redb", 0o644),
            ("crs.redb.bak", 0o640),
            ("secrets.json", 0o600),
            ("config.toml", 0o644),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::os::unix::fs::symlink("/etc/hostname", dir.join("secrets.link")).unwrap();
        let mut changed = private_data_dir(&dir).unwrap();
        changed.sort();
        assert_eq!(
            changed,
            [
                ". 0755 -> 0700",
                "crs.redb 0644 -> 0600",
                "crs.redb.bak 0640 -> 0600"
            ]
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("crs.redb")), 0o600);
        assert_eq!(mode(&dir.join("config.toml")), 0o644);
        assert!(
            private_data_dir(&dir).unwrap().is_empty(),
            "nothing left to do"
        );
    }

    #[test]
    fn secrets_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.json");
        let (a, created) = Secrets::load_or_create(&p, None).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let enc = a.encrypt("v");
        let (b, created) = Secrets::load_or_create(&p, None).unwrap();
        assert!(!created);
        assert_eq!(b.decrypt(&enc).unwrap(), "v");
        assert_eq!(a.hash_api_key("cr_x"), b.hash_api_key("cr_x"));
        // A different ENCRYPTION_KEY later is refused rather than breaking every key.
        assert!(Secrets::load_or_create(&p, Some("other")).is_err());
    }

    #[test]
    fn encryption_key_becomes_hash_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.json");
        let (s, _) = Secrets::load_or_create(&p, Some("crs-fixture-a-encryption-key-32c")).unwrap();
        assert_eq!(
            s.hash_api_key("cr_824ac134d15d10fdd4bbe6cb6e089d23396eb382521fa94b28bca5477d1ff010"),
            "5880fa813ff78adcf99006dd2afae80576b387131100f7d24e13703c63ac2d8b"
        );
        assert!(Secrets::load_or_create(&p, Some("crs-fixture-a-encryption-key-32c")).is_ok());
    }

    #[test]
    fn passwords() {
        let h = hash_password("hunter2");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("hunter2", &h));
        assert!(!verify_password("hunter3", &h));
        assert!(!verify_password("hunter2", "garbage"));
        // v1's bcryptjs hashes (cost 10) are accepted.
        let b = bcrypt::hash("FixtureA-Admin-Pass-2024", 4).unwrap();
        assert!(is_bcrypt(&b));
        assert!(verify_password("FixtureA-Admin-Pass-2024", &b));
        assert!(!verify_password("wrong", &b));
    }

    #[test]
    fn masking() {
        assert_eq!(mask("sk-ant-api03-abcdefghijkl"), "sk-ant...ijkl");
        assert_eq!(mask("short"), "*****");
        // A stored secret is shown masked; nothing stored, or a value that does not decrypt
        // with this directory's key, shows as nothing rather than as the stored text.
        let s = Secrets::from_parts(random_bytes(), vec![1; 32], "x");
        assert_eq!(
            s.masked(&s.encrypt("sk-ant-api03-abcdefghijkl")),
            "sk-ant...ijkl"
        );
        assert_eq!(s.masked(""), "");
        assert_eq!(s.masked("sk-ant-api03-abcdefghijkl"), "");
        let other = Secrets::from_parts(random_bytes(), vec![1; 32], "x");
        assert_eq!(other.masked(&s.encrypt("sk-ant-api03-abcdefghijkl")), "");
    }
}
