//! The emulator against a hand-played runtime client (reqwest), as a function's runtime
//! would call it.

use std::time::Duration;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn url(api: &RuntimeApi, path: &str) -> String {
    format!("http://{}{RUNTIME_PREFIX}{path}", api.address())
}

async fn start() -> (RuntimeApi, reqwest::Client) {
    let api = RuntimeApi::start("fn-under-test", Duration::from_secs(3))
        .await
        .unwrap();
    (api, reqwest::Client::new())
}

#[tokio::test]
async fn next_hands_over_the_event_with_lambdas_headers_and_response_completes_it() {
    let (api, http) = start().await;
    let poll = http.get(url(&api, "/invocation/next")).send();
    let (invoked, polled) = tokio::join!(api.invoke(br#"{"a":1}"#.to_vec(), WAIT), async {
        let next = poll.await.unwrap();
        assert_eq!(next.status(), 200);
        let h = next.headers().clone();
        let id = h[protocol::REQUEST_ID].to_str().unwrap().to_owned();
        let deadline: u128 = h[protocol::DEADLINE_MS].to_str().unwrap().parse().unwrap();
        let now = protocol::epoch_millis(std::time::SystemTime::now());
        assert!(
            deadline > now && deadline <= now + 3_000,
            "{deadline} vs {now}"
        );
        assert_eq!(
            h[protocol::FUNCTION_ARN],
            "arn:aws:lambda:us-east-1:000000000000:function:fn-under-test"
        );
        assert!(h[protocol::TRACE_ID]
            .to_str()
            .unwrap()
            .starts_with("Root=1-"));
        assert_eq!(next.bytes().await.unwrap().as_ref(), br#"{"a":1}"#);
        let done = http
            .post(url(&api, &format!("/invocation/{id}/response")))
            .body(r#"{"ok":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 202);
        id
    });
    let invoked = invoked.unwrap();
    assert_eq!(invoked.request_id, polled);
    assert_eq!(
        invoked.outcome,
        Outcome::Response(br#"{"ok":true}"#.to_vec())
    );
    assert!(invoked.completed_at >= invoked.delivered_at);
    // The first poll is remembered: it is when init ended.
    let first = api.first_poll(WAIT).await.unwrap();
    assert!(first <= invoked.delivered_at);
}

#[tokio::test]
async fn an_invocation_error_reaches_the_caller_with_its_type() {
    let (api, http) = start().await;
    let runtime = async {
        let next = http
            .get(url(&api, "/invocation/next"))
            .send()
            .await
            .unwrap();
        let id = next.headers()[protocol::REQUEST_ID]
            .to_str()
            .unwrap()
            .to_owned();
        let r = http
            .post(url(&api, &format!("/invocation/{id}/error")))
            .header(protocol::ERROR_TYPE, "Runtime.Boom")
            .body(r#"{"errorMessage":"boom","errorType":"Boom"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    };
    let (invoked, ()) = tokio::join!(api.invoke(b"{}".to_vec(), WAIT), runtime);
    assert_eq!(
        invoked.unwrap().outcome,
        Outcome::Error(FunctionError {
            error_type: Some("Runtime.Boom".into()),
            body: br#"{"errorMessage":"boom","errorType":"Boom"}"#.to_vec(),
        })
    );
}

#[tokio::test]
async fn an_init_error_ends_the_wait_for_the_first_poll() {
    let (api, http) = start().await;
    let r = http
        .post(url(&api, "/init/error"))
        .header(protocol::ERROR_TYPE, "Runtime.InitError")
        .body(r#"{"errorMessage":"no config","errorType":"StartupError"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    match api.first_poll(WAIT).await {
        Err(RuntimeError::Init(e)) => {
            assert_eq!(e.error_type.as_deref(), Some("Runtime.InitError"));
            assert!(e.to_string().contains("no config"), "{e}");
        }
        other => panic!("expected an init error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_or_repeated_request_ids_are_refused() {
    let (api, http) = start().await;
    let r = http
        .post(url(&api, "/invocation/nope/response"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errorType"], "InvalidRequestID");

    let runtime = async {
        let next = http
            .get(url(&api, "/invocation/next"))
            .send()
            .await
            .unwrap();
        let id = next.headers()[protocol::REQUEST_ID]
            .to_str()
            .unwrap()
            .to_owned();
        let answer = |http: &reqwest::Client| {
            http.post(url(&api, &format!("/invocation/{id}/response")))
                .body("1")
                .send()
        };
        assert_eq!(answer(&http).await.unwrap().status(), 202);
        // One answer per invocation, as on Lambda.
        assert_eq!(answer(&http).await.unwrap().status(), 400);
    };
    let (invoked, ()) = tokio::join!(api.invoke(b"{}".to_vec(), WAIT), runtime);
    assert_eq!(invoked.unwrap().outcome, Outcome::Response(b"1".to_vec()));
}

#[tokio::test]
async fn a_response_over_six_megabytes_is_refused_and_fails_the_invocation() {
    let (api, http) = start().await;
    let runtime = async {
        let next = http
            .get(url(&api, "/invocation/next"))
            .send()
            .await
            .unwrap();
        let id = next.headers()[protocol::REQUEST_ID]
            .to_str()
            .unwrap()
            .to_owned();
        let r = http
            .post(url(&api, &format!("/invocation/{id}/response")))
            .body(vec![b'x'; MAX_RESPONSE_BYTES + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
    };
    let (invoked, ()) = tokio::join!(api.invoke(b"{}".to_vec(), WAIT), runtime);
    match invoked.unwrap().outcome {
        Outcome::Error(e) => {
            assert_eq!(
                e.error_type.as_deref(),
                Some("Function.ResponseSizeTooLarge")
            )
        }
        other => panic!("expected a failed invocation, got {other:?}"),
    }
}

#[tokio::test]
async fn events_are_delivered_in_order_one_per_next() {
    let (api, http) = start().await;
    let runtime = async {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let next = http
                .get(url(&api, "/invocation/next"))
                .send()
                .await
                .unwrap();
            let id = next.headers()[protocol::REQUEST_ID]
                .to_str()
                .unwrap()
                .to_owned();
            let body = next.bytes().await.unwrap();
            seen.push(String::from_utf8(body.to_vec()).unwrap());
            http.post(url(&api, &format!("/invocation/{id}/response")))
                .body(body)
                .send()
                .await
                .unwrap();
        }
        seen
    };
    let callers = async {
        let mut out = Vec::new();
        for i in 0..3 {
            let inv = api.invoke(format!("{i}").into_bytes(), WAIT).await.unwrap();
            out.push(inv.outcome);
        }
        out
    };
    let (outcomes, seen) = tokio::join!(callers, runtime);
    assert_eq!(seen, ["0", "1", "2"]);
    assert_eq!(
        outcomes,
        (0..3)
            .map(|i| Outcome::Response(format!("{i}").into_bytes()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn waits_end_with_a_timeout_when_the_function_never_polls() {
    let (api, _http) = start().await;
    let short = Duration::from_millis(50);
    assert!(matches!(
        api.first_poll(short).await,
        Err(RuntimeError::Timeout(_, _))
    ));
    assert!(matches!(
        api.invoke(b"{}".to_vec(), short).await,
        Err(RuntimeError::Timeout(_, _))
    ));
}
