//! Every shape in which audit events reach kaudit, turned into [`Event`]s.
//!
//! - the webhook backend's `EventList` (items usually lack `kind`/`apiVersion`),
//! - a single Event, or a JSON array of Events,
//! - the log backend's JSON lines (one Event per line), plain or gzip.
//!
//! A malformed line or item is reported with its position and skipped; it never costs the rest
//! of the document.

use super::Event;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};

/// Where in its document an item stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a JSON-lines document.
    Line(usize),
    /// 0-based index into an `EventList`'s items or a JSON array.
    Item(usize),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Item(n) => write!(f, "item {n}"),
        }
    }
}

/// An item that is not an audit event, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub position: Position,
    pub reason: String,
    /// The item's text as received (for a dead-letter topic), cut to 64 KiB.
    pub text: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.reason)
    }
}

impl std::error::Error for Malformed {}

const MAX_DEAD_LETTER_TEXT: usize = 64 * 1024;

fn malformed(position: Position, reason: impl Into<String>, text: &[u8]) -> Malformed {
    let cut = &text[..text.len().min(MAX_DEAD_LETTER_TEXT)];
    Malformed {
        position,
        reason: reason.into(),
        text: String::from_utf8_lossy(cut).into_owned(),
    }
}

fn event_at(position: Position, text: &[u8]) -> Result<Event, Malformed> {
    Event::from_json(Bytes::copy_from_slice(text)).map_err(|reason| malformed(position, reason, text))
}

#[derive(Deserialize)]
struct List<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// Decodes a whole document held in memory: an `EventList`, a single Event, a JSON array, or
/// JSON lines. `Err` only when the document is not JSON at all (nothing in it can be read).
pub fn decode_document(bytes: &[u8]) -> Result<Vec<Result<Event, Malformed>>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let trimmed = text.trim_start();
    match trimmed.as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(|e| format!("not a JSON array: {e}"))?;
            Ok(items
                .iter()
                .enumerate()
                .map(|(i, raw)| event_at(Position::Item(i), raw.get().as_bytes()))
                .collect())
        }
        Some(b'{') => match serde_json::from_str::<&RawValue>(trimmed) {
            Ok(one) => Ok(decode_object(one)),
            // More than one value, the first a whole line: the log backend's JSON lines.
            Err(_) if first_line_is_json(trimmed) => Ok(decode_lines(text)),
            Err(e) => Err(format!("not JSON: {e}")),
        },
        Some(_) => Err("not JSON: expected an EventList, an Event or an array of Events".into()),
        None => Ok(Vec::new()),
    }
}

fn first_line_is_json(text: &str) -> bool {
    let first = text.lines().next().unwrap_or_default();
    first.len() < text.len() && serde_json::from_str::<&RawValue>(first).is_ok()
}

/// One JSON object: an `EventList` (it has `items`) or one Event.
fn decode_object(one: &RawValue) -> Vec<Result<Event, Malformed>> {
    if let Ok(list) = serde_json::from_str::<List>(one.get()) {
        return list
            .items
            .iter()
            .enumerate()
            .map(|(i, raw)| event_at(Position::Item(i), raw.get().as_bytes()))
            .collect();
    }
    vec![event_at(Position::Item(0), one.get().as_bytes())]
}

fn decode_lines(text: &str) -> Vec<Result<Event, Malformed>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| event_at(Position::Line(i + 1), line.trim().as_bytes()))
        .collect()
}

/// Reads audit events from a file or stream, JSON lines streamed one at a time, any other
/// shape read whole. gzip input (by its magic bytes) is decompressed on the fly.
pub struct DocumentReader {
    input: Box<dyn BufRead + Send>,
    mode: Mode,
    line: usize,
    buf: Vec<u8>,
}

enum Mode {
    Start,
    Lines,
    Whole(std::vec::IntoIter<Result<Event, Malformed>>),
    Done,
}

impl DocumentReader {
    pub fn new(input: impl Read + Send + 'static) -> io::Result<DocumentReader> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let gz = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                flate2::bufread::MultiGzDecoder::new(input),
            ))
        } else {
            Box::new(input)
        };
        Ok(DocumentReader {
            input,
            mode: Mode::Start,
            line: 0,
            buf: Vec::with_capacity(8192),
        })
    }

    fn next_line(&mut self) -> io::Result<bool> {
        self.buf.clear();
        let n = self.input.read_until(b'\n', &mut self.buf)?;
        self.line += 1;
        Ok(n > 0)
    }

    /// Reads the first non-blank line and decides: a line that is a whole object and not an
    /// `EventList` starts JSON lines; anything else is one document read whole.
    fn start(&mut self) -> io::Result<Option<Result<Event, Malformed>>> {
        loop {
            if !self.next_line()? {
                self.mode = Mode::Done;
                return Ok(None);
            }
            if !self.buf.trim_ascii().is_empty() {
                break;
            }
        }
        let first = self.buf.trim_ascii();
        let lines = first.starts_with(b"{")
            && serde_json::from_slice::<&RawValue>(first).is_ok()
            && serde_json::from_slice::<List>(first).is_err();
        if lines {
            self.mode = Mode::Lines;
            return Ok(Some(event_at(Position::Line(self.line), first)));
        }
        let mut whole = std::mem::take(&mut self.buf);
        self.input.read_to_end(&mut whole)?;
        let items =
            decode_document(&whole).unwrap_or_else(|reason| vec![Err(malformed(Position::Item(0), reason, &whole))]);
        self.mode = Mode::Whole(items.into_iter());
        Ok(self.next_whole())
    }

    fn next_whole(&mut self) -> Option<Result<Event, Malformed>> {
        match &mut self.mode {
            Mode::Whole(items) => items.next(),
            _ => None,
        }
    }
}

impl Iterator for DocumentReader {
    type Item = io::Result<Result<Event, Malformed>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.mode {
            Mode::Start => self.start().transpose(),
            Mode::Lines => loop {
                match self.next_line() {
                    Err(e) => return Some(Err(e)),
                    Ok(false) => {
                        self.mode = Mode::Done;
                        return None;
                    }
                    Ok(true) => {
                        let line = self.buf.trim_ascii();
                        if !line.is_empty() {
                            return Some(Ok(event_at(Position::Line(self.line), line)));
                        }
                    }
                }
            },
            Mode::Whole(_) => self.next_whole().map(Ok),
            Mode::Done => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E1: &str = r#"{"auditID":"1","stage":"ResponseComplete","verb":"get"}"#;
    const E2: &str = r#"{"auditID":"2","stage":"ResponseComplete","verb":"create"}"#;

    fn ids(items: &[Result<Event, Malformed>]) -> Vec<String> {
        items
            .iter()
            .map(|r| match r {
                Ok(e) => e.view().audit_id().into_owned(),
                Err(m) => format!("bad {}", m.position),
            })
            .collect()
    }

    #[test]
    fn event_list_without_item_kinds() {
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{E1},{{"kind":"Pod"}},{E2}]}}"#
        );
        let items = decode_document(body.as_bytes()).unwrap();
        assert_eq!(ids(&items), ["1", "bad item 1", "2"]);
    }

    #[test]
    fn single_event_array_and_lines() {
        assert_eq!(ids(&decode_document(E1.as_bytes()).unwrap()), ["1"]);
        let arr = format!("[{E1}, 42, {E2}]");
        assert_eq!(ids(&decode_document(arr.as_bytes()).unwrap()), ["1", "bad item 1", "2"]);
        let lines = format!("{E1}\n\n{{broken\n{E2}\n");
        assert_eq!(
            ids(&decode_document(lines.as_bytes()).unwrap()),
            ["1", "bad line 3", "2"]
        );
    }

    #[test]
    fn not_json_is_an_error() {
        assert!(decode_document(b"hello").is_err());
        assert!(decode_document(b"{ nope").is_err());
        assert!(decode_document(b"[1, 2").is_err());
    }

    fn read_all(bytes: Vec<u8>) -> Vec<Result<Event, Malformed>> {
        DocumentReader::new(std::io::Cursor::new(bytes))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn reader_streams_lines_and_skips_bad_ones() {
        let text = format!("\n{E1}\nnot json\n{E2}");
        assert_eq!(ids(&read_all(text.into_bytes())), ["1", "bad line 3", "2"]);
    }

    #[test]
    fn reader_reads_pretty_documents_whole_and_gzip() {
        let pretty = format!("{{\n \"items\": [\n{E1},\n{E2}\n]\n}}\n");
        assert_eq!(ids(&read_all(pretty.clone().into_bytes())), ["1", "2"]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, format!("{E1}\n{E2}\n").as_bytes()).unwrap();
        assert_eq!(ids(&read_all(gz.finish().unwrap())), ["1", "2"]);
    }

    #[test]
    fn reader_reports_a_document_that_is_not_json() {
        let items = read_all(b"{\n nope".to_vec());
        assert_eq!(ids(&items), ["bad item 0"]);
    }
}
