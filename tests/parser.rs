//! Known-answer tests for the FER2013 CSV reader: small files built here, with exact pixels,
//! labels, usages and report counts, fed whole and in chunks of every awkward size.

use fer_cnn::data::{
    Dataset, Fer2013Parser, ParseReport, Parsed, Usage, EMOTIONS, FACE_PIXELS, MAX_LINE_BYTES, MAX_REPORTED_BAD_ROWS, NUM_CLASSES,
};
use fer_cnn::FerError;

/// A face whose pixels are `(i * 7 + label + row) % 256`, distinct per row and label.
fn face(label: u8, row: usize) -> Vec<u8> {
    (0..FACE_PIXELS).map(|i| ((i * 7 + usize::from(label) + row) % 256) as u8).collect()
}

fn pixels_text(face: &[u8]) -> String {
    face.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")
}

/// A well-formed `emotion,pixels,Usage` line, without its line end.
fn row(label: u8, row: usize, usage: &str) -> String {
    format!("{label},{},{usage}", pixels_text(&face(label, row)))
}

fn parse_chunked(bytes: &[u8], chunk: usize) -> fer_cnn::Result<Parsed> {
    let mut parser = Fer2013Parser::new();
    for piece in bytes.chunks(chunk.max(1)) {
        parser.push(piece);
    }
    parser.finish()
}

fn parse(text: &str) -> Parsed {
    parse_chunked(text.as_bytes(), usize::MAX).expect("the test file parses")
}

fn parse_error(bytes: &[u8]) -> String {
    match parse_chunked(bytes, usize::MAX) {
        Err(FerError::Data(message)) => message,
        Err(other) => panic!("expected a data error, got {other}"),
        Ok(parsed) => panic!("expected an error, got {} rows", parsed.dataset.len()),
    }
}

/// The bad rows as (line, reason) pairs.
fn bad_rows(report: &ParseReport) -> Vec<(u64, String)> {
    report.bad_rows.iter().map(|bad| (bad.line, bad.reason.clone())).collect()
}

fn assert_same_data(a: &Parsed, b: &Parsed) {
    assert_eq!(a.dataset.len(), b.dataset.len());
    for i in 0..a.dataset.len() {
        assert_eq!(a.dataset.face(i), b.dataset.face(i), "face {i}");
        assert_eq!(a.dataset.usage(i), b.dataset.usage(i), "usage {i}");
    }
    assert_eq!(a.dataset.labels(), b.dataset.labels());
    let a_report = serde_json::to_string(&a.report).unwrap();
    let b_report = serde_json::to_string(&b.report).unwrap();
    assert_eq!(a_report, b_report);
}

#[test]
fn constants_and_usage_names() {
    assert_eq!(FACE_PIXELS, 48 * 48);
    assert_eq!(EMOTIONS[3], "Happy");
    assert_eq!(EMOTIONS.len(), NUM_CLASSES);
    for (i, usage) in Usage::ALL.into_iter().enumerate() {
        assert_eq!(usage.index(), i);
        assert_eq!(Usage::from_name(usage.name()), Some(usage));
        assert_eq!(usage.name().parse::<Usage>().unwrap(), usage);
    }
    assert_eq!(Usage::from_name("privatetest"), Some(Usage::PrivateTest));
    assert_eq!(Usage::from_name("Train"), None);
    let message = "Validation".parse::<Usage>().unwrap_err().to_string();
    assert!(message.contains("Training, PublicTest or PrivateTest"), "{message}");
}

#[test]
fn dataset_push_checks_and_queries() {
    let mut dataset = Dataset::new();
    assert!(dataset.is_empty());
    dataset.push(&face(2, 0), 2, Usage::Training).unwrap();
    dataset.push(&face(5, 1), 5, Usage::PublicTest).unwrap();
    dataset.push(&face(2, 2), 2, Usage::Training).unwrap();
    assert!(dataset.push(&face(1, 0)[1..], 1, Usage::Training).is_err());
    assert!(dataset.push(&face(1, 0), 7, Usage::Training).is_err());
    assert_eq!(dataset.len(), 3);
    assert_eq!(dataset.face(1), &face(5, 1)[..]);
    assert_eq!(dataset.labels(), &[2, 5, 2]);
    assert_eq!(dataset.indices_of(Usage::Training), vec![0, 2]);
    assert_eq!(dataset.indices_of(Usage::PrivateTest), Vec::<usize>::new());
    assert_eq!(dataset.class_counts(&[0, 1, 2]), [0, 0, 2, 0, 0, 1, 0]);
}

#[test]
fn known_answer_with_header() {
    let text = [
        "emotion,pixels,Usage".to_string(),
        row(3, 0, "Training"),
        row(0, 1, "PublicTest"),
        row(6, 2, "PrivateTest"),
        row(3, 3, "Training"),
    ]
    .join("\n")
        + "\n";
    let Parsed { dataset, report } = parse(&text);
    assert_eq!(dataset.len(), 4);
    assert_eq!(dataset.labels(), &[3, 0, 6, 3]);
    assert_eq!(dataset.face(0), &face(3, 0)[..]);
    assert_eq!(dataset.face(2), &face(6, 2)[..]);
    assert_eq!(dataset.face(3)[..4], [6, 13, 20, 27], "(i * 7 + 3 + 3) % 256");
    assert_eq!(dataset.usage(1), Usage::PublicTest);
    assert_eq!(dataset.indices_of(Usage::Training), vec![0, 3]);
    assert!(report.header);
    assert_eq!(report.bytes_read, text.len() as u64);
    assert_eq!(report.lines_read, 5);
    assert_eq!((report.rows_ok, report.rows_bad), (4, 0));
    assert_eq!(report.per_usage, [2, 1, 1]);
    assert_eq!(report.per_class[Usage::Training.index()], [0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(report.per_class[Usage::PublicTest.index()], [1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(report.per_class[Usage::PrivateTest.index()], [0, 0, 0, 0, 0, 0, 1]);
}

/// A file with most of what the reader must cope with, good and bad rows mixed.
fn awkward_file() -> Vec<u8> {
    let mut file = b"\xEF\xBB\xBFemotion,pixels,Usage\r\n".to_vec();
    for i in 0..40u8 {
        let label = i % 7;
        let usage = Usage::ALL[usize::from(i % 3)].name();
        let line = match i % 8 {
            0 => format!("{label},\"{}\",\"{usage}\"", pixels_text(&face(label, i.into()))),
            1 => format!("  {label} ,  {}  , {usage} ", pixels_text(&face(label, i.into()))),
            2 => format!("{label},1 2 3,{usage}"),
            3 => String::new(),
            4 => format!("9,{}", pixels_text(&face(label, i.into()))),
            _ => row(label, i.into(), usage),
        };
        file.extend_from_slice(line.as_bytes());
        file.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"\n" });
    }
    file.extend_from_slice(row(4, 99, "Training").as_bytes());
    file
}

#[test]
fn chunk_size_does_not_change_the_result() {
    let file = awkward_file();
    let whole = parse_chunked(&file, usize::MAX).unwrap();
    assert_eq!(whole.report.rows_ok, 26);
    assert_eq!(whole.report.rows_bad, 10);
    assert_eq!(whole.report.lines_read, 42);
    for chunk in [1, 2, 3, 7, 13, 4096, 9217] {
        let chunked = parse_chunked(&file, chunk).unwrap();
        assert_same_data(&whole, &chunked);
    }
}

#[test]
fn a_size_hint_reserves_memory_without_changing_the_result() {
    let file = awkward_file();
    let whole = parse_chunked(&file, usize::MAX).unwrap();
    for hint in [0, file.len() as u64, u64::MAX] {
        let mut parser = Fer2013Parser::new();
        parser.expect_bytes(hint);
        parser.push(&file);
        assert_same_data(&whole, &parser.finish().unwrap());
    }
}

#[test]
fn progress_is_visible_while_streaming() {
    let text = format!("{}\n{}\n{}", row(1, 0, "Training"), row(2, 1, "Training"), row(3, 2, "Training"));
    let mut parser = Fer2013Parser::new();
    let first_line_and_a_half = row(1, 0, "Training").len() + 1 + 100;
    parser.push(&text.as_bytes()[..first_line_and_a_half]);
    assert_eq!(parser.report().rows_ok, 1);
    assert_eq!(parser.report().bytes_read, first_line_and_a_half as u64);
    assert_eq!(parser.dataset().labels(), &[1]);
    parser.push(&text.as_bytes()[first_line_and_a_half..]);
    assert_eq!(parser.report().rows_ok, 2, "the last line waits for finish");
    assert_eq!(parser.finish().unwrap().dataset.labels(), &[1, 2, 3]);
}

#[test]
fn crlf_line_ends() {
    let text = format!("{}\r\n{}\r\n", row(5, 0, "Training"), row(2, 1, "PrivateTest"));
    let parsed = parse(&text);
    assert_eq!(parsed.dataset.labels(), &[5, 2]);
    assert_eq!(parsed.dataset.usage(1), Usage::PrivateTest);
    assert_eq!(parsed.dataset.face(1), &face(2, 1)[..]);
    assert_eq!(parsed.report.rows_bad, 0);
    assert!(!parsed.report.header);
}

#[test]
fn byte_order_mark_before_header_or_data() {
    let with_header = format!("\u{FEFF}emotion,pixels,Usage\n{}\n", row(1, 0, "Training"));
    let parsed = parse(&with_header);
    assert!(parsed.report.header);
    assert_eq!(parsed.dataset.labels(), &[1]);

    let without_header = format!("\u{FEFF}{}\n", row(1, 0, "Training"));
    let parsed = parse(&without_header);
    assert!(!parsed.report.header);
    assert_eq!((parsed.report.rows_ok, parsed.report.rows_bad), (1, 0));
}

#[test]
fn quoted_fields() {
    let pixels = pixels_text(&face(3, 0));
    let text = format!(
        "\"emotion\",\"pixels\",\"Usage\",\"note\"\n\
         3,\"{pixels}\",Training,\"said \"\"hi\"\", then left\"\n\
         \"4\" , \"{pixels}\" ,\"PublicTest\",\n"
    );
    let parsed = parse(&text);
    assert_eq!(bad_rows(&parsed.report), vec![]);
    assert_eq!(parsed.dataset.labels(), &[3, 4]);
    assert_eq!(parsed.dataset.face(1), &face(3, 0)[..]);
    assert_eq!(parsed.dataset.usage(1), Usage::PublicTest);
}

#[test]
fn header_in_another_column_order() {
    let text = format!("Usage,Pixels,Emotion\nPrivateTest,{},6\nTraining,{},0\n", pixels_text(&face(6, 0)), pixels_text(&face(0, 1)));
    let parsed = parse(&text);
    assert_eq!(parsed.dataset.labels(), &[6, 0]);
    assert_eq!(parsed.dataset.usage(0), Usage::PrivateTest);
    assert_eq!(parsed.dataset.face(0), &face(6, 0)[..]);
    assert_eq!(parsed.dataset.face(1), &face(0, 1)[..]);
}

#[test]
fn header_with_spaces_like_icml_face_data() {
    let text = format!("emotion, Usage, pixels\n2, PublicTest, {}\n", pixels_text(&face(2, 0)));
    let parsed = parse(&text);
    assert_eq!(parsed.dataset.labels(), &[2]);
    assert_eq!(parsed.dataset.usage(0), Usage::PublicTest);
}

#[test]
fn header_without_usage_means_training() {
    let text = format!("emotion,pixels\n{},{}\n{},{}\n", 1, pixels_text(&face(1, 0)), 5, pixels_text(&face(5, 1)));
    let parsed = parse(&text);
    assert_eq!(parsed.dataset.labels(), &[1, 5]);
    assert_eq!(parsed.dataset.indices_of(Usage::Training), vec![0, 1]);
    assert_eq!(parsed.report.per_usage, [2, 0, 0]);
    assert_eq!(parsed.report.per_class[0], [0, 1, 0, 0, 0, 1, 0]);
}

#[test]
fn no_header_needs_three_columns() {
    let text = format!("{}\n0,{}\n", row(4, 0, "PublicTest"), pixels_text(&face(0, 1)));
    let parsed = parse(&text);
    assert!(!parsed.report.header);
    assert_eq!(parsed.dataset.labels(), &[4]);
    assert_eq!(bad_rows(&parsed.report), vec![(2, "expected 3 columns, found 2".to_string())]);
}

#[test]
fn blank_lines_and_no_final_newline() {
    let text = format!("\n\nemotion,pixels,Usage\n\n{}\n   \n\t\r\n{}", row(1, 0, "Training"), row(2, 1, "Training"));
    let parsed = parse(&text);
    assert_eq!(parsed.dataset.labels(), &[1, 2]);
    assert!(parsed.report.header);
    assert_eq!(parsed.report.lines_read, 8);
    assert_eq!(parsed.report.rows_bad, 0);

    let trailing_blank_lines = format!("{}\n\n\r\n  \n", row(1, 0, "Training"));
    let parsed = parse(&trailing_blank_lines);
    assert_eq!((parsed.report.rows_ok, parsed.report.rows_bad), (1, 0));
    assert_eq!(parsed.report.lines_read, 4);
}

#[test]
fn whitespace_between_pixels() {
    let pixels = face(0, 0).iter().map(u8::to_string).collect::<Vec<_>>().join("  \t ");
    let parsed = parse(&format!("0, {pixels} ,Training\n"));
    assert_eq!(parsed.dataset.face(0), &face(0, 0)[..]);
}

#[test]
fn malformed_rows_are_skipped_with_line_and_reason() {
    let good = pixels_text(&face(2, 0));
    let short = pixels_text(&face(2, 0)[1..]);
    let mut too_hot = face(2, 0).iter().map(u8::to_string).collect::<Vec<_>>();
    too_hot[16] = "300".to_string();
    let mut not_a_number = too_hot.clone();
    not_a_number[16] = "x7".to_string();
    let lines = [
        "emotion,pixels,Usage".to_string(),
        format!("2,{good},Training"),                     // 2: good
        format!("2,{good}"),                              // 3
        format!("2,{short},Training"),                    // 4
        format!("2,{good} 1,Training"),                   // 5
        format!("2,{},Training", too_hot.join(" ")),      // 6
        format!("2,{},Training", not_a_number.join(" ")), // 7
        format!("7,{good},Training"),                     // 8
        format!("happy,{good},Training"),                 // 9
        format!("2,{good},Validation"),                   // 10
        format!("2,\"{good},Training"),                   // 11
        format!("2,{good},Training,extra"),               // 12
        format!("-1,{good},Training"),                    // 13
        format!("2,{good},PublicTest"),                   // 14: good
    ];
    let parsed = parse(&lines.join("\n"));
    assert_eq!(parsed.dataset.labels(), &[2, 2]);
    assert_eq!(parsed.dataset.usage(1), Usage::PublicTest);
    let expected: Vec<(u64, &str)> = vec![
        (3, "expected 3 columns, found 2"),
        (4, "expected 2304 pixels, found 2303"),
        (5, "expected 2304 pixels, found 2305"),
        (6, "pixel 17 is '300', not 0-255"),
        (7, "pixel 17 is 'x7', not 0-255"),
        (8, "emotion '7' is not 0-6"),
        (9, "emotion 'happy' is not 0-6"),
        (10, "usage 'Validation' is not Training, PublicTest or PrivateTest"),
        (11, "no closing quote"),
        (12, "expected 3 columns, found 4"),
        (13, "emotion '-1' is not 0-6"),
    ];
    let found = bad_rows(&parsed.report);
    assert_eq!(found.len(), expected.len(), "{found:?}");
    for ((line, reason), (expected_line, expected_reason)) in found.iter().zip(&expected) {
        assert_eq!(line, expected_line, "{reason}");
        assert!(reason.contains(expected_reason), "line {line}: '{reason}' lacks '{expected_reason}'");
    }
    assert_eq!(parsed.report.rows_bad, expected.len());
    assert_eq!(parsed.report.rows_ok, 2);
}

#[test]
fn non_utf8_bytes_make_a_bad_row() {
    let mut file = format!("{}\n", row(1, 0, "Training")).into_bytes();
    file.extend_from_slice(b"3,\xFF\xFE 1 2,Training\n");
    file.extend_from_slice(format!("{}\n", row(2, 1, "Training")).as_bytes());
    let parsed = parse_chunked(&file, 5).unwrap();
    assert_eq!(parsed.dataset.labels(), &[1, 2]);
    assert_eq!(bad_rows(&parsed.report), vec![(2, "line is not valid UTF-8 text".to_string())]);
}

#[test]
fn only_the_first_bad_rows_are_listed() {
    let mut text = String::from("emotion,pixels,Usage\n");
    for _ in 0..MAX_REPORTED_BAD_ROWS + 50 {
        text.push_str("1,2 3,Training\n");
    }
    text.push_str(&row(0, 0, "Training"));
    let parsed = parse(&text);
    assert_eq!(parsed.report.rows_bad, MAX_REPORTED_BAD_ROWS + 50);
    assert_eq!(parsed.report.bad_rows.len(), MAX_REPORTED_BAD_ROWS);
    assert_eq!(parsed.report.bad_rows[0].line, 2);
    assert_eq!(parsed.dataset.len(), 1);
}

#[test]
fn empty_files_are_errors() {
    assert!(parse_error(b"").contains("empty file"));
    assert!(parse_error(b"\n\r\n  \n").contains("empty file"));
    assert!(parse_error(b"\xEF\xBB\xBF").contains("empty file"));
    assert!(parse_error(b"emotion,pixels,Usage\n").contains("no data rows"));
}

#[test]
fn files_that_are_not_fer2013_are_errors() {
    let png = b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR\0\0\0\x30\0\0\0\x30\x08\x00\0\0\0\xFD\x0B\x30";
    let message = parse_error(png);
    assert!(message.starts_with("not a FER2013 CSV"), "{message}");
    assert!(message.contains("line 1: line is not valid UTF-8 text"), "{message}");

    let message = parse_error(b"a,b,c\n1,2,3\n");
    assert!(message.starts_with("not a FER2013 CSV"), "{message}");
    assert!(message.contains("'emotion' and 'pixels'"), "{message}");

    let message = parse_error(b"pixels\n1 2 3\n");
    assert!(message.contains("no 'emotion' column"), "{message}");

    let message = parse_error(b"1,2 3,Training\n4,5,6\n");
    assert!(message.contains("line 1: expected 2304 pixels, found 2"), "{message}");
    assert!(message.contains("line 2: usage '6' is not"), "{message}");
}

#[test]
fn overlong_lines_are_bad_rows_and_not_buffered() {
    let long_line = vec![b'7'; 200 * 1024];
    for chunk in [1, 4096, usize::MAX] {
        let message = match parse_chunked(&long_line, chunk) {
            Err(FerError::Data(message)) => message,
            other => panic!("expected a data error, got {:?}", other.map(|p| p.report)),
        };
        assert!(message.contains(&format!("line 1: line longer than {MAX_LINE_BYTES} bytes")), "{message}");
    }

    let mut file = format!("{}\n", row(3, 0, "Training")).into_bytes();
    file.extend_from_slice(&vec![b' '; MAX_LINE_BYTES + 1]);
    file.extend_from_slice(b"\n");
    file.extend_from_slice(row(4, 1, "Training").as_bytes());
    for chunk in [1, 13, 4096, usize::MAX] {
        let parsed = parse_chunked(&file, chunk).unwrap();
        assert_eq!(parsed.dataset.labels(), &[3, 4]);
        assert_eq!(bad_rows(&parsed.report), vec![(2, "line longer than 65536 bytes".to_string())]);
    }
}

#[test]
fn garbage_never_panics() {
    // A small linear congruential generator keeps the test deterministic and dependency-free.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u8
    };
    let alphabet = b"0123456789 ,\"\r\n\xEF\xBB\xBF\xFFaT";
    for round in 0..20 {
        let bytes: Vec<u8> =
            (0..20_000).map(|_| if round % 2 == 0 { next() } else { alphabet[usize::from(next()) % alphabet.len()] }).collect();
        let mut parser = Fer2013Parser::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let take = (usize::from(next()) + 1).min(rest.len());
            parser.push(&rest[..take]);
            rest = &rest[take..];
        }
        assert_eq!(parser.report().bytes_read, bytes.len() as u64);
        let _ = parser.finish();
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod files {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("fer-parser-test-{}-{name}", std::process::id()))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn read_csv_and_csv_gz_paths_alike() {
        let file = awkward_file();
        let from_memory = parse_chunked(&file, usize::MAX).unwrap();
        let csv = temp_path("faces.csv");
        let gz = temp_path("faces.csv.gz");
        let gz_named_csv = temp_path("gzip-inside.csv");
        std::fs::write(&csv, &file).unwrap();
        std::fs::write(&gz, gzip(&file)).unwrap();
        std::fs::write(&gz_named_csv, gzip(&file)).unwrap();

        for path in [&csv, &gz, &gz_named_csv] {
            let mut progress = Vec::new();
            let parsed = fer_cnn::data::read_fer2013_path(path, |bytes| progress.push(bytes)).unwrap();
            assert_same_data(&from_memory, &parsed);
            let size_on_disk = std::fs::metadata(path).unwrap().len();
            assert_eq!(progress.last(), Some(&size_on_disk), "{}", path.display());
            assert!(progress.windows(2).all(|pair| pair[0] <= pair[1]));
        }
        for path in [csv, gz, gz_named_csv] {
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn io_errors_name_the_path() {
        let missing = temp_path("missing.csv");
        let message = fer_cnn::data::read_fer2013_path(&missing, |_| {}).unwrap_err().to_string();
        assert!(message.contains(&missing.display().to_string()), "{message}");

        let broken = temp_path("broken.csv.gz");
        std::fs::write(&broken, b"not gzip at all").unwrap();
        let message = fer_cnn::data::read_fer2013_path(&broken, |_| {}).unwrap_err().to_string();
        std::fs::remove_file(&broken).unwrap();
        assert!(message.contains(&broken.display().to_string()), "{message}");
    }
}
