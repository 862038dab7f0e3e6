//! v1's secret encryption, both ways.
//!
//! Account fields: AES-256-CBC (PKCS#7) with key = scrypt(ENCRYPTION_KEY, per-type salt,
//! N=16384, r=8, p=1, 32 bytes), stored as `<32 hex IV>:<hex ciphertext>` with a fresh IV per
//! value. Bedrock differs: key = sha256(ENCRYPTION_KEY), the credentials JSON stored as
//! `{"encrypted": hex, "iv": hex}`.

use std::collections::HashMap;

use aes::Aes256;
use anyhow::{Context, Result, bail};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

type Enc = cbc::Encryptor<Aes256>;
type Dec = cbc::Decryptor<Aes256>;

/// v1's encryption with one deployment's ENCRYPTION_KEY. Derived keys are cached per salt
/// (scrypt is deliberately slow).
pub struct V1Crypto {
    password: String,
    keys: Mutex<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for V1Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("V1Crypto(..)")
    }
}

/// Whether a stored value has v1's `<iv>:<ciphertext>` shape.
pub fn looks_encrypted(v: &str) -> bool {
    match v.split_once(':') {
        Some((iv, ct)) => {
            iv.len() == 32
                && !ct.is_empty()
                && ct.len() % 32 == 0
                && iv.bytes().chain(ct.bytes()).all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

impl V1Crypto {
    pub fn new(encryption_key: &str) -> Self {
        V1Crypto {
            password: encryption_key.to_owned(),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// scrypt(ENCRYPTION_KEY, salt) as v1's `crypto.scryptSync(key, salt, 32)`.
    pub fn derived_key(&self, salt: &str) -> [u8; 32] {
        if let Some(k) = self.keys.lock().get(salt) {
            return *k;
        }
        let params = scrypt::Params::new(14, 8, 1, 32).expect("v1's scrypt parameters are valid");
        let mut out = [0u8; 32];
        scrypt::scrypt(self.password.as_bytes(), salt.as_bytes(), &params, &mut out)
            .expect("a 32-byte output is valid for scrypt");
        self.keys.lock().insert(salt.to_owned(), out);
        out
    }

    fn bedrock_key(&self) -> [u8; 32] {
        Sha256::digest(self.password.as_bytes()).into()
    }

    /// Decrypt an `<iv>:<ciphertext>` value. An empty value stays empty.
    pub fn decrypt(&self, salt: &str, stored: &str) -> Result<String> {
        if stored.is_empty() {
            return Ok(String::new());
        }
        let (iv, ct) = stored
            .split_once(':')
            .context("not v1's <iv>:<ciphertext> format")?;
        let iv = hex::decode(iv).context("IV is not hex")?;
        let ct = hex::decode(ct).context("ciphertext is not hex")?;
        if iv.len() != 16 {
            bail!("IV is not 16 bytes");
        }
        decrypt_raw(&self.derived_key(salt), &iv, &ct)
    }

    /// Encrypt as v1 does: a fresh IV, `<32 hex IV>:<hex ciphertext>`. Empty stays empty.
    pub fn encrypt(&self, salt: &str, plaintext: &str) -> String {
        if plaintext.is_empty() {
            return String::new();
        }
        let iv = crate::crypto::random_bytes::<16>();
        let ct = Enc::new(&self.derived_key(salt).into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
        format!("{}:{}", hex::encode(iv), hex::encode(ct))
    }

    /// Bedrock's `awsCredentials` object -> the credentials JSON text.
    pub fn decrypt_bedrock(&self, encrypted_hex: &str, iv_hex: &str) -> Result<String> {
        let iv = hex::decode(iv_hex).context("IV is not hex")?;
        let ct = hex::decode(encrypted_hex).context("ciphertext is not hex")?;
        if iv.len() != 16 {
            bail!("IV is not 16 bytes");
        }
        decrypt_raw(&self.bedrock_key(), &iv, &ct)
    }

    /// The credentials JSON text -> Bedrock's `{encrypted, iv}` (hex strings).
    pub fn encrypt_bedrock(&self, plaintext: &str) -> (String, String) {
        let iv = crate::crypto::random_bytes::<16>();
        let ct = Enc::new(&self.bedrock_key().into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes());
        (hex::encode(ct), hex::encode(iv))
    }
}

fn decrypt_raw(key: &[u8; 32], iv: &[u8], ct: &[u8]) -> Result<String> {
    let pt = Dec::new(key.into(), iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ct)
        .map_err(|_| anyhow::anyhow!("does not decrypt (wrong ENCRYPTION_KEY?)"))?;
    String::from_utf8(pt)
        .map_err(|_| anyhow::anyhow!("decrypts to invalid UTF-8 (wrong ENCRYPTION_KEY?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "crs-fixture-a-encryption-key-32c";

    #[test]
    fn worked_example_from_the_reference() {
        let c = V1Crypto::new(KEY);
        assert_eq!(
            hex::encode(c.derived_key("claude-console-salt")),
            "91d18731bf822bfb483fb52ca88bd86ce13d0b9d462ee37fa220037699584e71"
        );
        let stored = "9cf68abdc888536094f4236f4e97678b:c87dbcbffdba00a0c351f50e1261faf2292db278b7c1bc84b44260791d28513e8bcf79817ccc6d5b62b5b66f95f9485f";
        assert!(looks_encrypted(stored));
        assert_eq!(
            c.decrypt("claude-console-salt", stored).unwrap(),
            "sk-ant-api03-fixtureA-console-primary-0001"
        );
        assert!(c.decrypt("salt", stored).is_err(), "another type's salt");
        assert!(
            V1Crypto::new("wrong")
                .decrypt("claude-console-salt", stored)
                .is_err()
        );
    }

    #[test]
    fn round_trips() {
        let c = V1Crypto::new(KEY);
        let e = c.encrypt("droid-account-salt", "sk-droid");
        assert!(looks_encrypted(&e));
        assert_ne!(e, c.encrypt("droid-account-salt", "sk-droid"), "fresh IV");
        assert_eq!(c.decrypt("droid-account-salt", &e).unwrap(), "sk-droid");
        assert_eq!(c.encrypt("x", ""), "");
        assert_eq!(c.decrypt("x", "").unwrap(), "");
        let (ct, iv) = c.encrypt_bedrock(r#"{"accessKeyId":"AKIA"}"#);
        assert_eq!(
            c.decrypt_bedrock(&ct, &iv).unwrap(),
            r#"{"accessKeyId":"AKIA"}"#
        );
        assert!(!looks_encrypted("sk-ant-plain"));
    }
}
