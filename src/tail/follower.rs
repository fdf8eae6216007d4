//! Following one path through rotations (by rename, by copy-truncate) and restarts: reading
//! complete lines in chunks, moving the position only when a chunk is committed.

use super::checkpoint::*;
use crate::telemetry::metrics;
use opentelemetry::KeyValue;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One line read, where it started, and the file it came from (by fingerprint, for ids).
pub(super) struct Line {
    pub(super) offset: u64,
    pub(super) number: u64,
    pub(super) text: Vec<u8>,
}

/// The file being read.
pub(super) struct Reading {
    pub(super) file: File,
    pub(super) id: FileId,
    pub(super) offset: u64,
    /// 1-based number of the line at `offset` (for dead letters).
    pub(super) line: u64,
    pub(super) fingerprint: Option<String>,
    /// The file at the configured path; `false` for a rotated file or a copy being drained,
    /// after which the live file is read from its start.
    pub(super) live: bool,
}

/// Follows one path through rotations. Reading does not move the position: a chunk is
/// [`Follower::commit`]ted once its events are acknowledged.
pub(super) struct Follower {
    pub(super) path: PathBuf,
    pub(super) reading: Option<Reading>,
    pub(super) lost: u64,
}

/// Lines to publish, and where reading stands once they are acknowledged.
pub(super) struct Chunk {
    pub(super) lines: Vec<Line>,
    pub(super) fingerprint: String,
    pub(super) next: Next,
}

pub(super) enum Next {
    /// The same file, from this offset and line.
    At(u64, u64),
    /// The live file from its start (a drained rotated file or copy is done).
    Live,
}

impl Follower {
    /// Opens the path, resuming from `checkpoint` (which may describe a file rotated away
    /// meanwhile: it is found beside the path by inode or by fingerprint).
    pub(super) fn open(path: PathBuf, checkpoint: Option<Checkpoint>) -> Follower {
        let mut follower = Follower {
            path,
            reading: None,
            lost: 0,
        };
        let Some(cp) = checkpoint else { return follower };
        let live = File::open(&follower.path).ok().and_then(|f| {
            let meta = f.metadata().ok()?;
            Some((f, FileId::of(&meta), meta.len()))
        });
        if let Some((file, id, len)) = live {
            let same_content = cp.fingerprint.is_none() || fingerprint(&file).ok().flatten() == cp.fingerprint;
            if id == cp.file && len >= cp.offset && same_content {
                follower.reading = Some(Reading {
                    file,
                    id,
                    offset: cp.offset,
                    line: cp.line,
                    fingerprint: cp.fingerprint,
                    live: true,
                });
                return follower;
            }
        }
        // Rotated (or truncated) while we were away: drain the old content first.
        match follower.find_beside(Some(cp.file), cp.fingerprint.as_deref(), cp.offset) {
            Some((file, id)) => {
                tracing::info!(path = %follower.path.display(), "resuming in the file rotated away since the checkpoint");
                follower.reading = Some(Reading {
                    file,
                    id,
                    offset: cp.offset,
                    line: cp.line,
                    fingerprint: cp.fingerprint,
                    live: false,
                });
            }
            None => follower.lose("the file of the checkpoint is gone (deleted or compressed)"),
        }
        follower
    }

    pub(super) fn lose(&mut self, why: &str) {
        self.lost += 1;
        tracing::error!(path = %self.path.display(), "events may be lost: {why}; reading the current file from its start");
        metrics()
            .tail_rotations_lost
            .add(1, &[KeyValue::new("file", self.path.display().to_string())]);
    }

    /// A file in the path's directory (not the live one) with this inode or, failing that,
    /// this first-line fingerprint, at least `min_len` long. gzip-compressed backups cannot be
    /// resumed at an offset and are skipped.
    pub(super) fn find_beside(&self, id: Option<FileId>, fp: Option<&str>, min_len: u64) -> Option<(File, FileId)> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let live = std::fs::metadata(&self.path).ok().map(|m| FileId::of(&m));
        let mut by_fingerprint = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let candidate = FileId::of(&meta);
            if !meta.is_file() || Some(candidate) == live || meta.len() < min_len {
                continue;
            }
            if Some(candidate) == id {
                return File::open(entry.path()).ok().map(|f| (f, candidate));
            }
            if by_fingerprint.is_none() && fp.is_some() {
                if let Ok(file) = File::open(entry.path()) {
                    if fingerprint(&file).ok().flatten().as_deref() == fp {
                        by_fingerprint = Some((file, candidate));
                    }
                }
            }
        }
        by_fingerprint
    }

    pub(super) fn open_live(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(file) => {
                let id = FileId::of(&file.metadata()?);
                self.reading = Some(Reading {
                    file,
                    id,
                    offset: 0,
                    line: 1,
                    fingerprint: None,
                    live: true,
                });
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next lines to publish (empty when there is nothing new yet).
    pub(super) fn next_chunk(&mut self, max_lines: usize) -> io::Result<Chunk> {
        loop {
            if self.reading.is_none() && !self.open_live()? {
                return Ok(Chunk::empty());
            }
            let reading = self.reading.as_mut().expect("opened above");
            let meta = reading.file.metadata()?;
            if reading.live && self.truncated(&meta)? {
                continue;
            }
            let reading = self.reading.as_mut().expect("still open");
            let (lines, end, partial) = read_lines(reading, max_lines)?;
            let fp = match &reading.fingerprint {
                Some(fp) => fp.clone(),
                None => fingerprint(&reading.file)?.unwrap_or_default(),
            };
            if !lines.is_empty() {
                let next_line = reading.line + lines.len() as u64;
                return Ok(Chunk {
                    lines,
                    fingerprint: fp,
                    next: Next::At(end, next_line),
                });
            }
            if !reading.live {
                // A file rotated away is complete: its unterminated last line is its last.
                let lines = partial.into_iter().collect();
                return Ok(Chunk {
                    lines,
                    fingerprint: fp,
                    next: Next::Live,
                });
            }
            // At the end of the live file: was it renamed away?
            let at_path = std::fs::metadata(&self.path).ok().map(|m| FileId::of(&m));
            match at_path {
                Some(id) if id != reading.id => {
                    // Drain what was written before the rename, then move on.
                    reading.live = false;
                    continue;
                }
                _ => return Ok(Chunk::empty()),
            }
        }
    }

    /// Whether the live file was truncated under us (it is shorter than our offset, or its
    /// first line changed); if so, switches to draining its copy, or to its start.
    pub(super) fn truncated(&mut self, meta: &std::fs::Metadata) -> io::Result<bool> {
        let reading = self.reading.as_ref().expect("open");
        let shrunk = meta.len() < reading.offset;
        let changed = match &reading.fingerprint {
            Some(fp) => fingerprint(&reading.file)?.as_deref() != Some(fp.as_str()),
            None => false,
        };
        if !shrunk && !changed {
            return Ok(false);
        }
        let (offset, line, fp) = (reading.offset, reading.line, reading.fingerprint.clone());
        tracing::info!(path = %self.path.display(), "file truncated (copy-truncate rotation)");
        match self.find_beside(None, fp.as_deref(), offset) {
            Some((file, id)) => {
                self.reading = Some(Reading {
                    file,
                    id,
                    offset,
                    line,
                    fingerprint: fp,
                    live: false,
                });
            }
            None => {
                if offset > 0 {
                    self.lose("the file was truncated and no copy of it was found beside it");
                }
                self.reading = None;
            }
        }
        Ok(true)
    }

    pub(super) fn commit(&mut self, chunk: &Chunk) -> io::Result<()> {
        match chunk.next {
            Next::At(offset, line) => {
                if let Some(reading) = &mut self.reading {
                    reading.offset = offset;
                    reading.line = line;
                    if reading.fingerprint.is_none() && !chunk.fingerprint.is_empty() {
                        reading.fingerprint = Some(chunk.fingerprint.clone());
                    }
                }
            }
            Next::Live => {
                self.reading = None;
                self.open_live()?;
            }
        }
        Ok(())
    }

    pub(super) fn checkpoint(&self) -> Option<Checkpoint> {
        self.reading.as_ref().map(|r| Checkpoint {
            file: r.id,
            offset: r.offset,
            line: r.line,
            fingerprint: r.fingerprint.clone(),
        })
    }

    /// Bytes in the live file not yet published.
    pub(super) fn lag(&self) -> u64 {
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        match &self.reading {
            Some(r) if r.live => len.saturating_sub(r.offset),
            _ => len,
        }
    }
}

impl Chunk {
    pub(super) fn empty() -> Chunk {
        Chunk {
            lines: Vec::new(),
            fingerprint: String::new(),
            next: Next::At(0, 0),
        }
    }
}

/// Up to `max` complete lines from the reading position; the offset after them; and an
/// unterminated last line, if that is all there was.
pub(super) fn read_lines(reading: &Reading, max: usize) -> io::Result<(Vec<Line>, u64, Option<Line>)> {
    let mut file = reading.file.try_clone()?;
    file.seek(SeekFrom::Start(reading.offset))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut lines = Vec::new();
    let mut offset = reading.offset;
    let mut number = reading.line;
    while lines.len() < max {
        let mut text = Vec::new();
        let n = reader.read_until(b'\n', &mut text)?;
        if n == 0 {
            break;
        }
        if text.last() != Some(&b'\n') {
            let partial = (!text.trim_ascii().is_empty()).then_some(Line { offset, number, text });
            return Ok((lines, offset, partial));
        }
        lines.push(Line { offset, number, text });
        offset += n as u64;
        number += 1;
    }
    Ok((lines, offset, None))
}
