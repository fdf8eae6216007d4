//! `kaudit tail`: follows an audit log file written by the apiserver's log backend
//! (`--audit-log-path`) and publishes its events to the bus the way the shim does.
//!
//! What it promises:
//!
//! - **Rotation by rename** (the apiserver's own, lumberjack: `audit.log` → `audit-<time>.log`):
//!   the open file is read to its end, its last line even without a newline, before the new file
//!   is read from its start.
//! - **Rotation by copy-truncate** (logrotate `copytruncate`): the file shrinks, or its first line
//!   changes. What was not yet read is read from the copy (a file beside it whose first line is
//!   the same), then the truncated file from its start. Lines written between the copy and the
//!   truncation are lost, as with any copy-truncate reader; logrotate's manual says so too.
//! - **Restart**: after each batch the bus acknowledged, a checkpoint (the file's device and inode,
//!   the offset read to, a fingerprint of its first line) is written atomically. A restart
//!   resumes there, finding the file by inode or fingerprint if it was rotated meanwhile. A crash
//!   between the acknowledgement and the checkpoint re-sends that one batch: each message carries
//!   a stable id (`fingerprint:offset`), so NATS JetStream drops the repeats within its duplicate
//!   window (exactly once); on Kafka the bound is one batch (at least once).
//! - **Partial lines**: a line without its newline is left until the writer finishes it (or, in a
//!   file rotated away, read as the last line).
//! - **Lag**: `kaudit_tail_lag_bytes{file}` (bytes written but not yet published).
//!
//! A line that is not an event (or an envelope of one) is dead-lettered with its line number; it
//! never holds up the lines after it.

use crate::audit::envelope;
use crate::audit::{Format, Malformed, Position};
use crate::bus::PublishError;
use crate::ingest::{Batch, Destination, Item, Source};
use crate::telemetry::{metrics, otel};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `kaudit tail` follows and how.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub file: PathBuf,
    /// The cluster of events whose envelope names none.
    pub cluster: String,
    pub format: Format,
    /// Where the position is kept (default: `<file>.kaudit-checkpoint`).
    pub checkpoint: PathBuf,
    /// Most lines per published batch.
    pub batch_lines: usize,
    /// How often the file is looked at when there is nothing new.
    pub poll: Duration,
}

impl TailConfig {
    pub fn new(file: PathBuf) -> TailConfig {
        let mut checkpoint = file.clone().into_os_string();
        checkpoint.push(".kaudit-checkpoint");
        TailConfig {
            file,
            cluster: "default".into(),
            format: Format::Auto,
            checkpoint: checkpoint.into(),
            batch_lines: 500,
            poll: Duration::from_millis(200),
        }
    }
}

/// A file's identity on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The position saved after every acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    file: FileId,
    offset: u64,
    /// The number of the line at `offset` (for dead letters' positions).
    #[serde(default = "first_line")]
    line: u64,
    /// Fingerprint of the file's first line, once it has one.
    fingerprint: Option<String>,
}

impl Checkpoint {
    fn load(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("checkpoint {}: {e}", path.display())),
        }
    }

    /// Written to a temporary file, synced, renamed over the old one.
    fn save(&self, path: &Path) -> io::Result<()> {
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

fn first_line() -> u64 {
    1
}

/// The first line's first bytes identify a file's content: an audit line starts with its
/// `auditID` and timestamps. `None` until the first line is complete.
const FINGERPRINT_BYTES: usize = 4096;

fn fingerprint(file: &File) -> io::Result<Option<String>> {
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

/// One line read, where it started, and the file it came from (by fingerprint, for ids).
struct Line {
    offset: u64,
    number: u64,
    text: Vec<u8>,
}

/// The file being read.
struct Reading {
    file: File,
    id: FileId,
    offset: u64,
    /// 1-based number of the line at `offset` (for dead letters).
    line: u64,
    fingerprint: Option<String>,
    /// The file at the configured path; `false` for a rotated file or a copy being drained,
    /// after which the live file is read from its start.
    live: bool,
}

/// Follows one path through rotations. Reading does not move the position: a chunk is
/// [`Follower::commit`]ted once its events are acknowledged.
struct Follower {
    path: PathBuf,
    reading: Option<Reading>,
    lost: u64,
}

/// Lines to publish, and where reading stands once they are acknowledged.
struct Chunk {
    lines: Vec<Line>,
    fingerprint: String,
    next: Next,
}

enum Next {
    /// The same file, from this offset and line.
    At(u64, u64),
    /// The live file from its start (a drained rotated file or copy is done).
    Live,
}

impl Follower {
    /// Opens the path, resuming from `checkpoint` (which may describe a file rotated away
    /// meanwhile: it is found beside the path by inode or by fingerprint).
    fn open(path: PathBuf, checkpoint: Option<Checkpoint>) -> Follower {
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

    fn lose(&mut self, why: &str) {
        self.lost += 1;
        tracing::error!(path = %self.path.display(), "events may be lost: {why}; reading the current file from its start");
        metrics()
            .tail_rotations_lost
            .add(1, &[KeyValue::new("file", self.path.display().to_string())]);
    }

    /// A file in the path's directory (not the live one) with this inode or, failing that,
    /// this first-line fingerprint, at least `min_len` long. gzip-compressed backups cannot be
    /// resumed at an offset and are skipped.
    fn find_beside(&self, id: Option<FileId>, fp: Option<&str>, min_len: u64) -> Option<(File, FileId)> {
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

    fn open_live(&mut self) -> io::Result<bool> {
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
    fn next_chunk(&mut self, max_lines: usize) -> io::Result<Chunk> {
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
    fn truncated(&mut self, meta: &std::fs::Metadata) -> io::Result<bool> {
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

    fn commit(&mut self, chunk: &Chunk) -> io::Result<()> {
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

    fn checkpoint(&self) -> Option<Checkpoint> {
        self.reading.as_ref().map(|r| Checkpoint {
            file: r.id,
            offset: r.offset,
            line: r.line,
            fingerprint: r.fingerprint.clone(),
        })
    }

    /// Bytes in the live file not yet published.
    fn lag(&self) -> u64 {
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        match &self.reading {
            Some(r) if r.live => len.saturating_sub(r.offset),
            _ => len,
        }
    }
}

impl Chunk {
    fn empty() -> Chunk {
        Chunk {
            lines: Vec::new(),
            fingerprint: String::new(),
            next: Next::At(0, 0),
        }
    }
}

/// Up to `max` complete lines from the reading position; the offset after them; and an
/// unterminated last line, if that is all there was.
fn read_lines(reading: &Reading, max: usize) -> io::Result<(Vec<Line>, u64, Option<Line>)> {
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

/// Follows the file until `stop` is set, publishing each batch of lines and checkpointing it
/// once the bus acknowledged it. A bus that refuses is retried (with backoff) with the same
/// batch: nothing is skipped.
pub async fn run(
    config: TailConfig,
    to: Destination,
    max_event_bytes: usize,
    mut stop: crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let checkpoint = Checkpoint::load(&config.checkpoint)?;
    let mut follower = Follower::open(config.file.clone(), checkpoint);
    let file_label = [KeyValue::new("file", config.file.display().to_string())];
    let any_cluster = |_: &str| true;
    let source = Source {
        cluster: &config.cluster,
        may_name: &any_cluster,
    };
    tracing::info!(file = %config.file.display(), checkpoint = %config.checkpoint.display(), "tailing");
    loop {
        if stop.is_stopping() {
            break;
        }
        let chunk = tokio::task::block_in_place(|| follower.next_chunk(config.batch_lines))?;
        if chunk.lines.is_empty() && matches!(chunk.next, Next::At(..)) {
            metrics().tail_lag_bytes.record(follower.lag(), &file_label);
            tokio::select! {
                _ = tokio::time::sleep(config.poll) => {}
                _ = stop.stopped() => {}
            }
            continue;
        }
        let mut backoff = crate::backoff::Backoff::default();
        // A trace per chunk, started here as the shim starts one per request.
        let publish = otel::start("tail publish", SpanKind::Producer, &opentelemetry::Context::new());
        loop {
            let batch = Batch::build(items(&chunk, config.format), &source, max_event_bytes, &publish);
            match batch.publish(&to).await {
                Ok(()) => {
                    otel::end(&publish);
                    break;
                }
                Err(e @ (PublishError::Saturated(_) | PublishError::Unavailable(_))) => {
                    let delay = backoff.next_delay();
                    tracing::warn!("publish failed, retrying the batch in {delay:?}: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // Stopping with the batch unacknowledged: the checkpoint stays before
                        // it, so it is read again next time.
                        _ = stop.stopped() => return Ok(()),
                    }
                }
            }
        }
        follower.commit(&chunk)?;
        if let Some(cp) = follower.checkpoint() {
            tokio::task::block_in_place(|| cp.save(&config.checkpoint))
                .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", config.checkpoint.display()))?;
        }
        metrics().tail_lag_bytes.record(follower.lag(), &file_label);
    }
    Ok(())
}

/// The chunk's lines as items with stable ids: `<fingerprint>:<offset>[:<n>]` (an envelope line
/// holding several events numbers them).
fn items(chunk: &Chunk, format: Format) -> Vec<Item> {
    let mut out = Vec::with_capacity(chunk.lines.len());
    for line in &chunk.lines {
        let text = line.text.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let position = Position::Line(line.number as usize);
        let records = envelope::unwrap(format, text);
        let many = records.len() > 1;
        for (n, record) in records.into_iter().enumerate() {
            let id = if many {
                format!("{}:{}:{n}", chunk.fingerprint, line.offset)
            } else {
                format!("{}:{}", chunk.fingerprint, line.offset)
            };
            out.push(Item {
                record: record.map_err(|reason| Malformed::new(position, reason, text)),
                id: Some(id),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn event(id: &str) -> String {
        format!("{{\"kind\":\"Event\",\"auditID\":\"{id}\",\"stage\":\"ResponseComplete\",\"verb\":\"get\"}}\n")
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Reads everything there is now, committing as it goes; the audit ids read.
    fn drain(follower: &mut Follower) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let chunk = follower.next_chunk(3).unwrap();
            if chunk.lines.is_empty() && matches!(chunk.next, Next::At(..)) {
                return ids;
            }
            for item in items(&chunk, Format::Auto) {
                match item.record {
                    Ok(r) => ids.push(r.event.view().audit_id().into_owned()),
                    Err(m) => ids.push(format!("bad {}", m.position)),
                }
            }
            follower.commit(&chunk).unwrap();
        }
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &event("a"));
        let half = event("b");
        append(&path, &half[..10]);
        let mut f = Follower::open(path.clone(), None);
        assert_eq!(drain(&mut f), ["a"]);
        append(&path, &half[10..]);
        assert_eq!(drain(&mut f), ["b"]);
        append(&path, "not json\n");
        assert_eq!(drain(&mut f), ["bad line 3"]);
    }

    #[test]
    fn rename_rotation_drains_the_old_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &event("a"));
        let mut f = Follower::open(path.clone(), None);
        assert_eq!(drain(&mut f), ["a"]);
        // Written after our last read, then rotated; the last line has no newline.
        append(&path, &event("b"));
        append(&path, event("c").trim_end());
        std::fs::rename(&path, dir.path().join("audit-2026-11-26T10-00-00.000.log")).unwrap();
        append(&path, &event("d"));
        assert_eq!(drain(&mut f), ["b", "c", "d"]);
    }

    #[test]
    fn copy_truncate_reads_the_rest_from_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &event("a"));
        let mut f = Follower::open(path.clone(), None);
        assert_eq!(drain(&mut f), ["a"]);
        append(&path, &event("b"));
        std::fs::copy(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // The writer goes on, past our old offset, before we look again.
        append(&path, &event("c"));
        append(&path, &event("d"));
        assert_eq!(drain(&mut f), ["b", "c", "d"]);
    }

    #[test]
    fn restart_resumes_at_the_checkpoint_even_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &event("a"));
        let mut f = Follower::open(path.clone(), None);
        assert_eq!(drain(&mut f), ["a"]);
        let cp = f.checkpoint().unwrap();
        drop(f);
        append(&path, &event("b"));
        let mut f = Follower::open(path.clone(), Some(cp.clone()));
        assert_eq!(drain(&mut f), ["b"]);
        // Down again; meanwhile more lines, a rename rotation, a new file.
        let cp2 = f.checkpoint().unwrap();
        drop(f);
        append(&path, &event("c"));
        std::fs::rename(&path, dir.path().join("audit-1.log")).unwrap();
        append(&path, &event("d"));
        let mut f = Follower::open(path.clone(), Some(cp2));
        assert_eq!(drain(&mut f), ["c", "d"]);
        // The checkpoint round-trips through its file.
        let file = dir.path().join("cp");
        f.checkpoint().unwrap().save(&file).unwrap();
        assert_eq!(Checkpoint::load(&file).unwrap(), f.checkpoint());
    }

    #[test]
    fn ids_are_stable_per_file_content_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        append(&path, &format!("{}{}", event("a"), event("b")));
        let mut f = Follower::open(path.clone(), None);
        let first: Vec<_> = items(&f.next_chunk(10).unwrap(), Format::Auto)
            .into_iter()
            .map(|i| i.id.unwrap())
            .collect();
        let mut again = Follower::open(path.clone(), None);
        let second: Vec<_> = items(&again.next_chunk(10).unwrap(), Format::Auto)
            .into_iter()
            .map(|i| i.id.unwrap())
            .collect();
        assert_eq!(first, second);
        assert_ne!(first[0], first[1]);
        f.commit(&again.next_chunk(10).unwrap()).unwrap();
    }

    #[test]
    fn envelope_lines_give_one_item_per_event_with_the_envelope_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eks.log");
        let batch = serde_json::json!({
            "logGroup": "/aws/eks/prod/cluster",
            "logEvents": [{"message": event("x").trim_end()}, {"message": event("y").trim_end()}]
        });
        append(&path, &format!("{batch}\n"));
        let mut f = Follower::open(path, None);
        let items = items(&f.next_chunk(10).unwrap(), Format::Auto);
        let got: Vec<_> = items
            .iter()
            .map(|i| {
                let r = i.record.as_ref().unwrap();
                (r.event.view().audit_id().into_owned(), r.cluster.clone().unwrap())
            })
            .collect();
        assert_eq!(got, [("x".into(), "prod".into()), ("y".into(), "prod".into())]);
        assert!(items[0].id.as_ref().unwrap().ends_with(":0:0"));
        assert!(items[1].id.as_ref().unwrap().ends_with(":0:1"));
    }
}
