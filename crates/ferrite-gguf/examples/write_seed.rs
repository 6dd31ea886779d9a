//! Writes a few small valid GGUF files as a fuzzing seed corpus: `cargo run --example write_seed -- DIR`.
use ferrite_gguf::{Array, GgmlType, GgufWriter, Value};

fn main() {
    let dir = std::env::args().nth(1).expect("usage: write_seed DIR");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata(
        "a",
        Value::Array(Array::String(vec!["x".into(), "yz".into()])),
    );
    w.add_metadata(
        "n",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::F32(vec![0.5]),
        ])),
    );
    w.add_metadata("b", Value::Bool(true));
    w.add_tensor("t0", &[32, 2], GgmlType::Q8_0, &[1u8; 68])
        .unwrap();
    w.add_tensor("t1", &[4], GgmlType::F32, &[0u8; 16]).unwrap();
    std::fs::write(format!("{dir}/seed1.gguf"), w.to_bytes().unwrap()).unwrap();
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", Value::U32(64));
    w.add_tensor("k", &[256], GgmlType::Q4_K, &[0u8; 144])
        .unwrap();
    std::fs::write(format!("{dir}/seed2.gguf"), w.to_bytes().unwrap()).unwrap();
}
