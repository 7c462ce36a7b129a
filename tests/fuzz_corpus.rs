//! Replays the committed fuzz corpus (`fuzz/corpus-min/<target>.hex`, one
//! hex-encoded input per line, written by `fuzz/pack-corpus.py` after
//! `cargo fuzz cmin`) through the same checks the fuzz targets run, so every
//! CI run re-tests every input the fuzzers found interesting (see
//! docs/DESIGN.md §10).

use std::path::Path;

fn decode_hex(line: &str) -> Vec<u8> {
    (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("corpus lines are hex"))
        .collect()
}

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-min");
    let mut replayed = 0;
    for (name, check) in wfstate::fuzzing::TARGETS {
        let path = root.join(format!("{name}.hex"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("corpus {} missing: {e}", path.display()));
        let mut count = 0;
        for line in text.lines() {
            check(&decode_hex(line));
            count += 1;
        }
        assert!(count > 0, "corpus {} is empty", path.display());
        replayed += count;
    }
    eprintln!(
        "replayed {replayed} fuzz corpus inputs across {} targets",
        wfstate::fuzzing::TARGETS.len()
    );
}
