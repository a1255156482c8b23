//! Streaming, strict bundle reading. Memory stays bounded whatever the
//! bundle's size: the manifest is capped, segments are read as streams.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Take};
use std::path::Path;

use ed25519_dalek::Signature;
use sha2::Digest;

use super::format::*;
use super::io::{read_block, HashingReader};
use super::BundleError;
use crate::journal::MAX_LINE;
use crate::keys;

/// Reads a bundle member by member. Construct with [`BundleReader::open`] or
/// [`BundleReader::new`]; the manifest is read and checked for form (not for
/// signatures: that is [`crate::verify`]'s job) before it returns.
pub struct BundleReader<R: Read> {
    inner: R,
    /// Opens encrypted segments ([`BundleReader::open_sealed`]).
    keyring: crate::crypt::Keyring,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature: Signature,
    descriptors: Vec<SegmentDescriptor>,
    next: usize,
    /// Unread data bytes of the current member, then its padding.
    pending: u64,
    pending_pad: usize,
}

impl BundleReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, BundleError> {
        let f = File::open(path).map_err(BundleError::Io)?;
        BundleReader::new(BufReader::with_capacity(256 << 10, f))
    }
}

/// Converts an I/O error from inside the reader stack back into the bundle
/// error it carries, or into `Truncated` for an early end of file.
pub(crate) fn from_io(e: io::Error) -> BundleError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return BundleError::Truncated;
    }
    if e.get_ref().is_some_and(|inner| inner.is::<BundleError>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(b) = inner.downcast::<BundleError>() {
                return *b;
            }
        }
        return BundleError::Truncated;
    }
    BundleError::Io(e)
}

fn to_io(e: BundleError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: Read> BundleReader<R> {
    pub fn new(mut inner: R) -> Result<Self, BundleError> {
        let manifest_len = read_header(&mut inner, MANIFEST_MEMBER, None)?;
        if manifest_len > MAX_MANIFEST {
            return Err(BundleError::Malformed(format!(
                "manifest of {manifest_len} bytes exceeds the {MAX_MANIFEST}-byte limit"
            )));
        }
        let manifest_bytes = read_member(&mut inner, manifest_len)?;
        let manifest = parse_manifest(&manifest_bytes)?;
        let sig_len = read_header(&mut inner, SIGNATURE_MEMBER, Some(86))?;
        let sig_text = read_member(&mut inner, sig_len)?;
        let signature = std::str::from_utf8(&sig_text)
            .ok()
            .and_then(keys::decode_signature)
            .ok_or_else(|| BundleError::Malformed("manifest.sig is not a base64url ed25519 signature".into()))?;
        if manifest.segments.is_empty() {
            return Err(BundleError::Malformed("the manifest lists no segments (a bundle holds at least one)".into()));
        }
        let mut descriptors = Vec::with_capacity(manifest.segments.len());
        let mut names = std::collections::HashSet::with_capacity(manifest.segments.len());
        for (i, s) in manifest.segments.iter().enumerate() {
            let d = parse_descriptor(s.descriptor.get())
                .map_err(|m| BundleError::Malformed(format!("segment {}: {m}", i + 1)))?;
            if !names.insert((d.origin.clone(), d.first_seq, d.last_seq)) {
                return Err(BundleError::Malformed(format!("segment {} is listed twice", d.member_name())));
            }
            if d.is_encrypted() && manifest.version < 2 {
                return Err(BundleError::Malformed(format!(
                    "segment {} is encrypted, which a version-1 bundle cannot hold",
                    d.member_name()
                )));
            }
            descriptors.push(d);
        }
        Ok(BundleReader {
            inner,
            keyring: crate::crypt::Keyring::none(),
            manifest,
            manifest_bytes,
            signature,
            descriptors,
            next: 0,
            pending: 0,
            pending_pad: 0,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact bytes of `manifest.json` (what the seal signs).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// The seal: the sealer's signature over the manifest.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The parsed descriptors, in manifest order.
    pub fn descriptors(&self) -> &[SegmentDescriptor] {
        &self.descriptors
    }

    /// Whether any segment is encrypted.
    pub fn has_encrypted(&self) -> bool {
        self.descriptors.iter().any(SegmentDescriptor::is_encrypted)
    }

    /// Opens the encrypted segments `keyring` can open: their private
    /// fields (schema, tables, entry length and hash) are decrypted, checked
    /// (`docs/FORMAT.md` X3) and filled into their descriptors, and their
    /// entries can then be read. Segments encrypted to other nodes stay
    /// closed ([`SegmentDescriptor::is_readable`]). Call it after the
    /// signatures were checked: the sealed fields are the origin's only if
    /// its signature holds. Returns how many segments it opened.
    pub fn open_sealed(&mut self, keyring: &crate::crypt::Keyring) -> Result<usize, BundleError> {
        self.keyring = keyring.clone();
        let mut opened = 0;
        for d in self.descriptors.iter_mut() {
            let Some(sealed) = d.encryption.as_ref().filter(|e| !e.opened).map(|e| e.sealed.clone()) else {
                continue;
            };
            let bad = |why: String| BundleError::Malformed(format!("{}: {why}", d.member_name()));
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &sealed)
                .map_err(|_| bad("its sealed fields are not base64url".into()))?;
            let plain = match keyring.open_bytes(&bytes) {
                Ok(p) => p,
                Err(crate::crypt::OpenError::NotARecipient) => continue,
                Err(crate::crypt::OpenError::Broken(why)) => {
                    return Err(bad(format!("its sealed fields do not decrypt ({why})")))
                }
            };
            let fields: PrivateFields =
                serde_json::from_slice(&plain).map_err(|e| bad(format!("its sealed fields are malformed: {e}")))?;
            if serde_json::to_vec(&fields).ok().as_deref() != Some(&plain[..]) {
                return Err(bad("its sealed fields are not in canonical form".into()));
            }
            let mut open = d.clone();
            open.schema = fields.schema;
            open.tables = fields.tables;
            open.entries_len = fields.entries_len;
            open.entries_sha256 = fields.entries_sha256;
            check_contents(&open).map_err(bad)?;
            if let Some(e) = open.encryption.as_mut() {
                e.opened = true;
            }
            *d = open;
            opened += 1;
        }
        Ok(opened)
    }

    /// Moves to the next segment member. A segment that is not read to its
    /// end is skipped unchecked.
    pub fn next_segment(&mut self) -> Result<Option<SegmentMember<'_, R>>, BundleError> {
        self.skip_rest()?;
        let Some(d) = self.descriptors.get(self.next) else { return Ok(None) };
        let name = d.member_name();
        read_header(&mut self.inner, &name, Some(d.zstd_len))?;
        self.pending = d.zstd_len;
        self.pending_pad = padding(d.zstd_len);
        let index = self.next;
        self.next += 1;
        Ok(Some(SegmentMember { reader: self, index }))
    }

    /// Checks the end of the archive: every segment member present, two zero
    /// blocks, and not one byte more.
    pub fn finish(mut self) -> Result<(), BundleError> {
        while self.next_segment()?.is_some() {}
        self.skip_rest()?;
        let mut block = [0u8; BLOCK];
        for _ in 0..2 {
            if !read_block(&mut self.inner, &mut block).map_err(from_io)? {
                return Err(BundleError::Truncated);
            }
            if block.iter().any(|&b| b != 0) {
                return Err(BundleError::Malformed("unexpected member after the last segment".into()));
            }
        }
        let mut extra = [0u8; 1];
        match self.inner.read(&mut extra).map_err(BundleError::Io)? {
            0 => Ok(()),
            _ => Err(BundleError::TrailingData),
        }
    }

    fn skip_rest(&mut self) -> Result<(), BundleError> {
        let mut sink = [0u8; 8192];
        while self.pending > 0 {
            let want = sink.len().min(self.pending as usize);
            let n = self.inner.read(&mut sink[..want]).map_err(BundleError::Io)?;
            if n == 0 {
                return Err(BundleError::Truncated);
            }
            self.pending -= n as u64;
        }
        if self.pending_pad > 0 {
            let mut pad = [0u8; BLOCK];
            let pad = &mut pad[..self.pending_pad];
            if !read_block(&mut self.inner, pad).map_err(from_io)? {
                return Err(BundleError::Truncated);
            }
            if pad.iter().any(|&b| b != 0) {
                return Err(BundleError::Malformed("non-zero bytes in tar padding".into()));
            }
            self.pending_pad = 0;
        }
        Ok(())
    }
}

/// Reads a header block and checks it is exactly the canonical header for
/// `name`; returns the member's size. `size`, when given, must match.
fn read_header<R: Read>(r: &mut R, name: &str, size: Option<u64>) -> Result<u64, BundleError> {
    let mut block = [0u8; BLOCK];
    if !read_block(r, &mut block).map_err(from_io)? {
        return Err(BundleError::Truncated);
    }
    if block.iter().all(|&b| b == 0) {
        return Err(BundleError::Malformed(format!("archive ends where member {name} should be")));
    }
    let h = tar::Header::from_byte_slice(&block);
    let found = String::from_utf8_lossy(&h.path_bytes()).into_owned();
    if found != name {
        if name == MANIFEST_MEMBER && &block[257..262] != b"ustar" {
            return Err(BundleError::NotABundle("not a tar archive".into()));
        }
        return Err(BundleError::Malformed(format!("expected member {name}, found {}", crate::sanitize(&found))));
    }
    let len = h.size().map_err(|_| BundleError::Malformed(format!("bad size field in the header of {name}")))?;
    if size.is_some_and(|s| s != len) {
        return Err(BundleError::Malformed(format!(
            "member {name} has {len} bytes, its descriptor says {}",
            size.unwrap_or(0)
        )));
    }
    let expected = tar_header(name, len).map_err(BundleError::Io)?;
    if block != expected {
        return Err(BundleError::Malformed(format!("the tar header of {name} is not in canonical form")));
    }
    Ok(len)
}

/// Reads a whole (small) member and its padding.
fn read_member<R: Read>(r: &mut R, len: u64) -> Result<Vec<u8>, BundleError> {
    let mut buf = vec![0u8; len as usize + padding(len)];
    if !read_block(r, &mut buf).map_err(from_io)? && !buf.is_empty() {
        return Err(BundleError::Truncated);
    }
    if buf[len as usize..].iter().any(|&b| b != 0) {
        return Err(BundleError::Malformed("non-zero bytes in tar padding".into()));
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// Parses the manifest: format and version first (so a newer bundle gets a
/// clear message), then the full structure, then the canonical-form check.
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, BundleError> {
    #[derive(serde::Deserialize)]
    struct Head {
        format: Option<String>,
        version: Option<u64>,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(format!("manifest.json: {e}")))?;
    if head.format.as_deref() != Some(FORMAT_NAME) {
        return Err(BundleError::NotABundle("manifest.json does not name the ferry-bundle format".into()));
    }
    match head.version {
        Some(v) if (u64::from(PLAIN_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v) => {}
        Some(v) if v > u64::from(FORMAT_VERSION) => return Err(BundleError::UnsupportedVersion(v)),
        v => return Err(BundleError::Malformed(format!("manifest.json: unknown version {v:?}"))),
    }
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(format!("manifest.json: {e}")))?;
    if serde_json::to_vec(&m).ok().as_deref() != Some(bytes) {
        return Err(BundleError::Malformed("manifest.json is not in canonical form".into()));
    }
    Ok(m)
}

/// Parses a descriptor and requires it in canonical form and within the
/// rules of `docs/FORMAT.md` ("Segment descriptor"): every rule a single
/// descriptor can break is checked here, before any signature, in time
/// linear in its size.
pub fn parse_descriptor(raw: &str) -> Result<SegmentDescriptor, String> {
    let d = match serde_json::from_str::<SegmentDescriptor>(raw) {
        Ok(d) => {
            if serde_json::to_string(&d).ok().as_deref() != Some(raw) {
                return Err("descriptor is not in canonical form".into());
            }
            d
        }
        Err(plain) => match serde_json::from_str::<SealedDescriptor>(raw) {
            Ok(s) => parse_sealed(s, raw)?,
            Err(sealed) if raw.contains("\"sealed\":") => return Err(sealed.to_string()),
            Err(_) => return Err(plain.to_string()),
        },
    };
    if d.first_seq == 0 || d.last_seq < d.first_seq || d.count != d.last_seq - d.first_seq + 1 {
        return Err(format!("seq range {}..={} does not hold {} entries", d.first_seq, d.last_seq, d.count));
    }
    if d.last_seq > MAX_SEQ {
        return Err(format!("seq {} is above the largest seq, {MAX_SEQ}", d.last_seq));
    }
    if !hex32(&d.chain_before) || !hex32(&d.chain_after) {
        return Err("chain hashes must be 64 lowercase hex characters".into());
    }
    if !hex32(&d.zstd_sha256) {
        return Err("sha256 fields must be 64 lowercase hex characters".into());
    }
    if d.first_seq == 1 && d.chain_before != crate::chain::ChainHash::GENESIS.to_hex() {
        return Err("a segment starting at seq 1 must have the zero chain hash as chain_before".into());
    }
    if d.ts_min > d.ts_max {
        return Err("ts_min is later than ts_max".into());
    }
    if d.zstd_len == 0 {
        return Err("an empty segment: entries_len and zstd_len must be at least 1".into());
    }
    if d.zstd_len > MAX_MEMBER {
        return Err(format!("zstd_len {} is above the largest tar member, {MAX_MEMBER} bytes", d.zstd_len));
    }
    if !d.is_encrypted() {
        check_contents(&d)?;
    }
    Ok(d)
}

fn hex32(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An encrypted descriptor (X1, X2): canonical, recipients listed once each
/// in ascending order, the sealed text canonical base64url.
fn parse_sealed(s: SealedDescriptor, raw: &str) -> Result<SegmentDescriptor, String> {
    if serde_json::to_string(&s).ok().as_deref() != Some(raw) {
        return Err("descriptor is not in canonical form".into());
    }
    if s.recipients.is_empty() || s.recipients.len() > MAX_RECIPIENTS {
        return Err(format!("an encrypted segment names 1 to {MAX_RECIPIENTS} recipients, not {}", s.recipients.len()));
    }
    if s.recipients.windows(2).any(|w| w[0] >= w[1]) {
        return Err("recipients must be listed once each, in ascending order".into());
    }
    let canonical = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &s.sealed)
        .ok()
        .is_some_and(|b| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b) == s.sealed);
    if s.sealed.is_empty() || s.sealed.len() > MAX_SEALED || !canonical {
        return Err(format!("sealed must be canonical base64url of 1 to {MAX_SEALED} characters"));
    }
    Ok(SegmentDescriptor {
        origin: s.origin,
        first_seq: s.first_seq,
        last_seq: s.last_seq,
        count: s.count,
        ts_min: s.ts_min,
        ts_max: s.ts_max,
        chain_before: s.chain_before,
        chain_after: s.chain_after,
        schema: None,
        tables: std::collections::BTreeMap::new(),
        entries_len: 0,
        entries_sha256: String::new(),
        zstd_len: s.member_len,
        zstd_sha256: s.member_sha256,
        encryption: Some(Encryption { recipients: s.recipients, sealed: s.sealed, opened: false }),
    })
}

/// The rules on what a plain descriptor shows and an encrypted one seals:
/// the entries' hash, the schema, the per-table counts (D5) and the entry
/// length (D6).
fn check_contents(d: &SegmentDescriptor) -> Result<(), String> {
    if !hex32(&d.entries_sha256) {
        return Err("sha256 fields must be 64 lowercase hex characters".into());
    }
    let hex = |s: &str| (1..=64).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if d.schema.as_deref().is_some_and(|s| !hex(s)) {
        return Err("schema must be null or 1 to 64 lowercase hex characters".into());
    }
    let mut total = 0u64;
    for (table, c) in &d.tables {
        crate::journal::check_name("table", table)?;
        if c.total() == 0 {
            return Err(format!("table {table:?} is listed with no entries"));
        }
        total = total.saturating_add(c.insert).saturating_add(c.update).saturating_add(c.delete);
    }
    if total != d.count {
        return Err(format!("the per-table counts add up to {total}, not to count {}", d.count));
    }
    if d.entries_len == 0 {
        return Err("an empty segment: entries_len and zstd_len must be at least 1".into());
    }
    Ok(())
}

/// The current segment member of a [`BundleReader`].
pub struct SegmentMember<'a, R: Read> {
    reader: &'a mut BundleReader<R>,
    index: usize,
}

impl<'a, R: Read> SegmentMember<'a, R> {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn descriptor(&self) -> &SegmentDescriptor {
        &self.reader.descriptors[self.index]
    }

    pub fn record(&self) -> &ManifestSegment {
        &self.reader.manifest.segments[self.index]
    }

    /// The compressed bytes, exactly as stored. The stream fails (with a
    /// [`BundleError`] inside the `io::Error`) if they do not hash to the
    /// descriptor's `zstd_sha256`.
    pub fn compressed(self) -> CompressedReader<'a, R> {
        let expected = self.reader.descriptors[self.index].zstd_sha256.clone();
        let name = self.reader.descriptors[self.index].member_name();
        CompressedReader { reader: self.reader, hasher: sha2::Sha256::new(), expected, name, checked: false }
    }

    /// The entry lines, decompressed with a bounded window and checked
    /// against the descriptor's lengths and hashes as they stream.
    pub fn entries(self) -> Result<EntryLines<'a, R>, BundleError> {
        let d = self.descriptor().clone();
        if d.entries_len > d.zstd_len.saturating_mul(MAX_EXPANSION) {
            return Err(BundleError::TooLarge {
                member: d.member_name(),
                entries_len: d.entries_len,
                zstd_len: d.zstd_len,
            });
        }
        let sealed = match &d.encryption {
            Some(e) if !e.opened => {
                return Err(BundleError::NotARecipient { member: d.member_name(), recipients: e.recipients.clone() })
            }
            Some(_) => true,
            None => false,
        };
        let keyring = self.reader.keyring.clone();
        let compressed = self.compressed();
        let mut compressed = if sealed {
            // The age file's plaintext is the zstd frame a plain member holds.
            let stream = keyring.open_stream(compressed).map_err(|e| BundleError::Corrupt {
                member: d.member_name(),
                reason: format!("its encrypted content does not open with this node's key: {e}"),
            })?;
            Source::Sealed(Box::new(stream))
        } else {
            Source::Plain(compressed)
        };
        // The frame header is checked here, before zstd sees it: zstd itself
        // skips its window limit on some paths (a frame that declares its
        // content size and fits the caller's buffer).
        let mut head = [0u8; MAX_FRAME_HEADER];
        let want = head.len().min(usize::try_from(d.zstd_len).unwrap_or(MAX_FRAME_HEADER));
        let mut got = 0;
        while got < want {
            match compressed.read(&mut head[got..want]) {
                Ok(0) if sealed => break,
                Ok(0) => return Err(BundleError::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(from_io(e)),
            }
        }
        if let Err(reason) = check_frame_header(&head[..got], d.entries_len) {
            // Bytes that differ from the signed ones are reported as what they are.
            if let Err(h @ BundleError::HashMismatch { .. }) =
                io::copy(&mut compressed, &mut io::sink()).map_err(from_io)
            {
                return Err(h);
            }
            return Err(BundleError::Corrupt { member: d.member_name(), reason });
        }
        let header = io::Cursor::new(head[..got].to_vec());
        let stream = BufReader::with_capacity(128 << 10, FrameStream { header, rest: compressed });
        let mut decoder = zstd::stream::read::Decoder::with_buffer(stream).map_err(BundleError::Io)?.single_frame();
        decoder.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(WINDOW_LOG_MAX)).map_err(BundleError::Io)?;
        let plain = HashingReader::new(decoder.take(d.entries_len + 1));
        Ok(EntryLines {
            lines: BufReader::with_capacity(256 << 10, plain),
            descriptor: d,
            buf: Vec::with_capacity(1024),
            done: false,
        })
    }
}

/// A member's bytes as zstd sees them: a plain member's as stored, an
/// encrypted one's decrypted (each 64 KiB chunk authenticated before any
/// byte of it is given out).
pub enum Source<'a, R: Read> {
    Plain(CompressedReader<'a, R>),
    Sealed(Box<age::stream::StreamReader<CompressedReader<'a, R>>>),
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(r) => r.read(buf),
            Source::Sealed(r) => r.read(buf),
        }
    }
}

/// A member's compressed bytes: the frame header read ahead, then the rest.
pub struct FrameStream<'a, R: Read> {
    header: io::Cursor<Vec<u8>>,
    rest: Source<'a, R>,
}

impl<R: Read> Read for FrameStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.header.read(buf)? {
            0 => self.rest.read(buf),
            n => Ok(n),
        }
    }
}

/// Compressed segment bytes; checks their hash at the end.
pub struct CompressedReader<'a, R: Read> {
    reader: &'a mut BundleReader<R>,
    hasher: sha2::Sha256,
    expected: String,
    name: String,
    checked: bool,
}

impl<R: Read> Read for CompressedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.reader.pending == 0 {
            if !self.checked {
                self.checked = true;
                let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
                if got != self.expected {
                    return Err(to_io(BundleError::HashMismatch {
                        member: self.name.clone(),
                        what: "compressed bytes",
                    }));
                }
            }
            return Ok(0);
        }
        let want = buf.len().min(self.reader.pending.min(usize::MAX as u64) as usize);
        let n = self.reader.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.hasher.update(&buf[..n]);
        self.reader.pending -= n as u64;
        Ok(n)
    }
}

type Decoded<'a, R> = HashingReader<Take<zstd::stream::read::Decoder<'static, BufReader<FrameStream<'a, R>>>>>;

/// Entry lines of one segment, each without its newline.
pub struct EntryLines<'a, R: Read> {
    lines: BufReader<Decoded<'a, R>>,
    descriptor: SegmentDescriptor,
    buf: Vec<u8>,
    done: bool,
}

impl<R: Read> EntryLines<'_, R> {
    pub fn descriptor(&self) -> &SegmentDescriptor {
        &self.descriptor
    }

    /// The next line, or `None` after the last one, once every length and
    /// hash has been checked.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, BundleError> {
        if self.done {
            return Ok(None);
        }
        self.buf.clear();
        let read = io::Read::take(&mut self.lines, MAX_LINE as u64 + 1).read_until(b'\n', &mut self.buf);
        let member = self.descriptor.member_name();
        let n = read.map_err(|e| self.read_failed(e))?;
        if n == 0 {
            self.done = true;
            self.check_end()?;
            return Ok(None);
        }
        if self.buf.last() != Some(&b'\n') {
            if self.buf.len() > MAX_LINE {
                return Err(BundleError::Corrupt {
                    member,
                    reason: format!("an entry line is longer than {MAX_LINE} bytes"),
                });
            }
            // Either past the declared length or the last line lacks its newline.
            self.done = true;
            self.check_end()?;
            return Err(BundleError::Corrupt { member, reason: "the last entry line has no newline".into() });
        }
        Ok(Some(&self.buf[..n - 1]))
    }

    /// Stops hashing the entry bytes here: the caller hashes every byte
    /// [`EntryLines::read_raw`] gives it and compares the result with the
    /// descriptor's `entries_sha256` itself (so the hashing can run on
    /// another thread than decompression). Lengths are still checked here.
    pub fn leave_entries_hash_to_caller(&mut self) {
        self.lines.get_mut().hashing = false;
    }

    /// Reads raw entry bytes (lines with their newlines, as stored) into
    /// `buf`; returns 0 at the end, once every length and hash has been
    /// checked. For callers that split lines themselves.
    pub fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        if self.done {
            return Ok(0);
        }
        match io::Read::read(&mut self.lines, buf) {
            Ok(0) => {
                self.done = true;
                self.check_end()?;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => Err(self.read_failed(e)),
        }
    }

    /// Turns a failed read into the error to report, and ends the stream. A
    /// decoder error on bytes that differ from the signed ones is reported as
    /// what it is: a hash mismatch (found by draining the member).
    fn read_failed(&mut self, e: io::Error) -> BundleError {
        self.done = true;
        match from_io(e) {
            BundleError::Io(e) => {
                let compressed = self.lines.get_mut().inner.get_mut().get_mut();
                if let Err(h @ BundleError::HashMismatch { .. }) =
                    io::copy(compressed, &mut io::sink()).map_err(from_io)
                {
                    return h;
                }
                BundleError::Corrupt { member: self.descriptor.member_name(), reason: e.to_string() }
            }
            other => other,
        }
    }

    fn check_end(&mut self) -> Result<(), BundleError> {
        let member = self.descriptor.member_name();
        let plain = self.lines.get_mut();
        if plain.count != self.descriptor.entries_len {
            return Err(BundleError::LengthMismatch {
                member,
                declared: self.descriptor.entries_len,
                actual: plain.count,
            });
        }
        if plain.hashing {
            let got = hex::encode(std::mem::take(&mut plain.hasher).finalize());
            if got != self.descriptor.entries_sha256 {
                return Err(BundleError::HashMismatch { member, what: "entries" });
            }
        }
        // Whatever follows the single zstd frame inside the member is an error;
        // reading to the end also checks the compressed hash.
        let compressed = plain.inner.get_mut().get_mut();
        let mut rest = Vec::new();
        compressed.read_to_end(&mut rest).map_err(from_io)?;
        if !rest.is_empty() {
            return Err(BundleError::Corrupt { member, reason: format!("{} bytes after the zstd frame", rest.len()) });
        }
        Ok(())
    }
}
