//! A request's body within the shim's limits: read up to `max_body_bytes`, every byte held (raw
//! or inflated) counted against the shared `max_buffered_bytes`, gzip inflated on the blocking
//! pool with the same accounting.

use super::{reject, retry_later, Shim};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use std::io::Read;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub(super) fn buffers_full(shim: &Shim) -> Response {
    retry_later(
        shim,
        "buffers_full",
        StatusCode::SERVICE_UNAVAILABLE,
        "the shim holds as many body bytes as it may (max_buffered_bytes); retry later".into(),
    )
}

/// Body bytes a request holds, in KiB permits of [`Shim::buffered`]; given back when dropped.
pub(super) type Held = Vec<tokio::sync::OwnedSemaphorePermit>;

/// Takes `bytes` more from the buffered-bytes budget, or `None` when it is spent.
pub(super) fn hold(budget: &Arc<Semaphore>, bytes: usize, held: &mut Held) -> Option<()> {
    let kib = u32::try_from(bytes.div_ceil(1024)).ok()?;
    if kib > 0 {
        held.push(budget.clone().try_acquire_many_owned(kib).ok()?);
    }
    Some(())
}

/// Reads the body within `max_body_bytes` and the shared `max_buffered_bytes`.
pub(super) async fn read_body(shim: &Shim, headers: &HeaderMap, body: Body) -> Result<(Bytes, Held), Response> {
    use http_body_util::BodyExt;
    let limit = shim.config.max_body_bytes;
    let too_large = || {
        reject(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut held = Held::new();
    if let Some(length) = declared {
        if length > limit {
            return Err(too_large());
        }
        hold(&shim.buffered, length, &mut held).ok_or_else(|| buffers_full(shim))?;
    }
    let mut out = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| reject("bad_body", StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if out.len() + data.len() > limit {
            return Err(too_large());
        }
        // A body longer than it declared, or of undeclared length, holds as it grows.
        let over = (out.len() + data.len()).saturating_sub(declared.unwrap_or(0).max(out.len()));
        if over > 0 {
            hold(&shim.buffered, over, &mut held).ok_or_else(|| buffers_full(shim))?;
        }
        out.extend_from_slice(&data);
    }
    Ok((out.freeze(), held))
}

/// Why a body could not be decoded.
pub(super) enum Decoding {
    TooLarge,
    Buffered,
    Corrupt(std::io::Error),
    NotJson(String),
}

/// gzip by header or magic bytes.
pub(super) fn is_gzip(headers: &HeaderMap, body: &[u8]) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        || body.starts_with(&[0x1f, 0x8b])
}

/// Inflates a gzip body, at most `limit` bytes, holding what it inflates against `budget`.
pub(super) fn inflate(body: &[u8], limit: usize, budget: &Arc<Semaphore>, held: &mut Held) -> Result<Bytes, Decoding> {
    let mut out = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(Decoding::Corrupt)?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(Decoding::TooLarge);
        }
        hold(budget, n, held).ok_or(Decoding::Buffered)?;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out.into())
}
