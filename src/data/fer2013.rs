//! A streaming reader for the FER2013 CSV.
//!
//! # The format
//!
//! One face per line, three columns: `emotion,pixels,Usage`.
//! - `emotion` is 0..=6, an index into [`EMOTIONS`](super::EMOTIONS) (Angry, Disgust, Fear, Happy, Sad,
//!   Surprise, Neutral);
//! - `pixels` is 2304 space-separated integers 0..=255: a 48×48 grayscale face, row-major;
//! - `Usage` is `Training`, `PublicTest` or `PrivateTest` (the official train / validation /
//!   test split).
//!
//! An optional header line names the columns, in any order; Kaggle's `train.csv` has only
//! `emotion,pixels`, and its rows are all training rows. The reader also takes what editors
//! and exporters add: CRLF line ends, a UTF-8 byte order mark, double-quoted fields (with `""`
//! escapes), blank lines and stray whitespace. A malformed row is skipped and reported with its
//! line number and a reason a person can act on; the good rows are kept.
//!
//! # The streaming design
//!
//! The real file is 287 MB, so it is never held as text, neither natively nor in the browser:
//! [`Fer2013Parser::push`] takes the file in byte chunks of any size (a chunk may end inside a
//! number, or between `\r` and `\n`). A complete line that lies inside one chunk is parsed in
//! place; only a line that straddles chunks is copied, into one reused buffer capped at
//! [`MAX_LINE_BYTES`], so that a binary or garbage file cannot grow memory. Fields are found
//! as byte ranges of the line, and pixels are parsed byte by byte into a reused face buffer
//! that is appended to the [`Dataset`]'s single `Vec<u8>` of faces: a good row allocates
//! nothing, and a string is built only to quote a bad row in its reason.

use std::borrow::Cow;

use serde::Serialize;

use super::dataset::{Dataset, Usage};
use super::face::{FACE_PIXELS, NUM_CLASSES};
use crate::{FerError, Result};

/// How many bad rows a [`ParseReport`] lists; it counts all of them.
pub const MAX_REPORTED_BAD_ROWS: usize = 100;
/// The longest line accepted, without its `\n`. A real row is at most about 9 KiB.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Longest excerpt of a field quoted in a bad-row reason.
const EXCERPT_CHARS: usize = 40;
const NOT_UTF8: &str = "line is not valid UTF-8 text";

/// A row that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadRow {
    /// 1-based physical line number in the file.
    pub line: u64,
    pub reason: String,
}

/// What the parser has read so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ParseReport {
    pub bytes_read: u64,
    /// Complete lines seen, blank ones and the header included.
    pub lines_read: u64,
    pub rows_ok: usize,
    pub rows_bad: usize,
    /// Good rows per usage, indexed by [`Usage::index`].
    pub per_usage: [usize; 3],
    /// Good rows per usage and emotion: `per_class[usage.index()][label]`.
    pub per_class: [[usize; NUM_CLASSES]; 3],
    /// The first [`MAX_REPORTED_BAD_ROWS`] bad rows; `rows_bad` counts them all.
    pub bad_rows: Vec<BadRow>,
    /// Whether a header line was found.
    pub header: bool,
}

/// The result of a whole parse.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub dataset: Dataset,
    pub report: ParseReport,
}

/// Reads a FER2013 CSV pushed in byte chunks of any size; see the module documentation.
#[derive(Debug, Default)]
pub struct Fer2013Parser {
    lines: LineSplitter,
    rows: RowParser,
}

impl Fer2013Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves room for the rows a CSV of `csv_bytes` holds (a FER2013 row is about 8 KB;
    /// at most 200,000 rows are reserved, whatever the hint says).
    pub fn expect_bytes(&mut self, csv_bytes: u64) {
        const BYTES_PER_ROW: u64 = 7_800;
        const MAX_RESERVED_ROWS: u64 = 200_000;
        self.rows.dataset.reserve((csv_bytes / BYTES_PER_ROW).min(MAX_RESERVED_ROWS) as usize);
    }

    /// Feeds the next bytes of the file; never panics, whatever the bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.rows.report.bytes_read += chunk.len() as u64;
        self.lines.push(chunk, &mut self.rows);
    }

    /// Progress so far (rows parsed, bytes read).
    pub fn report(&self) -> &ParseReport {
        &self.rows.report
    }

    /// The rows parsed so far.
    pub fn dataset(&self) -> &Dataset {
        &self.rows.dataset
    }

    /// Parses the last line (a final newline is optional) and hands over the data.
    ///
    /// Fails when the input has no valid row at all, or when its header lacks the emotion or
    /// pixels column.
    pub fn finish(mut self) -> Result<Parsed> {
        self.lines.finish(&mut self.rows);
        let RowParser { layout, dataset, report, .. } = self.rows;
        if let Layout::Unusable(message) = layout {
            return Err(FerError::Data(message));
        }
        if report.rows_ok == 0 {
            return Err(FerError::Data(no_valid_row_message(&report)));
        }
        Ok(Parsed { dataset, report })
    }
}

fn no_valid_row_message(report: &ParseReport) -> String {
    if report.rows_bad == 0 {
        return if report.header { "the file has a header but no data rows".to_string() } else { "empty file".to_string() };
    }
    const SHOWN: usize = 3;
    let first_reasons: Vec<String> = report.bad_rows.iter().take(SHOWN).map(|bad| format!("line {}: {}", bad.line, bad.reason)).collect();
    let more = if report.rows_bad > SHOWN { "; ..." } else { "" };
    format!("not a FER2013 CSV: none of its {} rows is valid ({}{more})", report.rows_bad, first_reasons.join("; "))
}

/// Cuts the byte stream into lines, holding back the unfinished end of each chunk.
#[derive(Debug, Default)]
struct LineSplitter {
    /// The start of a line whose end has not arrived yet; at most [`MAX_LINE_BYTES`].
    partial: Vec<u8>,
    /// The current line is too long: its bytes are dropped until the next `\n`.
    overlong: bool,
}

impl LineSplitter {
    fn push(&mut self, mut chunk: &[u8], rows: &mut RowParser) {
        while let Some(newline) = find_byte(chunk, b'\n') {
            let (line, rest) = chunk.split_at(newline);
            self.end_line(line, rows);
            chunk = rest.get(1..).unwrap_or_default();
        }
        self.continue_line(chunk);
    }

    fn finish(&mut self, rows: &mut RowParser) {
        if self.overlong || !self.partial.is_empty() {
            self.end_line(&[], rows);
        }
    }

    /// Adds bytes to the current line, which goes on in a later chunk.
    fn continue_line(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE_BYTES {
            self.overlong = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    /// Completes the current line with `tail` and hands it over.
    fn end_line(&mut self, tail: &[u8], rows: &mut RowParser) {
        if self.overlong || self.partial.len() + tail.len() > MAX_LINE_BYTES {
            self.overlong = false;
            self.partial.clear();
            rows.overlong_line();
        } else if self.partial.is_empty() {
            rows.line(tail);
        } else {
            self.partial.extend_from_slice(tail);
            rows.line(&self.partial);
            self.partial.clear();
        }
    }
}

/// Where the columns are in each row.
#[derive(Clone, Copy, Debug)]
struct ColumnMap {
    count: usize,
    emotion: usize,
    pixels: usize,
    /// Without a usage column every row is a training row.
    usage: Option<usize>,
}

impl ColumnMap {
    const HEADERLESS: ColumnMap = ColumnMap { count: 3, emotion: 0, pixels: 1, usage: Some(2) };
}

#[derive(Debug, Default)]
enum Layout {
    /// No non-blank line yet, so whether there is a header is unknown.
    #[default]
    Undecided,
    Known(ColumnMap),
    /// The header lacks a needed column, so no row can be read; this is the error message.
    Unusable(String),
}

/// A field's place in its line: the bytes between the quotes for a quoted field, the
/// whitespace-trimmed bytes otherwise.
#[derive(Clone, Copy, Debug)]
struct FieldSpan {
    start: usize,
    end: usize,
    quoted: bool,
}

impl FieldSpan {
    const EMPTY: FieldSpan = FieldSpan { start: 0, end: 0, quoted: false };

    fn raw<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        line.get(self.start..self.end).unwrap_or_default()
    }

    /// The field's text with `""` escapes undone and surrounding whitespace removed.
    fn text<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        let raw = self.raw(line);
        if self.quoted && raw.windows(2).any(|pair| pair == b"\"\"") {
            let mut unescaped = Vec::with_capacity(raw.len());
            let mut bytes = raw.iter().copied();
            while let Some(b) = bytes.next() {
                unescaped.push(b);
                if b == b'"' {
                    bytes.next(); // the second quote of the pair
                }
            }
            Cow::Owned(unescaped.trim_ascii().to_vec())
        } else {
            Cow::Borrowed(raw.trim_ascii())
        }
    }
}

/// Turns lines into rows of the dataset and keeps the report.
#[derive(Debug)]
struct RowParser {
    layout: Layout,
    dataset: Dataset,
    report: ParseReport,
    /// Reused for every line so that a row allocates nothing.
    fields: Vec<FieldSpan>,
    face: [u8; FACE_PIXELS],
}

impl Default for RowParser {
    fn default() -> Self {
        Self {
            layout: Layout::default(),
            dataset: Dataset::default(),
            report: ParseReport::default(),
            fields: Vec::new(),
            face: [0; FACE_PIXELS],
        }
    }
}

impl RowParser {
    /// One complete line, without its `\n`.
    fn line(&mut self, raw: &[u8]) {
        self.report.lines_read += 1;
        let line_number = self.report.lines_read;
        let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line_number == 1 {
            line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let columns = match &self.layout {
            Layout::Known(columns) => *columns,
            Layout::Unusable(_) => return,
            Layout::Undecided => match self.decide_layout(line) {
                Some(columns) => columns,
                None => return,
            },
        };
        match self.parse_row(line, columns) {
            Ok((label, usage)) => self.add_row(label, usage),
            Err(reason) => {
                // Binary input fails somewhere in its fields; saying it is not text is clearer.
                let reason = if std::str::from_utf8(line).is_err() { NOT_UTF8.to_string() } else { reason };
                self.add_bad_row(line_number, reason);
            }
        }
    }

    /// A line over [`MAX_LINE_BYTES`], whose bytes were dropped.
    fn overlong_line(&mut self) {
        self.report.lines_read += 1;
        // A header is never this long, so the file has none.
        if let Layout::Undecided = self.layout {
            self.layout = Layout::Known(ColumnMap::HEADERLESS);
        }
        if let Layout::Known(_) = self.layout {
            let reason = format!("line longer than {MAX_LINE_BYTES} bytes");
            self.add_bad_row(self.report.lines_read, reason);
        }
    }

    /// Decides the layout from the first non-blank line. Returns the columns when that line is
    /// a data row, `None` when it was a header.
    fn decide_layout(&mut self, line: &[u8]) -> Option<ColumnMap> {
        let is_header = std::str::from_utf8(line).is_ok()
            && split_fields(line, &mut self.fields).is_ok()
            && self.fields.first().is_some_and(|first| !is_integer(&first.text(line)));
        if !is_header {
            self.layout = Layout::Known(ColumnMap::HEADERLESS);
            return Some(ColumnMap::HEADERLESS);
        }
        self.report.header = true;
        let names: Vec<String> = self.fields.iter().map(|field| String::from_utf8_lossy(&field.text(line)).to_ascii_lowercase()).collect();
        let column = |name: &str| names.iter().position(|n| n == name);
        self.layout = match (column("emotion"), column("pixels")) {
            (Some(emotion), Some(pixels)) => Layout::Known(ColumnMap { count: names.len(), emotion, pixels, usage: column("usage") }),
            (emotion, pixels) => {
                let missing = match (emotion, pixels) {
                    (None, None) => "'emotion' and 'pixels' columns",
                    (None, Some(_)) => "'emotion' column",
                    _ => "'pixels' column",
                };
                Layout::Unusable(format!("not a FER2013 CSV: its header '{}' has no {missing}", excerpt(line)))
            }
        };
        None
    }

    /// Parses a data row, leaving its face in `self.face`.
    fn parse_row(&mut self, line: &[u8], columns: ColumnMap) -> std::result::Result<(u8, Usage), String> {
        split_fields(line, &mut self.fields)?;
        let fields = &self.fields;
        if fields.len() != columns.count {
            return Err(format!("expected {} columns, found {}", columns.count, fields.len()));
        }
        // The column indices are below `columns.count`, so every field exists.
        let field = |column: usize| fields.get(column).copied().unwrap_or(FieldSpan::EMPTY);
        let label = parse_emotion(&field(columns.emotion).text(line))?;
        let usage = match columns.usage {
            Some(column) => parse_usage(&field(column).text(line))?,
            None => Usage::Training,
        };
        parse_pixels(field(columns.pixels).raw(line), &mut self.face)?;
        let used = [Some(columns.emotion), Some(columns.pixels), columns.usage];
        let unused_fields_are_text = fields
            .iter()
            .enumerate()
            .filter(|(column, _)| !used.contains(&Some(*column)))
            .all(|(_, f)| std::str::from_utf8(f.raw(line)).is_ok());
        if !unused_fields_are_text {
            return Err(NOT_UTF8.to_string());
        }
        Ok((label, usage))
    }

    fn add_row(&mut self, label: u8, usage: Usage) {
        self.dataset.push_validated(&self.face, label, usage);
        let report = &mut self.report;
        report.rows_ok += 1;
        report.per_usage[usage.index()] += 1;
        report.per_class[usage.index()][usize::from(label)] += 1;
    }

    fn add_bad_row(&mut self, line: u64, reason: String) {
        self.report.rows_bad += 1;
        if self.report.bad_rows.len() < MAX_REPORTED_BAD_ROWS {
            self.report.bad_rows.push(BadRow { line, reason });
        }
    }
}

/// Splits a CSV line into `fields`: commas separate fields, except inside double quotes.
fn split_fields(line: &[u8], fields: &mut Vec<FieldSpan>) -> std::result::Result<(), String> {
    fields.clear();
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(u8::is_ascii_whitespace) {
            pos += 1;
        }
        let column = fields.len() + 1;
        if line.get(pos) == Some(&b'"') {
            let start = pos + 1;
            let mut end = start;
            loop {
                let rest = line.get(end..).unwrap_or_default();
                let Some(quote) = find_byte(rest, b'"') else {
                    return Err(format!("column {column} has no closing quote"));
                };
                end += quote;
                if line.get(end + 1) != Some(&b'"') {
                    break;
                }
                end += 2; // an escaped quote
            }
            fields.push(FieldSpan { start, end, quoted: true });
            pos = end + 1;
            while line.get(pos).is_some_and(u8::is_ascii_whitespace) {
                pos += 1;
            }
            match line.get(pos) {
                None => return Ok(()),
                Some(b',') => pos += 1,
                Some(_) => return Err(format!("column {column} has text after its closing quote")),
            }
        } else {
            let rest = line.get(pos..).unwrap_or_default();
            let comma = find_byte(rest, b',');
            let end = comma.map_or(line.len(), |offset| pos + offset);
            let trimmed_len = line.get(pos..end).unwrap_or_default().trim_ascii_end().len();
            fields.push(FieldSpan { start: pos, end: pos + trimmed_len, quoted: false });
            if comma.is_none() {
                return Ok(());
            }
            pos = end + 1;
        }
    }
}

/// The first `needle` in `haystack`, looked for eight bytes at a time: the newline and comma
/// searches cross every byte of the file, and this is four times faster than a byte loop.
fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut checked = 0;
    for word in haystack.chunks_exact(8) {
        let word = u64::from_ne_bytes(word.try_into().unwrap_or_default());
        // A byte equal to `needle` becomes zero after the XOR; this detects any zero byte.
        let matches = word ^ pattern;
        if matches.wrapping_sub(ONES) & !matches & HIGH_BITS != 0 {
            break;
        }
        checked += 8;
    }
    let rest = haystack.get(checked..)?;
    rest.iter().position(|&b| b == needle).map(|offset| checked + offset)
}

fn parse_emotion(text: &[u8]) -> std::result::Result<u8, String> {
    parse_decimal(text)
        .and_then(|value| u8::try_from(value).ok())
        .filter(|&label| usize::from(label) < NUM_CLASSES)
        .ok_or_else(|| format!("emotion '{}' is not 0-{}", excerpt(text), NUM_CLASSES - 1))
}

fn parse_usage(text: &[u8]) -> std::result::Result<Usage, String> {
    Usage::from_name_bytes(text).ok_or_else(|| format!("usage '{}' is not Training, PublicTest or PrivateTest", excerpt(text)))
}

/// Parses whitespace-separated pixel values into `face`. Errors name pixels from 1.
///
/// This is the hot loop of the whole reader (95% of the file's bytes), so it is one pass
/// over the bytes with no per-token work beyond storing the value.
fn parse_pixels(field: &[u8], face: &mut [u8; FACE_PIXELS]) -> std::result::Result<(), String> {
    let mut count = 0;
    let mut value = 0u32;
    let mut in_token = false;
    for (position, &byte) in field.iter().enumerate() {
        let digit = byte.wrapping_sub(b'0');
        if digit < 10 {
            value = value * 10 + u32::from(digit);
            in_token = true;
            // Stopping here also keeps `value` far from overflowing.
            if value > 255 {
                return Err(bad_pixel(field, position, count));
            }
        } else if byte.is_ascii_whitespace() {
            if in_token {
                store_pixel(face, count, value);
                count += 1;
                value = 0;
                in_token = false;
            }
        } else {
            return Err(bad_pixel(field, position, count));
        }
    }
    if in_token {
        store_pixel(face, count, value);
        count += 1;
    }
    if count != FACE_PIXELS {
        return Err(format!("expected {FACE_PIXELS} pixels, found {count}"));
    }
    Ok(())
}

/// Past [`FACE_PIXELS`] values are only counted, for the error message.
fn store_pixel(face: &mut [u8; FACE_PIXELS], index: usize, value: u32) {
    if let Some(slot) = face.get_mut(index) {
        *slot = value as u8; // at most 255, checked by the caller
    }
}

/// The reason for the token around `position`, which is not a number in 0..=255.
fn bad_pixel(field: &[u8], position: usize, pixels_before: usize) -> String {
    let (before, after) = field.split_at(position.min(field.len()));
    let start = before.iter().rposition(u8::is_ascii_whitespace).map_or(0, |space| space + 1);
    let end = after.iter().position(u8::is_ascii_whitespace).map_or(field.len(), |space| position + space);
    let token = field.get(start..end).unwrap_or_default();
    format!("pixel {} is '{}', not 0-255", pixels_before + 1, excerpt(token))
}

/// A non-negative decimal integer, saturating at `u32::MAX`; `None` unless all digits.
fn parse_decimal(text: &[u8]) -> Option<u32> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0u32, |value, &digit| value.saturating_mul(10).saturating_add(u32::from(digit - b'0'))))
}

/// Whether a header candidate's first field is a number, which makes the line a data row.
fn is_integer(text: &[u8]) -> bool {
    parse_decimal(text.strip_prefix(b"-").unwrap_or(text)).is_some()
}

/// A short, printable quote of input bytes for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() <= EXCERPT_CHARS {
        text.into_owned()
    } else {
        let start: String = text.chars().take(EXCERPT_CHARS).collect();
        format!("{start}...")
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::read_fer2013_path;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::fs::File;
    use std::io::{self, BufRead, BufReader, Read};
    use std::path::Path;

    use flate2::bufread::MultiGzDecoder;

    use super::{Fer2013Parser, Parsed};
    use crate::{FerError, Result};

    const CHUNK_BYTES: usize = 1 << 20;
    const GZIP_MAGIC: &[u8] = b"\x1F\x8B";

    /// Reads a FER2013 `.csv`, or a gzip-compressed one (known by a `.gz` extension or by its
    /// magic bytes), in 1 MiB chunks. `progress` gets the bytes read from disk so far after each
    /// chunk, to compare with the file's size. I/O errors name the path.
    pub fn read_fer2013_path(path: &Path, mut progress: impl FnMut(u64)) -> Result<Parsed> {
        let at_path = |error: io::Error| FerError::Io(io::Error::new(error.kind(), format!("{}: {error}", path.display())));
        let file = File::open(path).map_err(at_path)?;
        let mut source = BufReader::with_capacity(CHUNK_BYTES, CountingReader { inner: file, bytes: 0 });
        let has_gz_extension = path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("gz"));
        let gzip = has_gz_extension || source.fill_buf().map_err(at_path)?.starts_with(GZIP_MAGIC);
        let mut parser = Fer2013Parser::new();
        if gzip {
            let mut decoder = MultiGzDecoder::new(source);
            pump(&mut decoder, &mut parser, |d| d.get_ref().get_ref().bytes, &mut progress)
        } else {
            pump(&mut source, &mut parser, |s| s.get_ref().bytes, &mut progress)
        }
        .map_err(at_path)?;
        parser.finish()
    }

    /// Moves everything from `reader` into `parser`, reporting `bytes_on_disk` as it goes.
    fn pump<R: Read>(
        reader: &mut R,
        parser: &mut Fer2013Parser,
        bytes_on_disk: impl Fn(&R) -> u64,
        progress: &mut impl FnMut(u64),
    ) -> io::Result<()> {
        let mut chunk = vec![0; CHUNK_BYTES];
        loop {
            let filled = match reader.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(filled) => filled,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            parser.push(chunk.get(..filled).unwrap_or_default());
            progress(bytes_on_disk(reader));
        }
    }

    /// Counts the bytes read through it, which for the file is the progress on disk.
    struct CountingReader<R> {
        inner: R,
        bytes: u64,
    }

    impl<R: Read> Read for CountingReader<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let read = self.inner.read(buf)?;
            self.bytes += read as u64;
            Ok(read)
        }
    }
}
