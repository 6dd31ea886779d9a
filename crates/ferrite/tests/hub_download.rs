//! The Hugging Face download path against a local HTTP server (the real hub is unreachable from
//! these machines): success with the hub's sha256, a corrupted body, a missing file, and reuse of
//! the cache.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferrite::hub::hf::{download_from, HfFile};
use sha2::{Digest, Sha256};

/// Serve `routes` (path → (status, body, sha header)) until the test ends; counts requests.
fn serve(routes: Vec<(&'static str, u16, Vec<u8>, Option<String>)>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body, sha) = routes
                .iter()
                .find(|r| r.0 == path)
                .map(|r| (r.1, r.2.clone(), r.3.clone()))
                .unwrap_or((404, b"not found".to_vec(), None));
            let mut head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            if let Some(sha) = sha {
                head.push_str(&format!("X-Linked-ETag: \"{sha}\"\r\n"));
            }
            head.push_str("\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (format!("http://{addr}"), hits)
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn downloads_verifies_and_caches() {
    let body = b"GGUF fake model bytes".repeat(1000);
    let (url, hits) = serve(vec![(
        "/o/r/resolve/main/m.gguf",
        200,
        body.clone(),
        Some(sha(&body)),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let f = HfFile::parse("hf:o/r/m.gguf").unwrap();
    let p = download_from(&url, &f, dir.path()).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), body);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Second call: served from the verified cache, no request.
    let p2 = download_from(&url, &f, dir.path()).unwrap();
    assert_eq!(p, p2);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn wrong_hash_is_refused_and_nothing_is_cached() {
    let body = b"tampered".to_vec();
    let (url, _) = serve(vec![(
        "/o/r/resolve/main/m.gguf",
        200,
        body,
        Some(sha(b"original")),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let f = HfFile::parse("o/r:m.gguf").unwrap();
    let err = download_from(&url, &f, dir.path()).unwrap_err().to_string();
    assert!(err.contains("sha256") && err.contains("refusing"), "{err}");
    assert!(!f.cache_path(dir.path()).exists());
}

#[test]
fn missing_file_names_the_url_and_status() {
    let (url, _) = serve(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let f = HfFile::parse("hf:o/r@v2/nope.gguf").unwrap();
    let err = download_from(&url, &f, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("/o/r/resolve/v2/nope.gguf") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn unreachable_hub_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = HfFile::parse("hf:o/r/m.gguf").unwrap();
    // Port 9 (discard) on localhost is closed on these machines.
    let err = download_from("http://127.0.0.1:9", &f, dir.path()).unwrap_err();
    assert!(format!("{err:#}").contains("cannot reach"), "{err:#}");
}
