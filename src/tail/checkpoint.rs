//! Where `kaudit tail` stands in its file: the checkpoint written after every acknowledged
//! batch (the file's device and inode, the offset read to, a fingerprint of its first line), and
//! the identities that find the file again after a rotation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileId {
    pub(super) dev: u64,
    pub(super) ino: u64,
}

impl FileId {
    pub(super) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The position saved after every acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Checkpoint {
    pub(super) file: FileId,
    pub(super) offset: u64,
    /// The number of the line at `offset` (for dead letters' positions).
    #[serde(default = "first_line")]
    pub(super) line: u64,
    /// Fingerprint of the file's first line, once it has one.
    pub(super) fingerprint: Option<String>,
}

impl Checkpoint {
    pub(super) fn load(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("checkpoint {}: {e}", path.display())),
        }
    }

    /// Written to a temporary file, synced, renamed over the old one.
    pub(super) fn save(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.to_path_buf().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = File::create(&tmp)?;
            io::Write::write_all(&mut f, &serde_json::to_vec(self).unwrap_or_default())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

pub(super) fn first_line() -> u64 {
    1
}

/// The first line's first bytes identify a file's content: an audit line starts with its
/// `auditID` and timestamps. `None` until the first line is complete.
pub(super) const FINGERPRINT_BYTES: usize = 4096;

pub(super) fn fingerprint(file: &File) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
    let mut reader = file.try_clone()?;
    reader.seek(SeekFrom::Start(0))?;
    reader.take(FINGERPRINT_BYTES as u64).read_to_end(&mut head)?;
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(end) => &head[..end],
        None if head.len() == FINGERPRINT_BYTES => &head[..],
        None => return Ok(None),
    };
    Ok(Some(hex::encode(&Sha256::digest(line)[..8])))
}
