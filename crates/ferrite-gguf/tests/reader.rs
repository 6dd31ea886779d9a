//! Reader/writer round trips and one test per way a file can be broken.

use ferrite_gguf::{Array, Error, GgmlType, GgufFile, GgufWriter, Value};
use proptest::prelude::*;

fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_metadata("llama.block_count", Value::U32(2));
    w.add_metadata("f", Value::F32(1.5));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(vec!["a".into(), "b".into()])),
    );
    w.add_metadata(
        "nested",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::Bool(vec![true]),
        ])),
    );
    w.add_tensor("a", &[4, 2], GgmlType::F32, &[1u8; 32])
        .unwrap();
    w.add_tensor("b", &[32], GgmlType::Q8_0, &[2u8; 34])
        .unwrap();
    w.to_bytes().unwrap()
}

#[test]
fn round_trip_metadata_and_tensors() {
    let f = GgufFile::from_bytes(sample_file()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.metadata_u64("llama.block_count").unwrap(), 2);
    assert_eq!(f.metadata_f64("f").unwrap(), 1.5);
    let nested = f.metadata_array("nested").unwrap();
    assert_eq!(
        nested,
        &Array::Array(vec![Array::I32(vec![1, 2]), Array::Bool(vec![true])])
    );
    let (info, data) = f.tensor_by_name("b").unwrap();
    assert_eq!(info.ggml_type, GgmlType::Q8_0);
    assert_eq!(data, &[2u8; 34][..]);
    assert_eq!(f.tensor_data(f.tensor("a").unwrap()), &[1u8; 32][..]);
    assert_eq!(f.tensor("b").unwrap().offset % 32, 0);
    assert!(matches!(f.metadata_str("f"), Err(Error::WrongType { .. })));
    assert!(matches!(f.metadata_str("nope"), Err(Error::MissingKey(_))));
    assert!(matches!(
        f.tensor_by_name("c"),
        Err(Error::MissingTensor(_))
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = sample_file();
    for len in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(r.is_err(), "prefix of {len} bytes parsed");
    }
}

#[test]
fn truncated_tensor_data_names_the_tensor() {
    let bytes = sample_file();
    let err = GgufFile::from_bytes(bytes[..bytes.len() - 1].to_vec()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"b\""), "{msg}");
    assert!(matches!(err, Error::TensorOutOfBounds { .. }));
}

#[test]
fn bad_magic() {
    let mut bytes = sample_file();
    bytes[0] = b'X';
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(matches!(err, Error::BadMagic { .. }), "{err}");
}

#[test]
fn unsupported_version() {
    let mut bytes = sample_file();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(err.to_string().contains("version 1"), "{err}");
}

/// Offset of the first metadata value type field (after magic, version, counts, first key).
fn first_value_type_offset() -> usize {
    4 + 4 + 8 + 8 + 8 + "general.architecture".len()
}

#[test]
fn unknown_value_type_names_the_key() {
    let mut bytes = sample_file();
    let at = first_value_type_offset();
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(
        matches!(err, Error::UnknownValueType { type_id: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("general.architecture"));
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

/// Offset of the tensor info of the tensor named `b` (its name length field).
fn tensor_b_info(bytes: &[u8]) -> usize {
    let mut pat = 1u64.to_le_bytes().to_vec();
    pat.push(b'b');
    pat.extend_from_slice(&1u32.to_le_bytes());
    find(bytes, &pat)
}

#[test]
fn unknown_tensor_type_names_the_tensor() {
    let mut bytes = sample_file();
    // name len (8) + "b" (1) + n_dims (4) + 1 dim (8) -> type
    let at = tensor_b_info(&bytes) + 8 + 1 + 4 + 8;
    bytes[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(
        matches!(err, Error::UnknownTensorType { type_id: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"b\""));
}

#[test]
fn offset_outside_file() {
    let mut bytes = sample_file();
    let at = tensor_b_info(&bytes) + 8 + 1 + 4 + 8 + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(matches!(err, Error::TensorOutOfBounds { .. }), "{err}");
}

#[test]
fn offset_overflow() {
    let mut bytes = sample_file();
    let at = tensor_b_info(&bytes) + 8 + 1 + 4 + 8 + 4;
    bytes[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(matches!(err, Error::TensorOutOfBounds { .. }), "{err}");
}

#[test]
fn dimension_overflow() {
    let mut bytes = sample_file();
    let at = tensor_b_info(&bytes) + 8 + 1 + 4;
    bytes[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"b\""), "{msg}");
}

#[test]
fn huge_counts_do_not_allocate() {
    let mut bytes = sample_file();
    // metadata count
    bytes[16..24].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(matches!(
        GgufFile::from_bytes(bytes).unwrap_err(),
        Error::Truncated { .. } | Error::Overflow { .. }
    ));
    let mut bytes = sample_file();
    let at = find(&bytes, b"tokenizer.ggml.tokens") + "tokenizer.ggml.tokens".len() + 4 + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(err.to_string().contains("tokenizer.ggml.tokens"), "{err}");
}

#[test]
fn misaligned_offset() {
    let mut bytes = sample_file();
    let at = tensor_b_info(&bytes) + 8 + 1 + 4 + 8 + 4;
    let off = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    bytes[at..at + 8].copy_from_slice(&(off + 1).to_le_bytes());
    let err = GgufFile::from_bytes(bytes).unwrap_err();
    assert!(err.to_string().contains("alignment"), "{err}");
}

#[test]
fn writer_rejects_wrong_sizes() {
    let mut w = GgufWriter::new();
    assert!(w.add_tensor("x", &[33], GgmlType::Q8_0, &[0; 34]).is_err());
    assert!(w.add_tensor("x", &[32], GgmlType::Q8_0, &[0; 33]).is_err());
    w.add_tensor("x", &[32], GgmlType::Q8_0, &[0; 34]).unwrap();
    assert!(w.add_tensor("x", &[32], GgmlType::Q8_0, &[0; 34]).is_err());
}

#[test]
fn open_reports_the_path() {
    let err = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    std::fs::write(&p, sample_file()).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensors().len(), 2);
}

/// Released tensor pages leave the process's resident memory (Linux: the file-backed resident
/// set, `RssFile` plus `RssShmem` for a file on tmpfs, drops by about the tensor's size) and read
/// back the same bytes.
#[test]
fn released_tensor_pages_read_back_the_same_bytes() {
    let n = 1 << 20; // 4 MiB of f32
    let data: Vec<u8> = (0..n as u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) as f32).to_le_bytes())
        .collect();
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", Value::String("llama".into()));
    w.add_tensor("big", &[n as u64], GgmlType::F32, &data)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.gguf");
    std::fs::write(&p, w.to_bytes().unwrap()).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let info = f.tensor("big").unwrap().clone();
    let rss_file_kib = || -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(kib("RssFile:")? + kib("RssShmem:")?)
    };
    let sum = |b: &[u8]| b.iter().map(|&x| u64::from(x)).sum::<u64>();
    let touched = sum(f.tensor_data(&info));
    let before = rss_file_kib();
    f.release_tensor_pages(&info);
    if let (Some(before), Some(after)) = (before, rss_file_kib()) {
        assert!(
            before >= after + 3 * 1024,
            "file-backed RSS {before} KiB before, {after} KiB after releasing 4 MiB"
        );
    }
    assert_eq!(f.tensor_data(&info), &data[..]);
    assert_eq!(sum(f.tensor_data(&info)), touched);
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<bool>().prop_map(Value::Bool),
        (-1e30f32..1e30).prop_map(Value::F32),
        (-1e300f64..1e300).prop_map(Value::F64),
        ".{0,20}".prop_map(Value::String),
        proptest::collection::vec(any::<i16>(), 0..10).prop_map(|v| Value::Array(Array::I16(v))),
        proptest::collection::vec(".{0,5}", 0..5).prop_map(|v| Value::Array(Array::String(v))),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 0..4)
            .prop_map(|v| Value::Array(Array::Array(v.into_iter().map(Array::U8).collect()))),
    ]
}

proptest! {
    #[test]
    fn any_metadata_round_trips(values in proptest::collection::vec(value_strategy(), 0..12)) {
        let mut w = GgufWriter::new();
        for (i, v) in values.iter().enumerate() {
            w.add_metadata(&format!("k{i}"), v.clone());
        }
        let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        for (i, v) in values.iter().enumerate() {
            prop_assert_eq!(f.get(&format!("k{i}")), Some(v));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend_from_slice(&bytes);
        let _ = GgufFile::from_bytes(b);
    }
}

#[test]
fn zero_dimension_does_not_hide_an_overflow_in_the_others() {
    // Found by the fuzzer: dims [0, 2^62, 8] hold no elements, but rows = 2^65 overflows.
    let mut w = GgufWriter::new();
    w.add_tensor("z", &[0, 1 << 62, 8], GgmlType::F32, &[])
        .unwrap();
    let err = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap_err();
    assert!(
        matches!(err, Error::Overflow { .. }) && err.to_string().contains("\"z\""),
        "{err}"
    );
    // An empty tensor whose other dimensions fit is fine.
    let mut w = GgufWriter::new();
    w.add_tensor("e", &[0, 3], GgmlType::F32, &[]).unwrap();
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.tensor("e").unwrap().rows_cols(), (3, 0));
}
