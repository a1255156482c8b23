//! Encryption of bundle contents to their receivers (`docs/FORMAT.md`,
//! "Encrypted segments").
//!
//! ferry makes no cryptography of its own: every byte is encrypted with
//! [age](https://age-encryption.org/v1) (the `age` crate of the rage project),
//! to X25519 recipients. Each node has an encryption identity beside its
//! signing key:
//!
//! - the secret, `HOME/encryption.key`, holds `AGE-SECRET-KEY-1…` and a
//!   newline, readable by its owner only;
//! - the public half (the *recipient*) is written `age1…` and travels with
//!   the signing key in `ferry key export` and `ferry trust add`.
//!
//! Signatures and hashes cover the encrypted bytes, so relays check, merge
//! and split encrypted bundles without any key.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;

pub use age::x25519::{Identity, Recipient};

use crate::keys::{KeyError, NodeId};

/// The file in a node's home that holds its encryption secret.
pub const SECRET_FILE: &str = "encryption.key";
/// Where replaced encryption secrets are kept (they still open bundles that
/// were encrypted to them before the change).
pub const RETIRED_DIR: &str = "retired-encryption";

/// Parses an encryption key (`age1…`, surrounding whitespace ignored).
pub fn parse_recipient(s: &str) -> Result<Recipient, KeyError> {
    s.trim().parse::<Recipient>().map_err(|_| KeyError::BadEncryptionKey(s.to_owned()))
}

/// A fresh identity from the operating system's random source.
pub fn generate() -> Identity {
    Identity::generate()
}

/// The text of a secret file: the identity and a newline.
pub fn format_identity(id: &Identity) -> String {
    format!("{}\n", id.to_string().expose_secret())
}

/// Parses a secret file's text.
pub fn parse_identity(text: &str, path: &Path) -> Result<Identity, KeyError> {
    text.trim().parse::<Identity>().map_err(|_| KeyError::BadSecretKey(path.to_path_buf()))
}

/// A secret file that other users of the computer can read (Unix): refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "the secret key file {} can be read by other users of this computer (mode {mode:03o}); whoever copies it can \
     sign or read this node's bundles. Make it private with `chmod 600 {}` and run the command again",
    path.display(),
    path.display()
)]
pub struct ExposedSecret {
    pub path: PathBuf,
    pub mode: u32,
}

/// Refuses a secret file whose permissions let others than its owner in.
pub fn check_private(path: &Path) -> Result<(), ExposedSecret> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ExposedSecret { path: path.to_path_buf(), mode });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Why an encrypted part could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// This node holds none of the identities it was encrypted to.
    #[error("not encrypted to this node")]
    NotARecipient,
    /// The encrypted bytes are not what was encrypted (changed, cut, forged).
    #[error("the encrypted bytes do not decrypt: {0}")]
    Broken(String),
}

impl From<age::DecryptError> for OpenError {
    fn from(e: age::DecryptError) -> Self {
        match e {
            age::DecryptError::NoMatchingKeys => OpenError::NotARecipient,
            other => OpenError::Broken(other.to_string()),
        }
    }
}

/// The identities a node decrypts with: its current one first, then those
/// it replaced (`ferry key add-encryption --replace`).
#[derive(Clone, Default)]
pub struct Keyring {
    /// The node these identities are of.
    pub node: Option<NodeId>,
    identities: Vec<Identity>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({:?}, {} identities)", self.node, self.identities.len())
    }
}

impl Keyring {
    pub fn new(node: Option<NodeId>, identities: Vec<Identity>) -> Keyring {
        Keyring { node, identities }
    }

    /// A keyring that opens nothing (a relay's view).
    pub fn none() -> Keyring {
        Keyring::default()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    fn identities(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.identities.iter().map(|i| i as &dyn age::Identity)
    }

    /// Decrypts a whole (small) age file.
    pub fn open_bytes(&self, ciphertext: &[u8]) -> Result<Vec<u8>, OpenError> {
        if self.identities.is_empty() {
            return Err(OpenError::NotARecipient);
        }
        let mut r = age::Decryptor::new_buffered(ciphertext)?.decrypt(self.identities())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| OpenError::Broken(e.to_string()))?;
        Ok(out)
    }

    /// A reader of the plaintext of the age file `r` holds. Every 64 KiB
    /// chunk is authenticated before any byte of it is returned.
    pub fn open_stream<R: Read>(&self, r: R) -> Result<age::stream::StreamReader<R>, OpenError> {
        if self.identities.is_empty() {
            return Err(OpenError::NotARecipient);
        }
        Ok(age::Decryptor::new(r)?.decrypt(self.identities())?)
    }
}

fn encryptor(recipients: &[Recipient]) -> io::Result<age::Encryptor> {
    age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Encrypts `plaintext` (small) to `recipients` as one age file.
pub fn seal_bytes(recipients: &[Recipient], plaintext: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + 200 * recipients.len() + 100);
    let mut w = encryptor(recipients)?.wrap_output(&mut out)?;
    w.write_all(plaintext)?;
    w.finish()?;
    Ok(out)
}

/// A writer that encrypts what it is given to `recipients`, as one age file
/// into `w`; call `finish()` on it at the end.
pub fn seal_stream<W: Write>(recipients: &[Recipient], w: W) -> io::Result<age::stream::StreamWriter<W>> {
    encryptor(recipients)?.wrap_output(w)
}

/// The identity in `path`, refused when others can read it.
pub fn load_identity(path: &Path) -> Result<Option<Identity>, LoadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoadError::Io { path: path.to_path_buf(), source }),
    };
    check_private(path)?;
    Ok(Some(parse_identity(&text, path)?))
}

/// Why an encryption secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Exposed(#[from] ExposedSecret),
    #[error(transparent)]
    Key(#[from] KeyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_for_a_recipient() {
        let (a, b) = (generate(), generate());
        let sealed = seal_bytes(&[a.to_public()], b"survey_household").expect("seal");
        assert!(!sealed.windows(16).any(|w| w == b"survey_household"));
        let ring = Keyring::new(None, vec![a.clone()]);
        assert_eq!(ring.open_bytes(&sealed).expect("open"), b"survey_household");
        let other = Keyring::new(None, vec![b]);
        assert!(matches!(other.open_bytes(&sealed), Err(OpenError::NotARecipient)));
        assert!(matches!(Keyring::none().open_bytes(&sealed), Err(OpenError::NotARecipient)));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(ring.open_bytes(&flipped), Err(OpenError::Broken(_))));
    }

    #[test]
    fn key_texts_round_trip_and_bad_ones_are_named() {
        let id = generate();
        let text = format_identity(&id);
        assert!(text.starts_with("AGE-SECRET-KEY-1") && text.ends_with('\n'));
        let back = parse_identity(&text, Path::new("k")).expect("parse");
        assert_eq!(back.to_public().to_string(), id.to_public().to_string());
        let r = parse_recipient(&format!("  {} ", id.to_public())).expect("recipient");
        assert_eq!(r.to_string(), id.to_public().to_string());
        assert!(matches!(parse_recipient("ferry-ed25519:abc"), Err(KeyError::BadEncryptionKey(_))));
        assert!(parse_identity("AGE-SECRET-KEY-1XYZ", Path::new("k")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SECRET_FILE);
        crate::fsutil::create_private(&path, format_identity(&generate()).as_bytes()).expect("write");
        assert!(load_identity(&path).expect("private").is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let Err(e) = load_identity(&path) else { panic!("a secret readable by others was loaded") };
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(load_identity(&dir.path().join("missing")).expect("none").is_none());
    }
}
