//! Agent tasks, token sources, shared prefixes and `bench quality` against the scripted mock:
//! per-task wall-clock (its formula over the raw records, and the script's floor on a busy host:
//! `timing`), conversations that grow call by call, chains that stop at a failure, cost per
//! completed task exactly, and the scripted exact-match rate.

mod timing;

use std::time::Duration;

use ferrite_bench::{run, AgentWorkload, Prices, RunConfig, TokenCounter, Workload};
use ferrite_testkit::mock_openai::{Failure, MockServer, Script};
use serde_json::Value;
use timing::{check_against_events, check_tasks, exact, script, scripted_floor};

fn cfg(url: &str, requests: usize, concurrency: usize, workload: Workload) -> RunConfig {
    RunConfig {
        input_tokens: 40,
        output_tokens: 10,
        concurrency,
        requests,
        warmup: 0,
        retry_base: Duration::from_millis(10),
        seed: 3,
        workload,
        ..RunConfig::new(url, "mock-model")
    }
}

/// Generation requests the mock saw (the one-token template probe left out).
fn generation_requests(m: &MockServer) -> Vec<Value> {
    m.requests()
        .into_iter()
        .filter(|b| b["max_tokens"].as_u64() > Some(1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synthetic_agent_tasks_report_wall_clock_and_cost_per_task() {
    let m = MockServer::start(script(50, 5)).await;
    let mut c = cfg(
        &m.url,
        4,
        2,
        Workload::Agent(AgentWorkload::synthetic(3, 12, 40.0).unwrap()),
    );
    c.prices = Some(Prices {
        input_per_mtok: 1.0,
        cached_input_per_mtok: 0.0,
        output_per_mtok: 4.0,
        per_request: 0.0,
    });
    let r = run(c).await.unwrap();
    // Each call: TTFT 50 ms + 9 tokens × 5 ms = 95 ms; three calls and two 40 ms pauses.
    let t = &r.tasks;
    assert_eq!(
        (t["completed"].as_u64(), t["failed"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(check_against_events(&r), 12);
    assert_eq!(check_tasks(&r).len(), 4);
    // Five sequential steps: three calls and two pauses.
    scripted_floor(
        t["wall_clock_ms"]["p50"].as_f64().unwrap(),
        3.0 * 95.0 + 2.0 * 40.0,
        5,
        "task wall-clock",
    );
    // The planned pauses (their sleeps may overrun; the overrun is in the wall-clock).
    exact(t["think_ms"]["p50"].as_f64().unwrap(), 80.0, "think time");
    assert_eq!(t["calls_per_task"]["p50"], 3.0);
    scripted_floor(
        r.metrics["e2e_ms"]["p50"].as_f64().unwrap(),
        95.0,
        1,
        "call E2E",
    );
    assert_eq!(r.requests["completed"], 12);
    // The conversation grows: each call resends everything plus the answer (10 words) and the
    // tool result ("Tool result:" + 12 words) of the call before. The first prompt is sized to
    // 40 tokens through the template overhead (5).
    let prompts: Vec<f64> = r
        .records
        .iter()
        .filter(|x| x.index == 0)
        .map(|x| x.metrics.as_ref().unwrap().input_tokens.unwrap() as f64)
        .collect();
    assert_eq!(prompts, [40.0, 64.0, 88.0]);
    let bodies = generation_requests(&m);
    assert_eq!(bodies.len(), 12);
    let longest = bodies
        .iter()
        .map(|b| b["messages"].as_array().unwrap().len())
        .max();
    assert_eq!(longest, Some(5), "user, (assistant, tool result) × 2");
    // Cost: per task Σ prompt 40 + 64 + 88 = 192 input and 30 output tokens.
    let per_task = 192.0 * 1.0 / 1e6 + 30.0 * 4.0 / 1e6;
    exact(
        r.cost["per_completed_task_usd"].as_f64().unwrap(),
        per_task,
        "cost per task",
    );
    exact(
        r.cost["total_usd"].as_f64().unwrap(),
        4.0 * per_task,
        "total cost",
    );
    assert!(r.workload["kind"]
        .as_str()
        .unwrap()
        .contains("3 calls each, a 12-word tool result"));
}

const TASKS: &str = r#"{"schema": "ferrite-bench/agent-tasks/v1", "tasks": [
  {"name": "review", "messages": [{"role": "system", "content": "be brief"},
                                  {"role": "user", "content": "review this diff"}],
   "calls": [{"max_tokens": 6, "fan_out": 3, "tool_result": "diff --git a b", "think_ms": 30},
             {"max_tokens": 8, "user": "and the tests?"},
             {"max_tokens": 4}]}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_files_fan_out_and_stop_at_a_failed_call() {
    let m = MockServer::start(script(60, 5)).await;
    let w = Workload::Agent(AgentWorkload::parse(TASKS, "tasks.json").unwrap());
    let r = run(cfg(&m.url, 2, 1, w.clone())).await.unwrap();
    // Per task: 3 copies of call 0, then one each of calls 1 and 2.
    assert_eq!(r.requests["completed"], 10);
    assert_eq!(r.tasks["completed"], 2);
    let calls: Vec<(usize, usize, usize)> = r
        .records
        .iter()
        .filter(|x| x.index == 0)
        .map(|x| (x.call, x.branch, x.max_tokens))
        .collect();
    assert_eq!(
        calls,
        [(0, 0, 6), (0, 1, 6), (0, 2, 6), (1, 0, 8), (2, 0, 4)]
    );
    // Fan-out copies go out together: the same scheduled time.
    let s0: Vec<f64> = r.records[..3].iter().map(|x| x.scheduled_ms).collect();
    assert!(s0.iter().all(|&s| s == s0[0]), "{s0:?}");
    // Wall-clock: call 0 (60 + 5×5 ms, copies in parallel) + 30 ms + call 1 (60 + 7×5) +
    // call 2 (60 + 3×5), four sequential steps. Copies run one after another would take 170 ms
    // more than the allowance.
    check_against_events(&r);
    check_tasks(&r);
    scripted_floor(
        r.tasks["wall_clock_ms"]["p50"].as_f64().unwrap(),
        85.0 + 30.0 + 95.0 + 75.0,
        4,
        "wall-clock with fan-out",
    );
    let bodies = generation_requests(&m);
    let last = bodies.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone();
    let roles: Vec<&str> = last.iter().map(|x| x["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "user", "assistant", "user"]
    );
    assert_eq!(last[3]["content"], "Tool result:\ndiff --git a b");
    assert_eq!(last[5]["content"], "and the tests?");
    assert_eq!(r.task_records[0].name.as_deref(), Some("review"));

    // Generation request 4 (task 0's call 1) fails in its stream: that task stops there,
    // the next one completes.
    let m = MockServer::start(Script {
        failures: vec![(3, Failure::InStream)],
        ..script(20, 2)
    })
    .await;
    let r = run(cfg(&m.url, 2, 1, w)).await.unwrap();
    assert_eq!(
        (r.tasks["completed"].as_u64(), r.tasks["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let t0 = &r.task_records[0];
    assert_eq!((t0.calls_completed, t0.completed), (1, false));
    assert_eq!(
        generation_requests(&m).len(),
        4 + 5,
        "no call after the failure"
    );
    assert_eq!(
        r.tasks["wall_clock_ms"]["n"], 1,
        "only completed tasks are timed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_counts_without_usage_come_from_the_tokenizer_or_chunks() {
    let quiet = || Script {
        usage: false,
        tokens_per_chunk: 4,
        ..script(5, 1)
    };
    // No usage, 10 tokens in chunks of 4: counted per chunk, 3 "tokens".
    let m = MockServer::start(quiet()).await;
    let r = run(cfg(&m.url, 2, 1, Workload::Synthetic)).await.unwrap();
    assert_eq!(r.workload["output_tokens_achieved"]["p50"], 3.0);
    assert!(r.workload["token_source"]
        .as_str()
        .unwrap()
        .starts_with("chunk_count"));
    // A client tokenizer (here: whitespace words, which is what the mock's tokens are) counts
    // the real 10.
    let m = MockServer::start(quiet()).await;
    let mut c = cfg(&m.url, 2, 1, Workload::Synthetic);
    c.tokenizer = Some(TokenCounter::new("words", |s| s.split_whitespace().count()));
    let r = run(c).await.unwrap();
    assert_eq!(r.workload["output_tokens_achieved"]["p50"], 10.0);
    assert_eq!(r.workload["output_length_mismatches"], 0);
    assert!(r.workload["token_source"]
        .as_str()
        .unwrap()
        .starts_with("client_tokenizer"));
    assert_eq!(r.workload["tokenizer"], "words");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_prefix_prompts_share_their_start_only() {
    let m = MockServer::start(script(2, 1)).await;
    let w = Workload::parse("shared-prefix", 40, Some(20)).unwrap();
    let r = run(cfg(&m.url, 3, 1, w)).await.unwrap();
    assert_eq!(r.workload["input_tokens_achieved"]["p50"], 40.0);
    let texts: Vec<String> = generation_requests(&m)
        .iter()
        .map(|b| b["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    let words: Vec<Vec<&str>> = texts.iter().map(|t| t.split(' ').collect()).collect();
    assert_eq!(words[0][..20], words[1][..20]);
    assert_eq!(words[1][..20], words[2][..20]);
    assert_ne!(words[0][20..], words[1][20..]);
}

/// The warm-up of a shared-prefix run shares the measured prefix (so no measured request is
/// the cold one) and not the rest of any measured prompt; the report says what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_prefix_warm_up_primes_the_measured_prefix() {
    let m = MockServer::start(script(2, 1)).await;
    let w = Workload::parse("shared-prefix", 40, Some(20)).unwrap();
    let mut c = cfg(&m.url, 3, 1, w);
    c.warmup = 1;
    let r = run(c).await.unwrap();
    let texts: Vec<String> = generation_requests(&m)
        .iter()
        .map(|b| b["messages"][0]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 4, "one warm-up and three measured requests");
    let words: Vec<Vec<&str>> = texts.iter().map(|t| t.split(' ').collect()).collect();
    for measured in &words[1..] {
        assert_eq!(words[0][..20], measured[..20]);
        assert_ne!(words[0][20..], measured[20..]);
    }
    let said = r.workload["warm_up"].as_str().unwrap();
    assert!(said.contains("sharing the measured prefix"), "{said}");
    assert_eq!(r.requests["logical"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_quality_reports_the_scripted_exact_match_rate() {
    use ferrite_bench::quality::{parse_prompts, run_quality, Endpoint};
    // A diverges from B after 3 tokens on prompts 3 and 7 of 10 (raw prompts and chat).
    let a = MockServer::start(Script {
        diverge_on: vec!["#3".into(), "#7".into()],
        diverge_at: 3,
        ..Script::default()
    })
    .await;
    let b = MockServer::start(Script::default()).await;
    let lines: Vec<String> = (0..10)
        .map(|i| {
            if i % 2 == 0 {
                format!("{{\"prompt\": \"question #{i}\", \"expect\": \"a0\"}}")
            } else {
                format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"question #{i}\"}}], \"expect\": \"a5\"}}")
            }
        })
        .collect();
    let prompts = parse_prompts(&lines.join("\n"), "q.jsonl").unwrap();
    let ep = |m: &MockServer| Endpoint {
        url: m.url.clone(),
        model: "mock-model".into(),
        api_key: None,
    };
    let report = run_quality(&ep(&a), &ep(&b), &prompts, 8).await.unwrap();
    let q = &report["quality"];
    assert_eq!(q["exact_match_rate"], 0.8, "{q}");
    // 8 identical answers of 8 tokens and 2 sharing 3.
    exact(
        q["mean_common_prefix"].as_f64().unwrap(),
        (8.0 * 8.0 + 2.0 * 3.0) / 10.0,
        "common prefix",
    );
    assert_eq!(q["common_prefix_unit"], "tokens");
    // Prompts #3 and #7 expect a5, which A replaced with b5: A succeeds on 8 of 10, B on all.
    assert_eq!(q["a_success_rate"], 0.8);
    assert_eq!(q["b_success_rate"], 1.0);
}

#[test]
fn the_example_task_file_is_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/agent-tasks.json");
    let w = AgentWorkload::read(&p).unwrap();
    let plan = w.plan(0, 1, 10, 32);
    assert_eq!(plan.name.as_deref(), Some("research-fan-out"));
    assert_eq!(plan.calls[1].fan_out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extra_body_fields_are_sent_and_speculation_is_reported() {
    let m = MockServer::start(Script {
        spec_usage: Some((8, 6)),
        ..script(2, 1)
    })
    .await;
    let mut c = cfg(&m.url, 3, 1, Workload::Synthetic);
    let extra = serde_json::json!({"speculative": false, "temperature": 0.5});
    c.extra_body = extra.as_object().cloned();
    let r = run(c).await.unwrap();
    for b in generation_requests(&m) {
        assert_eq!(b["speculative"], false);
        assert_eq!(
            b["temperature"], 0.5,
            "extra fields override the bench's own"
        );
        assert_eq!(b["stream"], true);
    }
    // 3 requests of 10 output tokens, each 8 drafted and 6 accepted.
    let sp = &r.speculative;
    assert_eq!(sp["draft_tokens"], 24, "{sp}");
    assert_eq!(sp["accepted_tokens"], 18);
    assert_eq!(sp["acceptance_rate"], 0.75);
    assert_eq!(sp["accepted_per_output_token"], 0.6);
    assert!(ferrite_bench::render_markdown(&r).contains("acceptance 0.75"));
    // A server that reports nothing: no speculative section.
    let m = MockServer::start(script(2, 1)).await;
    let r = run(cfg(&m.url, 1, 1, Workload::Synthetic)).await.unwrap();
    assert!(r.speculative.is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reasoning_separates_ttft_from_ttfo_and_tool_calls_are_logged() {
    // 10 tokens, the first 4 as reasoning: the answer starts 4 tokens after the first one.
    let m = MockServer::start(Script {
        reasoning_tokens: 4,
        tool_call: Some(serde_json::json!({"name": "search", "arguments": "{\"q\": \"x\"}"})),
        ..script(60, 10)
    })
    .await;
    let r = run(cfg(&m.url, 3, 1, Workload::Synthetic)).await.unwrap();
    let p50 = |k: &str| r.metrics[k]["p50"].as_f64().unwrap();
    // Mistaking one for the other fails the raw-log check; the script bounds each from below.
    assert_eq!(check_against_events(&r), 3);
    scripted_floor(p50("ttft_ms"), 60.0, 1, "TTFT (first reasoning token)");
    scripted_floor(
        p50("ttfo_ms"),
        60.0 + 4.0 * 10.0,
        1,
        "TTFO (first answer token)",
    );
    let events = &r.records[0].attempts[0].events;
    let reasoning: String = events.iter().map(|e| e.reasoning.as_str()).collect();
    let content: String = events.iter().map(|e| e.content.as_str()).collect();
    assert_eq!(reasoning.split_whitespace().count(), 4);
    assert_eq!(content.split_whitespace().count(), 6);
    let tool: String = events.iter().map(|e| e.tool_calls.as_str()).collect();
    assert!(tool.contains("\"name\":\"search\""), "{tool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_with_tools_send_them_answer_calls_with_tool_messages_and_check_arguments() {
    let tasks = r#"{"tasks": [{"name": "lookup", "prompt": "find x",
        "tools": [{"type": "function", "function": {"name": "search",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                           "required": ["q"], "additionalProperties": false}}}],
        "calls": [{"max_tokens": 4, "tool_result": "found it"}, {"max_tokens": 4}]}]}"#;
    let w = Workload::Agent(AgentWorkload::parse(tasks, "t.json").unwrap());
    for (arguments, valid) in [("{\"q\": \"x\"}", true), ("{\"q\": 5}", false)] {
        let m = MockServer::start(Script {
            tool_call: Some(serde_json::json!({"name": "search", "arguments": arguments})),
            ..script(2, 1)
        })
        .await;
        let r = run(cfg(&m.url, 1, 1, w.clone())).await.unwrap();
        assert_eq!(r.tasks["completed"], 1);
        let bodies = generation_requests(&m);
        assert_eq!(bodies[0]["tools"][0]["function"]["name"], "search");
        assert_eq!(bodies[0]["tool_choice"], "auto");
        // The second call carries the first one's call and its scripted result.
        let msgs = bodies[1]["messages"].as_array().unwrap();
        let n = msgs.len();
        assert_eq!(msgs[n - 2]["role"], "assistant");
        assert_eq!(msgs[n - 2]["tool_calls"][0]["id"], "call_0");
        assert_eq!(
            msgs[n - 2]["tool_calls"][0]["function"]["arguments"],
            arguments
        );
        assert_eq!(msgs[n - 1]["role"], "tool");
        assert_eq!(msgs[n - 1]["tool_call_id"], "call_0");
        assert_eq!(msgs[n - 1]["content"], "found it");
        let tc = &r.tool_calls;
        assert_eq!(tc["checked"], 2, "{tc}");
        assert_eq!(tc["answers_with_calls"], 2);
        if valid {
            assert_eq!(tc["valid_rate"], 1.0, "{tc}");
        } else {
            assert_eq!(tc["valid_rate"], 0.0, "{tc}");
            assert!(
                tc["invalid_examples"][0]
                    .as_str()
                    .unwrap()
                    .contains("string"),
                "{tc}"
            );
        }
    }
    // Without tools there is no tool_calls section; a response_format run checks answers (the
    // mock's words are not JSON).
    let m = MockServer::start(script(2, 1)).await;
    let mut c = cfg(&m.url, 2, 1, Workload::Synthetic);
    c.extra_body = serde_json::json!({"response_format": {"type": "json_object"}})
        .as_object()
        .cloned();
    let r = run(c).await.unwrap();
    assert!(r.tool_calls.is_null());
    assert_eq!(r.structured["checked"], 2, "{}", r.structured);
    assert_eq!(r.structured["valid_rate"], 0.0);
    assert!(r.structured["invalid_examples"][0]
        .as_str()
        .unwrap()
        .starts_with("not JSON"));
}
