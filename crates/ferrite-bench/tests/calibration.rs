//! Calibration against a scripted mock OpenAI server: the bench must report the scripted TTFT,
//! TPOT, ITL, E2E and output speed (each figure equal to its formula over the raw event log,
//! and within the script's bounds on a busy host: `timing`), count retries and failures
//! exactly, and take token counts from server usage.

mod timing;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrite_bench::{run, RunConfig, Workload};
use ferrite_testkit::mock_openai::{Failure, MockServer, Script};
use timing::{check_against_events, check_steady, check_throughput, exact, near_script};
use timing::{scripted_ceiling, scripted_floor};

/// A mock with the given first-token delay and per-token time; other fields default.
fn script(ttft_ms: u64, per_token_ms: u64) -> Script {
    Script {
        ttft: Duration::from_millis(ttft_ms),
        per_token: Duration::from_millis(per_token_ms),
        ..Script::default()
    }
}

async fn start(s: Script) -> String {
    MockServer::start(s).await.url
}

fn cfg(url: String, requests: usize, concurrency: usize, retries: usize) -> RunConfig {
    RunConfig {
        input_tokens: 100,
        output_tokens: 20,
        concurrency,
        requests,
        warmup: 0,
        retries,
        retry_base: Duration::from_millis(10),
        seed: 7,
        ..RunConfig::new(url, "mock-model")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_the_scripted_latencies() {
    let s = Script {
        template_tokens: 9,
        ..script(150, 10)
    };
    let url = start(s).await;
    let r = run(cfg(url, 6, 2, 0)).await.unwrap();
    let m = &r.metrics;
    let p50 = |k: &str| m[k]["p50"].as_f64().unwrap();
    assert_eq!(check_against_events(&r), 6);
    scripted_floor(p50("ttft_ms"), 150.0, 1, "TTFT");
    scripted_floor(p50("ttfo_ms"), 150.0, 1, "TTFO");
    scripted_floor(p50("e2e_ms"), 150.0 + 19.0 * 10.0, 1, "E2E");
    near_script(p50("tpot_ms"), 10.0, 0.25, "TPOT");
    near_script(p50("itl_ms"), 10.0, 0.25, "ITL");
    near_script(p50("itl_request_ms"), 10.0, 0.25, "ITL per request");
    near_script(p50("output_speed_tok_s"), 100.0, 0.25, "output speed");
    assert_eq!(m["ttft_ms"]["n"], 6);
    assert_eq!(r.requests["completed"], 6);
    assert_eq!(r.requests["failed"], 0);
    // Prompt sized through the measured template overhead: exactly the requested length.
    assert_eq!(r.workload["template_overhead_tokens"], 9);
    assert_eq!(r.workload["input_tokens_achieved"]["min"], 100.0);
    assert_eq!(r.workload["input_tokens_achieved"]["max"], 100.0);
    assert_eq!(r.workload["input_length_mismatches"], 0);
    assert_eq!(r.workload["output_tokens_achieved"]["p50"], 20.0);
    assert_eq!(r.workload["token_source"], "server_usage");
    assert_eq!(r.provenance["served_models"][0], "mock-model");
    let md = ferrite_bench::render_markdown(&r);
    assert!(
        md.contains("| metric | p50 | p90 | p99 | mean | n | formula |"),
        "{md}"
    );
    assert!(
        md.contains("(E2E − TTFT) / (N_out − 1)") && md.contains("6 completed, 0 failed"),
        "{md}"
    );
    // Two concurrent streams of 340 ms each: 6 requests take at least 3 × 340 ms.
    check_throughput(&r);
    scripted_ceiling(
        r.throughput["output_tok_s"].as_f64().unwrap(),
        120.0 / 1.02,
        1020.0,
        3,
        "output throughput",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_token_chunks_keep_token_counts_from_usage() {
    let s = Script {
        tokens_per_chunk: 4,
        ..script(100, 8)
    };
    let r = run(cfg(start(s).await, 3, 1, 0)).await.unwrap();
    let p50 = |k: &str| r.metrics[k]["p50"].as_f64().unwrap();
    // 20 tokens in 5 chunks 32 ms apart: TPOT per token 8 ms (E2E − TTFT = 128 ms over 19),
    // ITL per chunk 32 ms.
    assert_eq!(check_against_events(&r), 3);
    near_script(p50("tpot_ms"), 128.0 / 19.0, 0.25, "TPOT");
    near_script(p50("itl_ms"), 32.0, 0.25, "ITL per chunk");
    assert_eq!(r.workload["output_tokens_achieved"]["p50"], 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_and_failures_are_counted_exactly() {
    let s = Script {
        failures: vec![
            (0, Failure::RateLimited { retry_after_s: 1 }),
            (1, Failure::ServerError),
            (3, Failure::InStream),
        ],
        ..script(5, 1)
    };
    // Sequential: request 0 gets a 429 (Retry-After: 1) and a 500, then succeeds; generation
    // request #3 (request 1) fails inside its 200 stream and is not retried (the server
    // answered).
    let r = run(cfg(start(s).await, 4, 1, 3)).await.unwrap();
    assert_eq!(r.requests["completed"], 3, "{}", r.requests);
    assert_eq!(r.requests["failed"], 1);
    assert_eq!(r.requests["attempts"], 6);
    assert_eq!(r.requests["retries"], 2);
    assert!(r.requests["errors"][0]
        .as_str()
        .unwrap()
        .contains("in-stream error: boom"));
    let a = &r.records[0].attempts;
    assert_eq!((a[0].status, a[1].status), (Some(429), Some(500)));
    assert!(a[2].ok());
    // The 429's Retry-After (1 s) replaced the 10 ms backoff; the 500 waited 2 × 10 ms.
    let gap = |k: usize| (a[k + 1].start - a[k].end).as_secs_f64();
    assert!(gap(0) >= 1.0 && gap(0) < 1.5, "Retry-After wait {}", gap(0));
    assert!(gap(1) >= 0.02 && gap(1) < 0.5, "backoff {}", gap(1));
    exact(
        r.requests["error_rate"].as_f64().unwrap(),
        0.25,
        "error rate",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_passes_a_true_claim_and_fails_a_false_one() {
    use ferrite_bench::verify::{evaluate, parse_claim};
    let s = script(120, 10);
    let r = run(cfg(start(s).await, 8, 2, 0)).await.unwrap();
    // Scripted: TTFT 120 ms, output speed 100 tok/s. The true claims hold with confidence (the
    // p50's interval spans nearly all 8 samples) unless a sample is off by 2× or more; the
    // false ones are false by 2× (a TTFT is never below its script).
    for (claim, want) in [
        ("ttft_ms.p50<=240", true),
        ("output_speed_tok_s.p50>=50", true),
        ("output_speed_tok_s.mean>=50", true),
        ("output_speed_tok_s.p50 >= 230", false),
        ("ttft_ms.p99<100", false),
        ("e2e_ms.max<=1000", true),
    ] {
        let res = evaluate(&r, &parse_claim(claim).unwrap());
        assert_eq!(res.holds, want, "{claim}: {res:?}");
        assert_eq!(res.n, 8);
        if want {
            assert!(res.holds_with_confidence, "{claim}: {res:?}");
        }
    }
    for bad in [
        "ttft_ms>=1",
        "speed.p50>=1",
        "ttft_ms.p42>=1",
        "ttft_ms.p50>=fast",
        "ttft_ms.p50",
    ] {
        assert!(parse_claim(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cost_is_computed_exactly_from_usage_and_poisson_load_runs() {
    let s = script(5, 1);
    let mut c = cfg(start(s).await, 5, 1, 0);
    c.prices = Some(ferrite_bench::Prices {
        input_per_mtok: 2.0,
        cached_input_per_mtok: 0.5,
        output_per_mtok: 8.0,
        per_request: 0.001,
    });
    c.rate = Some(20.0);
    let r = run(c).await.unwrap();
    assert_eq!(r.requests["completed"], 5);
    // Each request: 100 input tokens (0 cached) and 20 output tokens.
    let per = 100.0 * 2.0 / 1e6 + 20.0 * 8.0 / 1e6 + 0.001;
    exact(
        r.cost["total_usd"].as_f64().unwrap(),
        5.0 * per,
        "total cost",
    );
    exact(
        r.cost["per_completed_request_usd"].as_f64().unwrap(),
        per,
        "cost per request",
    );
    // Arrivals are scheduled in the open loop, not back to back.
    let sched: Vec<f64> = r.records.iter().map(|x| x.scheduled_ms).collect();
    assert!(
        sched.windows(2).all(|w| w[1] > w[0]) && sched[0] > 0.0,
        "{sched:?}"
    );
}

#[tokio::test]
async fn bad_rates_and_sizes_are_refused_before_any_request() {
    for (rate, requests, concurrency) in [
        (Some(0.0), 4, 1),
        (Some(f64::NAN), 4, 1),
        (Some(-2.0), 4, 1),
        (None, 0, 1),
        (None, 4, 0),
    ] {
        let mut c = cfg("http://127.0.0.1:9".into(), requests, concurrency, 0);
        c.rate = rate;
        let e = run(c).await.expect_err("must be refused");
        assert!(e.to_string().contains("must be"), "{e}");
    }
    let mut c = cfg("http://127.0.0.1:9".into(), 4, 1, 0);
    c.burstiness = 0.0;
    let e = run(c).await.expect_err("must be refused");
    assert!(e.to_string().contains("burstiness must be"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prompt_files_are_sent_in_order_and_cycled() {
    let s = Script {
        template_tokens: 4,
        ..script(5, 1)
    };
    let mut c = cfg(start(s).await, 4, 1, 0);
    c.workload = Workload::File(
        ferrite_bench::PromptFile::parse(
            "{\"prompt\": \"one two three\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"a b c d e f g\"}]}\n",
            "p.jsonl",
        )
        .unwrap(),
    );
    let counter = Arc::new(AtomicUsize::new(0));
    c.progress = Some(counter.clone());
    let r = run(c).await.unwrap();
    assert_eq!(
        counter.load(Ordering::SeqCst),
        4,
        "progress counts every measured request"
    );
    // Mock prompt tokens = words + 4: the two prompts give 7 and 11, each sent twice.
    let inp = &r.workload["input_tokens_achieved"];
    assert_eq!(
        (inp["min"].as_f64(), inp["max"].as_f64()),
        (Some(7.0), Some(11.0)),
        "{inp}"
    );
    assert_eq!(inp["n"], 4);
    assert!(r.workload["input_tokens_requested"].is_null());
    let kind = r.workload["kind"].as_str().unwrap();
    assert!(kind.contains("p.jsonl (2 prompts, cycled"), "{kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn goodput_counts_requests_meeting_every_slo() {
    let script = || Script {
        failures: vec![(1, Failure::InStream)],
        ..script(40, 2)
    };
    let slo = |s: &str| ferrite_bench::goodput::Slo::parse(s).unwrap();
    let mut c = cfg(start(script()).await, 4, 1, 0);
    c.slos = vec![slo("ttft_ms<=1000"), slo("tpot_ms<=50")];
    let r = run(c).await.unwrap();
    let g = &r.throughput["goodput"];
    // One request fails inside its stream: 3 of 4 meet both objectives.
    assert_eq!(g["requests_meeting_all"], 3, "{g}");
    assert_eq!(g["share_of_requests"], 0.75);
    let secs = r.throughput["duration_s"].as_f64().unwrap();
    exact(
        g["requests_per_s"].as_f64().unwrap(),
        3.0 / secs,
        "goodput rate",
    );
    // A 40 ms TTFT cannot meet a 10 ms objective.
    let mut c = cfg(start(script()).await, 4, 1, 0);
    c.slos = vec![slo("ttft_ms<=10")];
    let r = run(c).await.unwrap();
    assert_eq!(r.throughput["goodput"]["requests_meeting_all"], 0);
    // Without SLOs there is no goodput entry.
    let r = run(cfg(start(script()).await, 2, 1, 0)).await.unwrap();
    assert!(r.throughput["goodput"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duration_limits_stop_new_requests_in_both_loops() {
    let script = || script(20, 2);
    // Closed loop: every request takes at least its scripted 58 ms, so at most 6 start within
    // 0.3 s (fewer on a slow machine), of the 1000 allowed.
    let mut c = cfg(start(script()).await, 1000, 1, 0);
    c.duration = Some(Duration::from_millis(300));
    let r = run(c).await.unwrap();
    let done = r.requests["completed"].as_u64().unwrap();
    assert!((1..=6).contains(&done), "closed loop completed {done}");
    // Open loop at 50 req/s, near-constant spacing (burstiness 50): the seeded arrival times
    // put about 15 in 0.3 s, however slow the machine.
    let mut c = cfg(start(script()).await, 1000, 1, 0);
    c.rate = Some(50.0);
    c.burstiness = 50.0;
    c.duration = Some(Duration::from_millis(300));
    let r = run(c).await.unwrap();
    let done = r.requests["completed"].as_u64().unwrap();
    assert!((11..=19).contains(&done), "open loop completed {done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steady_state_throughput_leaves_out_ramp_up_and_drain() {
    let script = || script(20, 5);
    // 11 requests on 2 workers: the 11th runs alone for a whole cycle at the end.
    let r = run(cfg(start(script()).await, 11, 2, 0)).await.unwrap();
    check_steady(&r, 2);
    let st = &r.throughput["steady_state"];
    let e2e = r.metrics["e2e_ms"]["p50"].as_f64().unwrap() / 1e3;
    // Two streams, each 20 tokens per request cycle of about one E2E.
    near_script(
        st["output_tok_s"].as_f64().unwrap(),
        2.0 * 20.0 / e2e,
        0.25,
        "steady output tok/s",
    );
    // The whole-run figure includes that drain (about 220 tokens over 6 cycles, vs 40 per
    // cycle in the steady window).
    assert!(r.throughput["output_tok_s"].as_f64().unwrap() < st["output_tok_s"].as_f64().unwrap());
    // Too short a run has no steady window, and says why.
    let r = run(cfg(start(script()).await, 2, 2, 0)).await.unwrap();
    let st = &r.throughput["steady_state"];
    assert!(
        st["window"].is_null() && st["why"].as_str().unwrap().contains("shorter"),
        "{st}"
    );
}

/// A server that answers one request per connection and then, like llama-server after a
/// streamed response, closes it without `Connection: close`: it waits for the next request on
/// the same connection, reads it, and closes without answering.
async fn one_shot_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read one request: headers, then Content-Length bytes of body.
                let (head_end, len) = loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break (p + 4, len);
                    }
                };
                while got.len() < head_end + len {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let is_get = got.starts_with(b"GET");
                let body = if is_get {
                    "{\"data\": [{\"id\": \"m\"}]}".to_string()
                } else {
                    let max = if String::from_utf8_lossy(&got).contains("\"max_tokens\":1,") {
                        1
                    } else {
                        3
                    };
                    let mut b = String::new();
                    for _ in 0..max {
                        b.push_str("data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"w \"}}]}\n\n");
                    }
                    b.push_str(&format!("data: {{\"choices\": [], \"usage\": {{\"prompt_tokens\": 5, \"completion_tokens\": {max}}}}}\n\ndata: [DONE]\n\n"));
                    b
                };
                let ctype = if is_get {
                    "application/json"
                } else {
                    "text/event-stream"
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                // Wait for the next request on this connection, then close unanswered.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_lost_on_a_closed_pooled_connection_are_resent_not_failed() {
    let url = one_shot_server().await;
    let r = run(cfg(url, 4, 1, 0)).await.unwrap();
    assert_eq!(r.requests["completed"], 4, "{}", r.requests);
    assert_eq!(r.requests["failed"], 0);
    // A measured request normally goes out on the connection its predecessor used (4 losses);
    // on a busy host the pool may not have the last connection back yet (a fresh one: no
    // loss), or may hold two dead ones (two losses for one request). Whatever the count, every
    // attempt but the last of each request was such a loss, and none counts as a retry.
    let stale = r.requests["stale_connection_resends"].as_u64().unwrap();
    assert!(
        stale >= 1,
        "no request was lost on a closed connection: {}",
        r.requests
    );
    assert_eq!(r.requests["retries"], 0);
    assert_eq!(r.requests["attempts"].as_u64(), Some(4 + stale));
    for rec in &r.records {
        let (last, lost) = rec.attempts.split_last().unwrap();
        assert!(last.ok(), "{last:?}");
        for a in lost {
            assert!(a.stale_connection && a.status.is_none(), "{a:?}");
        }
    }
    // That server always reports 5 prompt tokens: every prompt is reported off its length.
    assert_eq!(r.workload["input_length_mismatches"], 4);
}
