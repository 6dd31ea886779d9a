//! Any byte string given to the GGUF reader must parse or return an error: no panic, no hang,
//! no allocation far beyond the input's size. Parsed files are re-read through every accessor.
#![no_main]

use ferrite_gguf::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::from_bytes(data.to_vec()) {
        for (k, v) in f.metadata() {
            let _ = (f.get(k), v.as_u64(), v.as_f64(), v.as_str(), v.as_array().map(|a| a.len()));
        }
        for t in f.tensors() {
            let d = f.tensor_data(t);
            assert_eq!(d.len() as u64, t.size_bytes);
            let _ = t.rows_cols();
        }
    }
});
