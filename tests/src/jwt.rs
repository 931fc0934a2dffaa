//! NATS decentralized-auth credentials for tests, signed here with `nkeys` (no `nsc`): an
//! operator, an account with JetStream, a user, their JWTs, the server configuration that
//! trusts the operator (operator mode, memory resolver) and the user's creds file as `nsc`
//! writes it. The JWT format is NATS's v2: `base64url(header).base64url(claims).base64url(sig)`,
//! header `{"typ":"JWT","alg":"ed25519-nkey"}`, signed by the issuer's nkey.

use anyhow::Result;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// Base64 URL-safe without padding (RFC 4648 §5), as JWTs use.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A JWT with `claims` for `subject`, issued and signed by `issuer`.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> Result<String> {
    let claims = json!({
        "jti": format!("{:032X}", rand::random::<u128>()),
        "iat": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let head = b64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64url(serde_json::to_string(&claims)?.as_bytes());
    let signing_input = format!("{head}.{body}");
    let sig = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(format!("{signing_input}.{}", b64url(&sig)))
}

/// An operator, one account with JetStream enabled, and a user of it.
pub struct Operator {
    pub operator_jwt: String,
    /// The server's system account (JetStream needs one in operator mode).
    pub system: KeyPair,
    pub system_jwt: String,
    pub account: KeyPair,
    pub account_jwt: String,
    pub user: KeyPair,
    pub user_jwt: String,
}

impl Operator {
    pub fn new() -> Result<Operator> {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let operator_jwt = encode(
            &operator,
            &operator.public_key(),
            "coval-test-operator",
            json!({"type": "operator", "version": 2}),
        )?;
        let system_jwt = encode(
            &operator,
            &system.public_key(),
            "SYS",
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                },
                "type": "account",
                "version": 2,
            }),
        )?;
        let account_jwt = encode(
            &operator,
            &account.public_key(),
            "coval",
            json!({
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    // JetStream is enabled for an account by its storage limits.
                    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
                },
                "default_permissions": {"pub": {}, "sub": {}},
                "type": "account",
                "version": 2,
            }),
        )?;
        let user_jwt = encode(
            &account,
            &user.public_key(),
            "coval-worker",
            json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2,
            }),
        )?;
        Ok(Operator {
            operator_jwt,
            system,
            system_jwt,
            account,
            account_jwt,
            user,
            user_jwt,
        })
    }

    /// The nats-server configuration lines that trust this operator and know its account.
    pub fn server_config(&self) -> String {
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
            self.operator_jwt,
            self.system.public_key(),
            self.system.public_key(),
            self.system_jwt,
            self.account.public_key(),
            self.account_jwt
        )
    }

    /// The user's creds file, as `nsc generate creds` writes it.
    pub fn creds(&self) -> Result<String> {
        creds_file(&self.user_jwt, &self.user)
    }
}

/// A creds file holding `jwt` and the seed of `user`.
pub fn creds_file(jwt: &str, user: &KeyPair) -> Result<String> {
    let seed = user.seed().map_err(|e| anyhow::anyhow!("seed: {e}"))?;
    Ok(format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648_vectors_without_padding() {
        for (plain, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64url(plain.as_bytes()), want, "{plain}");
        }
        // The URL-safe alphabet: 0xfb 0xff -> "-_8".
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
