//! The HTTP API: every operation of the contract is a route of the function the router
//! names, behind the JWT authorizer where the contract says.

use super::*;

/// `[workspace.metadata.lambda.watch.router]`: `(METHOD, path)` → function, for the
/// methods the contract documents on each path.
fn router_routes(operations: &BTreeSet<(String, String)>) -> BTreeMap<(String, String), String> {
    let router = cargo_metadata()["metadata"]["lambda"]["watch"]["router"]
        .as_object()
        .expect("Cargo.toml has [workspace.metadata.lambda.watch.router]");
    let mut out = BTreeMap::new();
    for (path, target) in router {
        match target {
            // One function for every method of the path.
            Value::String(function) => {
                let methods: Vec<_> = operations.iter().filter(|(_, p)| p == path).collect();
                assert!(
                    !methods.is_empty(),
                    "the router maps {path}, which the contract does not document"
                );
                for (method, _) in methods {
                    out.insert((method.clone(), path.clone()), function.clone());
                }
            }
            Value::Array(entries) => {
                for entry in entries {
                    let method = entry["method"].as_str().expect("router entry method");
                    let function = entry["function"].as_str().expect("router entry function");
                    out.insert(
                        (method.to_ascii_uppercase(), path.clone()),
                        function.to_owned(),
                    );
                }
            }
            other => panic!("unexpected router entry for {path}: {other}"),
        }
    }
    out
}

#[test]
fn every_operation_is_a_route_of_the_function_the_router_names_and_vice_versa() {
    let contract = OpenApi::shared();
    // `paths` only: the contract's `webhooks` (the inquiry the network sends to banks)
    // are outbound calls, not routes.
    let operations: BTreeSet<(String, String)> = contract.operations().into_iter().collect();
    assert!(!operations.is_empty());

    let mut routes: BTreeMap<(String, String), (String, Value)> = BTreeMap::new();
    for f in functions() {
        for (route, props) in f.routes() {
            let previous = routes.insert(route.clone(), (f.binary.clone(), props.clone()));
            assert!(previous.is_none(), "{route:?} is routed twice");
        }
    }
    let routed: BTreeSet<_> = routes.keys().cloned().collect();
    let missing: Vec<_> = operations.difference(&routed).collect();
    let extra: Vec<_> = routed.difference(&operations).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "contract operations without a route: {missing:?}; routes the contract does not \
         document: {extra:?}"
    );

    let router = router_routes(&operations);
    let router_keys: BTreeSet<_> = router.keys().cloned().collect();
    assert_eq!(
        router_keys, operations,
        "the cargo lambda watch router covers exactly the contract's operations"
    );

    let document = contract.document();
    for ((method, path), (binary, props)) in &routes {
        assert_eq!(
            Some(binary),
            router.get(&(method.clone(), path.clone())),
            "{method} {path}: the template and the local router disagree on the function"
        );
        assert_eq!(
            props["ApiId"],
            json!({"Ref": "HttpApi"}),
            "{method} {path} is a route of the one HTTP API"
        );
        // The contract's own word on authentication: `security: []` opts an operation
        // out of the app's bearer token (the bank callback, HMAC-signed).
        let security = &document["paths"][path][method.to_ascii_lowercase()]["security"];
        let open = security.as_array().is_some_and(Vec::is_empty);
        let authorizer = &props["Auth"]["Authorizer"];
        if open {
            assert_eq!(
                authorizer, "NONE",
                "{method} {path} has `security: []` and must opt out of the JWT authorizer"
            );
        } else {
            assert!(
                authorizer.is_null(),
                "{method} {path} must stay behind the default JWT authorizer, not {authorizer}"
            );
        }
    }
}

#[test]
fn the_http_api_checks_app_jwts_with_the_configured_issuer_and_audience() {
    let api = &resources()["HttpApi"];
    assert_eq!(api["Type"], "AWS::Serverless::HttpApi");
    let auth = &api["Properties"]["Auth"];
    let default = auth["DefaultAuthorizer"]
        .as_str()
        .expect("a default authorizer");
    let authorizer = &auth["Authorizers"][default];
    assert_eq!(
        authorizer["IdentitySource"],
        "$request.header.Authorization"
    );
    let jwt = &authorizer["JwtConfiguration"];
    assert_eq!(jwt["issuer"], json!({"Ref": "AppJwtIssuer"}));
    assert_eq!(jwt["audience"], json!([{"Ref": "AppJwtAudience"}]));
    for parameter in ["AppJwtIssuer", "AppJwtAudience"] {
        assert!(
            template()["Parameters"][parameter].is_object(),
            "{parameter} is a template parameter"
        );
    }
}
