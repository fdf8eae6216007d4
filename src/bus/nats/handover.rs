//! A partition's detector state moves with the partition (NATS JetStream).
//!
//! A detector handing a partition back (another joined, or it is stopping) stores the
//! partition's state in the key-value bucket `kaudit_handover` and only then deletes its lease;
//! a detector that takes the lease reads the state before the partition's first delivery
//! (`partitions`). A value is cut into chunks under the server's 1 MB message limit, at keys
//! `<group>.<partition>.<i>`, each prefixed by `<hand-over id> <i> <n>\n`; chunk 0 is written
//! last, so a hand-over whose writer died midway is never read as whole.
//!
//! Before deliveries are committed, the state they changed is stored the same way (a
//! checkpoint): a detector that loses a lease without handing it back (killed, or frozen past
//! the lease time) leaves its successor the state of its last commit, with the positions that
//! state holds already.

use async_nats::jetstream::{self, kv};
use std::time::Duration;

/// The bucket holding hand-overs, for every group.
const BUCKET: &str = "kaudit_handover";
/// Largest chunk: under the server's default 1 MB payload limit.
const CHUNK: usize = 512 * 1024;
/// Hand-overs older than this are gone: a week is longer than any dedup or rule window.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// The hand-over bucket.
pub async fn bucket(js: &jetstream::Context, replicas: usize) -> anyhow::Result<kv::Store> {
    super::partitions::kv_bucket(js, BUCKET, KEEP, replicas, "partition hand-overs").await
}

fn key(group: &str, partition: u32, chunk: usize) -> String {
    format!("{group}.{partition}.{chunk}")
}

/// Stores a partition's state.
pub async fn write(kv: &kv::Store, group: &str, partition: u32, state: &[u8]) -> anyhow::Result<()> {
    let id = format!("{:016x}", rand::random::<u64>());
    let chunks: Vec<&[u8]> = state.chunks(CHUNK).collect();
    let chunks = if chunks.is_empty() { vec![&[][..]] } else { chunks };
    let n = chunks.len();
    for (i, chunk) in chunks.iter().enumerate().rev() {
        let mut value = format!("{id} {i} {n}\n").into_bytes();
        value.extend_from_slice(chunk);
        kv.put(key(group, partition, i), value.into())
            .await
            .map_err(|e| anyhow::anyhow!("storing chunk {i} of {n}: {e}"))?;
    }
    Ok(())
}

/// Reads a partition's newest hand-over; `None` when there is none, or it is torn.
pub async fn read(kv: &kv::Store, group: &str, partition: u32) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(first) = kv.get(key(group, partition, 0)).await? else {
        return Ok(None);
    };
    let Some((id, 0, n, body)) = parse(&first) else {
        anyhow::bail!("chunk 0 of partition {partition}'s hand-over is unreadable");
    };
    let mut state = body.to_vec();
    for i in 1..n {
        let chunk = kv.get(key(group, partition, i)).await?;
        match chunk.as_deref().and_then(parse) {
            Some((other, j, m, body)) if other == id && j == i && m == n => state.extend_from_slice(body),
            _ => {
                tracing::warn!(
                    partition,
                    "the partition's hand-over is torn (chunk {i} of {n} is not its own)"
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(state))
}

/// `<id> <i> <n>\n<body>`.
fn parse(value: &[u8]) -> Option<(&str, usize, usize, &[u8])> {
    let end = value.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&value[..end]).ok()?;
    let mut words = head.split(' ');
    let (id, i, n) = (words.next()?, words.next()?.parse().ok()?, words.next()?.parse().ok()?);
    Some((id, i, n, &value[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_carry_their_hand_over_and_place() {
        assert_eq!(parse(b"00ab 1 3\n{\"x\":1}"), Some(("00ab", 1, 3, &b"{\"x\":1}"[..])));
        assert_eq!(parse(b"no header"), None);
        assert_eq!(parse(b"id x 3\nbody"), None);
        assert_eq!(key("kaudit-detectors", 4, 0), "kaudit-detectors.4.0");
    }
}
