//! A node home's files as another program or a damaged disk could leave
//! them: `node.json`, `trust.json` (then every signer looked up, as
//! verification does), `secret.key`, `encryption.key`, and public key text.
#![no_main]

use ferry::keys::{self, Role, TrustStore};
use ferry::node::NodeInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<NodeInfo>(data);
    if let Ok(trust) = serde_json::from_slice::<TrustStore>(data) {
        for k in &trust.keys {
            for role in [Role::Origin, Role::Relay] {
                let _ = trust.signer(&k.node, role);
            }
            let _ = trust.name_of(&k.node);
            let _ = trust.recipient(&k.name);
        }
        let mut t = trust.clone();
        if let Some(k) = trust.keys.first() {
            let _ = t.revoke(&k.name);
        }
        let _ = serde_json::to_vec_pretty(&t);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keys::parse_secret_key(text, std::path::Path::new("secret.key"));
        if let Ok(k) = keys::parse_public_key(text) {
            assert_eq!(keys::parse_public_key(&keys::format_public_key(&k)).ok(), Some(k));
        }
        let _ = keys::decode_signature(text);
        // Encryption keys (issue 14): the secret file and the public `age1…` text.
        let _ = ferry::crypt::parse_identity(text, std::path::Path::new("encryption.key"));
        if let Ok(r) = ferry::crypt::parse_recipient(text) {
            assert_eq!(ferry::crypt::parse_recipient(&r.to_string()).map(|x| x.to_string()).ok(), Some(r.to_string()));
        }
    }
});
