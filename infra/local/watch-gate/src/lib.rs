//! An admission gate in front of `cargo lambda watch`.
//!
//! cargo-lambda-watch 1.9.2 queues each function's invocations in a bounded channel of
//! 100 and pushes into it (`RequestCache::upsert`) while holding the lock every
//! function instance needs to take its next invocation (`RequestCache::pop`). The
//! 101st queued invocation of any one function therefore blocks the watch's scheduler
//! with that lock held: no instance of any function gets work again, and every later
//! request (`GET /v1/banks` too) hangs for good. See docs/decisions.md.
//!
//! The gate holds every request for a function until fewer than `max_in_flight` of
//! that function's invocations are inside the watch (queued or running), so the
//! watch's queues stay below their capacity whatever the callers do. A permit is held
//! until the watch has answered, even when the caller gave up meanwhile: an abandoned
//! invocation still sits in the watch's queue until an instance takes it.

pub mod binary_body;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

/// cargo-lambda-watch's per-function queue capacity (`RequestQueue::new`).
pub const WATCH_QUEUE_CAPACITY: usize = 100;
/// Larger than Lambda's 6 MB payload limit: the functions themselves refuse bodies over
/// their own limit (413 in the contract's format).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The name under which the watch queues requests that match no route; the gate
/// answers those 404 itself.
pub const DEFAULT_FUNCTION: &str = "_";

/// One entry of `[workspace.metadata.lambda.watch.router]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Route {
    pub path: String,
    /// `None`: every method.
    #[serde(default)]
    pub method: Option<String>,
    pub function: String,
}

/// Which function a request goes to, as the watch decides it: the path matched by
/// `matchit` (the router cargo-lambda's own router uses; a literal segment wins over a
/// `{param}`), then the first route of that path whose method fits.
#[derive(Debug, Clone)]
pub struct Router {
    paths: matchit::Router<Vec<Route>>,
}

impl Default for Router {
    fn default() -> Self {
        Self {
            paths: matchit::Router::new(),
        }
    }
}

impl Router {
    /// Refuses routes whose paths overlap ambiguously (e.g. `/a/{x}` and `/a/{y}`).
    pub fn new(routes: Vec<Route>) -> Result<Self, String> {
        let mut by_path: Vec<(String, Vec<Route>)> = Vec::new();
        for route in routes {
            let path = format!("/{}", route.path.trim_matches('/'));
            match by_path.iter_mut().find(|(p, _)| *p == path) {
                Some((_, same)) => same.push(route),
                None => by_path.push((path, vec![route])),
            }
        }
        let mut paths = matchit::Router::new();
        for (path, routes) in by_path {
            paths
                .insert(path.clone(), routes)
                .map_err(|e| format!("route {path}: {e}"))?;
        }
        Ok(Self { paths })
    }

    pub fn function(&self, method: &Method, path: &str) -> String {
        match self.target(method, path) {
            Target::Function(name) => name,
            Target::MethodNotAllowed { .. } | Target::NoRoute => DEFAULT_FUNCTION.to_owned(),
        }
    }

    /// Where a request goes: its function, or (for a path the routes name with other
    /// methods only) the methods it allows, or nowhere.
    pub fn target(&self, method: &Method, path: &str) -> Target {
        let path = format!("/{}", path.trim_matches('/'));
        // The invoke API and function URLs name the function themselves.
        let segments: Vec<&str> = path[1..].split('/').collect();
        match segments.as_slice() {
            ["2015-03-31", "functions", name, ..] | ["lambda-url", name, ..]
                if !name.is_empty() =>
            {
                return Target::Function((*name).to_owned())
            }
            _ => {}
        }
        let Ok(matched) = self.paths.at(&path) else {
            return Target::NoRoute;
        };
        let routes = matched.value;
        if let Some(r) = routes.iter().find(|r| {
            r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
        }) {
            return Target::Function(r.function.clone());
        }
        let allow: Vec<String> = routes
            .iter()
            .filter_map(|r| r.method.as_deref().map(str::to_ascii_uppercase))
            .collect();
        Target::MethodNotAllowed {
            allow: allow.join(", "),
        }
    }

    /// The `{param}` values of a routed path, as the watch puts them in its events.
    pub fn path_parameters(&self, path: &str) -> BTreeMap<String, String> {
        let path = format!("/{}", path.trim_matches('/'));
        self.paths
            .at(&path)
            .map(|m| {
                m.params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the path is one of the routes (not the invoke API or a function URL).
    fn is_route(&self, path: &str) -> bool {
        let path = format!("/{}", path.trim_matches('/'));
        !path.starts_with("/2015-03-31/")
            && !path.starts_with("/lambda-url/")
            && self.paths.at(&path).is_ok()
    }
}

/// See [`Router::target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Function(String),
    /// Every route of the path names a method, none this one: `allow` lists them.
    MethodNotAllowed {
        allow: String,
    },
    NoRoute,
}

/// The gate's shared state: where the watch is, and one semaphore per function.
pub struct Gate {
    upstream: String,
    router: Router,
    max_in_flight: usize,
    client: reqwest::Client,
    permits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Gate {
    /// `max_in_flight` is capped below the watch's queue capacity: more would let the
    /// queue fill again.
    pub fn new(upstream: &str, router: Router, max_in_flight: usize) -> Result<Self, String> {
        if max_in_flight == 0 || max_in_flight >= WATCH_QUEUE_CAPACITY {
            return Err(format!(
                "max in flight must be between 1 and {}",
                WATCH_QUEUE_CAPACITY - 1
            ));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            // No request timeout: a permit must outlive the invocation it stands for.
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            upstream: upstream.trim_end_matches('/').to_owned(),
            router,
            max_in_flight,
            client,
            permits: Mutex::new(HashMap::new()),
        })
    }

    fn semaphore(&self, function: &str) -> Arc<Semaphore> {
        let mut map = self
            .permits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(function.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_in_flight)))
            .clone()
    }

    /// Invocations of `function` inside the watch now.
    pub fn in_flight(&self, function: &str) -> usize {
        self.max_in_flight - self.semaphore(function).available_permits()
    }

    /// Forwards one request once its function has room; the watch's answer as is.
    pub async fn handle(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "request body too large",
                )
            }
        };
        let path = parts.uri.path();
        let function = match self.router.target(&parts.method, path) {
            Target::Function(name) => name,
            // CORS preflights pass: the watch's CORS layer answers them before routing.
            _ if parts.method == Method::OPTIONS => DEFAULT_FUNCTION.to_owned(),
            // A path split between functions by method (`/v1/card-queries`): no function
            // sees the other methods, so the gate answers as each function does for its
            // own paths (the contract's 405). The watch would queue them for a default
            // function nobody serves.
            Target::MethodNotAllowed { allow } => return method_not_allowed(&allow),
            Target::NoRoute => return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"),
        };
        let Ok(permit) = self.semaphore(&function).acquire_owned().await else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "gate closed",
            );
        };
        // The watch answers 500 to a body declared as text that is not UTF-8; such a
        // request goes to the function as API Gateway would deliver it (binary_body.rs).
        let via_invoke_api =
            self.router.is_route(path) && binary_body::watch_refuses(&parts.headers, &body);
        let (method, url, headers, body) = if via_invoke_api {
            let event = binary_body::event(
                &parts.method,
                &parts.uri,
                &parts.headers,
                &body,
                self.router.path_parameters(path),
                chrono::Utc::now(),
            );
            let url = format!(
                "{}/2015-03-31/functions/{function}/invocations",
                self.upstream
            );
            let mut headers = HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            (Method::POST, url, headers, Bytes::from(event.to_string()))
        } else {
            let url = format!(
                "{}{}",
                self.upstream,
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            (parts.method.clone(), url, forwardable(&parts.headers), body)
        };
        let gate = self.clone();
        // A task of its own, so that a caller going away does not release the permit
        // while the invocation is still queued in the watch.
        let call = tokio::spawn(async move {
            let _permit = permit;
            let sent = gate
                .client
                .request(method, url)
                .headers(headers)
                .body(body)
                .send()
                .await;
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = forwardable(resp.headers());
                    match resp.bytes().await {
                        Ok(bytes) => Ok((status, headers, bytes)),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        });
        let answer = match call.await {
            Ok(Ok(answer)) if via_invoke_api => {
                let (status, headers, bytes) = answer;
                binary_body::response(status, headers, bytes)
            }
            Ok(answer) => answer,
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok((status, headers, bytes)) => {
                let mut resp = Response::new(Body::from(bytes));
                *resp.status_mut() = status;
                *resp.headers_mut() = forwardable(&headers);
                resp
            }
            Err(e) => {
                log_warn("upstream call failed", &function, &e);
                error(
                    StatusCode::BAD_GATEWAY,
                    "BAD_GATEWAY",
                    "the API is not answering",
                )
            }
        }
    }
}

/// Headers minus the hop-by-hop ones (RFC 9110 §7.6.1) and those the client recomputes.
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    ];
    let mut out = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        if !HOP.contains(&k.as_str()) {
            out.append(HeaderName::clone(k), v.clone());
        }
    }
    out
}

/// The contract's 405, as the functions give it for their own paths.
fn method_not_allowed(allow: &str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method not allowed",
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(allow) {
        resp.headers_mut().insert(axum::http::header::ALLOW, v);
    }
    resp
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut resp = Response::new(Body::from(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// One JSON line on stderr; never headers or bodies (they carry tokens and codes).
pub fn log_line(level: &str, msg: &str, fields: serde_json::Value) {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut line = serde_json::json!({"ts": ts, "level": level, "msg": msg});
    if let (Some(map), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
        map.extend(extra);
    }
    eprintln!("{line}");
}

fn log_warn(msg: &str, function: &str, error: &str) {
    log_line(
        "warn",
        msg,
        serde_json::json!({"function": function, "error": error}),
    );
}

/// Serves the gate on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gate: Arc<Gate>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let gate = gate.clone();
        async move { gate.handle(req).await }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let routes: Vec<Route> = serde_json::from_value(serde_json::json!([
            {"path": "/v1/banks", "function": "submit-query"},
            {"path": "/v1/card-queries", "method": "POST", "function": "submit-query"},
            {"path": "/v1/card-queries", "method": "GET", "function": "view-report"},
            {"path": "/v1/card-queries/{query_id}", "function": "view-report"},
            {"path": "/v1/bank-callbacks/{bank_code}", "function": "bank-callback"},
        ]))
        .unwrap();
        Router::new(routes).unwrap()
    }

    #[test]
    fn routes_by_path_and_method() {
        let r = router();
        assert_eq!(r.function(&Method::GET, "/v1/banks"), "submit-query");
        assert_eq!(
            r.function(&Method::POST, "/v1/card-queries"),
            "submit-query"
        );
        assert_eq!(r.function(&Method::GET, "/v1/card-queries"), "view-report");
        assert_eq!(
            r.function(&Method::GET, "/v1/card-queries/01ABC"),
            "view-report"
        );
        assert_eq!(
            r.function(&Method::POST, "/v1/bank-callbacks/ICBC"),
            "bank-callback"
        );
        assert_eq!(
            r.function(&Method::POST, "/v1/bank-callbacks/"),
            DEFAULT_FUNCTION
        );
        assert_eq!(r.function(&Method::GET, "/nope"), DEFAULT_FUNCTION);
    }

    #[test]
    fn a_path_split_by_method_allows_its_methods_only() {
        let r = router();
        let not_allowed = Target::MethodNotAllowed {
            allow: "POST, GET".into(),
        };
        assert_eq!(r.target(&Method::TRACE, "/v1/card-queries"), not_allowed);
        assert_eq!(r.target(&Method::DELETE, "/v1/card-queries/"), not_allowed);
        // A path routed for every method: its function answers the other methods.
        assert_eq!(
            r.target(&Method::TRACE, "/v1/banks"),
            Target::Function("submit-query".into())
        );
        assert_eq!(r.target(&Method::GET, "/v1/nope"), Target::NoRoute);
        assert_eq!(
            r.path_parameters("/v1/bank-callbacks/ICBC"),
            BTreeMap::from([("bank_code".to_owned(), "ICBC".to_owned())])
        );
    }

    /// The gate's own answers: the contract's 405 (with Allow) and 404.
    #[tokio::test]
    async fn answers_unrouted_methods_and_paths_in_the_contracts_format() {
        let gate = Arc::new(Gate::new("http://127.0.0.1:1", router(), 5).unwrap());
        let call = |method: Method, path: &str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            gate.clone().handle(req)
        };
        let resp = call(Method::TRACE, "/v1/card-queries").await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()["allow"], "POST, GET");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
        let resp = call(Method::GET, "/v1/nope").await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }

    /// A body the watch would refuse (JSON declared, not UTF-8) reaches the function
    /// through the invoke API as a base64-encoded API Gateway event, and the function's
    /// API Gateway answer comes back as HTTP.
    #[tokio::test]
    async fn a_body_that_is_not_utf8_goes_through_the_invoke_api() {
        let seen = Arc::new(Mutex::new(Vec::<(String, serde_json::Value)>::new()));
        let s2 = seen.clone();
        let upstream = axum::Router::new().fallback(move |req: Request<Body>| {
            let seen = s2.clone();
            async move {
                let path = req.uri().path().to_owned();
                let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let event = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                seen.lock().unwrap().push((path, event));
                serde_json::json!({
                    "statusCode": 400,
                    "headers": {"content-type": "application/json"},
                    "multiValueHeaders": {},
                    "body": "{\"error\":{\"code\":\"MALFORMED_REQUEST\",\"message\":\"x\"}}",
                    "isBase64Encoded": false,
                    "cookies": [],
                })
                .to_string()
            }
        });
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(up, upstream).await });
        let gate = Arc::new(Gate::new(&format!("http://{up_addr}"), router(), 5).unwrap());
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/bank-callbacks/ICBC")
            .header("content-type", "application/json")
            .body(Body::from(&b"{\"status\": \"\xff\"}"[..]))
            .unwrap();
        let resp = gate.handle(req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let seen = seen.lock().unwrap();
        let (path, event) = &seen[0];
        assert_eq!(path, "/2015-03-31/functions/bank-callback/invocations");
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["rawPath"], "/v1/bank-callbacks/ICBC");
        assert_eq!(event["pathParameters"]["bank_code"], "ICBC");
        assert_eq!(event["headers"]["content-type"], "application/json");
    }

    #[test]
    fn a_literal_segment_wins_and_ambiguous_routes_are_refused() {
        let routes = |paths: &[(&str, &str)]| -> Vec<Route> {
            paths
                .iter()
                .map(|(path, function)| Route {
                    path: (*path).into(),
                    method: None,
                    function: (*function).into(),
                })
                .collect()
        };
        let r = Router::new(routes(&[("/a/{x}", "param"), ("/a/b", "literal")])).unwrap();
        assert_eq!(r.function(&Method::GET, "/a/b"), "literal");
        assert_eq!(r.function(&Method::GET, "/a/c/"), "param");
        assert!(Router::new(routes(&[("/a/{x}", "one"), ("/a/{y}", "two")])).is_err());
    }

    #[test]
    fn invoke_api_names_the_function() {
        let r = router();
        assert_eq!(
            r.function(&Method::POST, "/2015-03-31/functions/sweep/invocations"),
            "sweep"
        );
        assert_eq!(
            r.function(&Method::GET, "/lambda-url/bank-fanout/x"),
            "bank-fanout"
        );
    }

    #[test]
    fn refuses_a_limit_the_watch_queue_cannot_hold() {
        assert!(Gate::new("http://127.0.0.1:1", Router::default(), 0).is_err());
        assert!(Gate::new("http://127.0.0.1:1", Router::default(), 100).is_err());
        assert!(Gate::new("http://127.0.0.1:1", Router::default(), 99).is_ok());
    }

    /// A slow upstream that counts how many requests it holds at once: the gate never
    /// lets more than the limit in, and every request is answered.
    #[tokio::test]
    async fn bounds_in_flight_per_function_and_answers_all() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (n2, p2) = (now.clone(), peak.clone());
        let upstream = axum::Router::new().fallback(move || {
            let (now, peak) = (n2.clone(), p2.clone());
            async move {
                let cur = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(cur, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        });
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(up, upstream).await });

        let gate = Arc::new(Gate::new(&format!("http://{up_addr}"), router(), 5).unwrap());
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let g = gate.clone();
        tokio::spawn(serve(front, g, std::future::pending()));

        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let calls = (0..60).map(|_| {
            let client = client.clone();
            async move {
                client
                    .get(format!("http://{front_addr}/v1/banks"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            }
        });
        let answers = futures_join_all(calls).await;
        assert!(answers.iter().all(|a| a == "ok"), "{answers:?}");
        assert_eq!(peak.load(Ordering::SeqCst), 5);
        assert_eq!(gate.in_flight("submit-query"), 0);
    }

    async fn futures_join_all<F: std::future::Future + Send + 'static>(
        futs: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
