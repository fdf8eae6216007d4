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
use std::path::PathBuf;
use std::time::Duration;

mod checkpoint;
mod follower;

use checkpoint::*;
use follower::*;

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
    use std::path::Path;

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
