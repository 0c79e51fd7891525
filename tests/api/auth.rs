//! Who is calling, as deployed locally: events sent straight to a function through the
//! Lambda invoke API of `cargo lambda watch` (`/2015-03-31/functions/NAME/invocations`),
//! the path that bypasses API Gateway and its JWT authorizer. Such an event may carry any
//! request context, authorizer claims included; only a verified bearer token that agrees
//! with them identifies the caller.
//!
//! ```text
//! python3 infra/local/stack.py exec --with-api -- cargo test -p system-tests --test api auth::
//! ```

use serde_json::{json, Value};
use testkit::api::{Api, TestUser, UserKind};
use testkit::localkeys::{APP_JWT_AUDIENCE, APP_JWT_ISSUER};

/// An HTTP API (payload 2.0) event for `GET path`, with these authorizer claims (if any)
/// and this `Authorization` header (if any).
fn event(path: &str, claims: Option<Value>, authorization: Option<String>) -> Value {
    let mut headers = json!({"host": "api.example", "user-agent": "auth-test"});
    if let Some(a) = authorization {
        headers["authorization"] = a.into();
    }
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "api",
        "domainName": "api.example",
        "domainPrefix": "api",
        "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                 "sourceIp": "127.0.0.1", "userAgent": "auth-test"},
        "requestId": ulid::Ulid::generate().to_string(),
        "routeKey": format!("GET {path}"),
        "stage": "$default",
        "time": "01/Dec/2026:12:00:00 +0000",
        "timeEpoch": 1_795_000_000_000u64,
    });
    if let Some(c) = claims {
        context["authorizer"] = json!({"jwt": {"claims": c, "scopes": null}});
    }
    json!({
        "version": "2.0",
        "routeKey": format!("GET {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": false,
    })
}

fn claims_of(user: &TestUser) -> Value {
    json!({"sub": user.id, "iss": APP_JWT_ISSUER, "aud": APP_JWT_AUDIENCE})
}

/// Invokes `function` with `event`: (status, error code) of its HTTP response.
async fn invoke(api: &Api, function: &str, event: &Value) -> (u16, Option<String>) {
    let url = format!("{}/2015-03-31/functions/{function}/invocations", api.base);
    let resp = api
        .http
        .post(url)
        .json(event)
        .send()
        .await
        .expect("the invoke API answers");
    assert!(resp.status().is_success(), "invoke API: {}", resp.status());
    let out: Value = resp.json().await.expect("a Lambda HTTP response");
    let status = out["statusCode"].as_u64().expect("statusCode") as u16;
    let body: Option<Value> = out["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok());
    let code = body
        .as_ref()
        .and_then(|b| b["error"]["code"].as_str())
        .map(str::to_owned);
    (status, code)
}

const ROUTES: [(&str, &str); 2] = [
    ("submit-query", "/v1/eligibility"),
    ("view-report", "/v1/card-queries"),
];

#[tokio::test]
async fn forged_authorizer_claims_without_a_valid_token_are_refused() {
    let api = Api::get().await;
    let user = api.new_user(UserKind::Eligible).await;
    let (forger, _) = shared::security::dev::generate_rsa();
    let forged = shared::security::dev::app_token(
        &forger,
        APP_JWT_ISSUER,
        APP_JWT_AUDIENCE,
        &user.id,
        chrono::Utc::now(),
        600,
    )
    .unwrap();
    for (function, path) in ROUTES {
        // The same event with the user's own token is served: the event is well formed.
        let good = event(
            path,
            Some(claims_of(&user)),
            Some(format!("Bearer {}", api.token(&user))),
        );
        assert_eq!(
            invoke(&api, function, &good).await,
            (200, None),
            "{function}"
        );

        for (what, authorization) in [
            ("no token", None),
            (
                "a token signed by another key",
                Some(format!("Bearer {forged}")),
            ),
            ("not a token", Some("Bearer not-a-token".to_owned())),
        ] {
            let e = event(path, Some(claims_of(&user)), authorization);
            assert_eq!(
                invoke(&api, function, &e).await,
                (401, Some("UNAUTHENTICATED".to_owned())),
                "{function}: claims with {what}"
            );
        }
    }
}

#[tokio::test]
async fn a_token_of_one_user_with_the_claims_of_another_is_refused() {
    let api = Api::get().await;
    let a = api.new_user(UserKind::Eligible).await;
    let b = api.new_user(UserKind::Eligible).await;
    let token_a = format!("Bearer {}", api.token(&a));
    for (function, path) in ROUTES {
        let mut other_issuer = claims_of(&a);
        other_issuer["iss"] = "https://id.elsewhere".into();
        let mut other_audience = claims_of(&a);
        other_audience["aud"] = "another-app".into();
        for (what, claims) in [
            ("B's claims", claims_of(&b)),
            ("another issuer", other_issuer),
            ("another audience", other_audience),
            (
                "no subject",
                json!({"iss": APP_JWT_ISSUER, "aud": APP_JWT_AUDIENCE}),
            ),
        ] {
            let e = event(path, Some(claims), Some(token_a.clone()));
            assert_eq!(
                invoke(&api, function, &e).await,
                (401, Some("UNAUTHENTICATED".to_owned())),
                "{function}: A's token with {what}"
            );
        }
        // Without claims (as under `cargo lambda watch`'s own HTTP routes) the token alone
        // identifies A.
        let e = event(path, None, Some(token_a.clone()));
        assert_eq!(invoke(&api, function, &e).await, (200, None), "{function}");
    }
}
