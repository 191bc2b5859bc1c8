//! Fuzzes the capture-file reader: the input is written to a temporary file, opened with
//! `CaptureFile::open` and read frame by frame, each frame being decoded.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use tapvault_dataplane::decode::decode;
use tapvault_dataplane::source::CaptureFile;

fuzz_target!(|data: &[u8]| {
    let path =
        std::env::temp_dir().join(format!("tapvault-fuzz-reader-{}.cap", std::process::id()));
    {
        let Ok(mut f) = std::fs::File::create(&path) else {
            return;
        };
        if f.write_all(data).is_err() {
            return;
        }
    }
    if let Ok(mut cap) = CaptureFile::open(&path) {
        // Bounded in case a reader bug yields frames forever without consuming input.
        for _ in 0..1_000_000 {
            match cap.next_frame() {
                Ok(Some(frame)) => {
                    let _ = decode(frame.linktype, frame.data);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
