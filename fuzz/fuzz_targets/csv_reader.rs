//! The FER2013 reader on any bytes in any chunking: it never panics, and the chunking never
//! changes what it reads (the same faces, labels, usages and report as in one piece).
#![no_main]

use fer_cnn::data::Fer2013Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&chunk_seed, bytes)) = input.split_first() else { return };
    let whole = {
        let mut parser = Fer2013Parser::new();
        parser.push(bytes);
        parser.finish()
    };
    let mut parser = Fer2013Parser::new();
    let mut rest = bytes;
    let mut size = 1 + chunk_seed as usize;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        parser.push(chunk);
        rest = tail;
        size = 1 + (size * 7 + 3) % 97;
    }
    let chunked = parser.finish();
    match (whole, chunked) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.dataset.len(), b.dataset.len());
            for row in 0..a.dataset.len() {
                assert_eq!(a.dataset.face(row), b.dataset.face(row));
                assert_eq!((a.dataset.label(row), a.dataset.usage(row)), (b.dataset.label(row), b.dataset.usage(row)));
            }
            assert_eq!(a.report.bad_rows, b.report.bad_rows);
            assert_eq!((a.report.rows_ok, a.report.rows_bad), (b.report.rows_ok, b.report.rows_bad));
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("one piece: {:?}, chunked: {:?}", a.map(|p| p.report), b.map(|p| p.report)),
    }
});
