//! The keyed hash behind the redaction `hash` action: HMAC-SHA256 with a configured secret, tagged with
//! the key id so that the secret can rotate.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Bytes of the MAC kept in a token: 128 bits, as hex.
const TOKEN_BYTES: usize = 16;

/// Turns values into stable pseudonyms: `hmac:<key id>:<32 hex digits>`. Equal values give equal tokens
/// under one key; without the key a token cannot be linked to a value (a plain hash of an email can be
/// reversed by hashing a list of emails).
#[derive(Clone)]
pub struct KeyedHasher {
    /// The MAC keyed once: HMAC's inner and outer padded-key blocks already compressed, so a token
    /// costs two SHA-256 blocks for a short value instead of four (cloned per token).
    keyed: Hmac<Sha256>,
    key_id: String,
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("KeyedHasher")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl KeyedHasher {
    /// A hasher with this secret and key id.
    pub fn new(key: &[u8], key_id: &str) -> KeyedHasher {
        KeyedHasher {
            // HMAC accepts keys of any length, so this cannot fail.
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
            key_id: key_id.to_owned(),
        }
    }

    /// A hasher with a random secret made now (key id `ephemeral`): tokens are stable until a restart.
    pub fn ephemeral() -> KeyedHasher {
        KeyedHasher::new(&random_key(), "ephemeral")
    }

    /// The key id written into tokens.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The token for a value.
    pub fn token(&self, value: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(6 + self.key_id.len() + 2 * TOKEN_BYTES);
        out.push_str("hmac:");
        out.push_str(&self.key_id);
        out.push(':');
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in &digest[..TOKEN_BYTES] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }
}

/// 32 random bytes: from the OS (`/dev/urandom`), else from std's per-process random hash keys (which
/// the OS seeds) mixed with the time and process id.
fn random_key() -> Vec<u8> {
    use std::io::Read;
    let mut key = vec![0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .is_ok()
    {
        return key;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = Sha256::new();
    for i in 0..4u64 {
        let mut s = std::collections::hash_map::RandomState::new().build_hasher();
        s.write_u64(i);
        h.update(s.finish().to_le_bytes());
    }
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    h.finalize().to_vec()
}
