//! What one DynamoDB call costs our process in CPU, apart from the server: N sequential
//! calls of each kind against DynamoDB Local on a current-thread runtime (as the
//! functions run), with the client the functions build (`shared::bootstrap`), and the
//! process's CPU time divided by N. Run under the local stack:
//! `make bench-sdk-call` (not part of `make test`).

use std::time::Instant;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Calls of each kind.
    #[arg(long, default_value_t = 2000)]
    calls: u32,
    /// Rounds of all kinds (the median per kind is printed).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Also measure the client with the SDK's stalled-stream protection off (its
    /// per-call timers are the one part of the client a function could turn off).
    #[arg(long)]
    compare_stall_protection_off: bool,
    /// DynamoDB calls one 16-bank query makes, all functions together (`make
    /// bench-cost`'s table): what the floor below is multiplied by.
    #[arg(long, default_value_t = 220.0)]
    calls_per_query: f64,
}

const TABLE: &str = "sdk-call-bench";

fn cpu() -> f64 {
    testkit::load::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

async fn ensure_table(client: &Client) -> Result<(), String> {
    if client
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .is_ok()
    {
        return Ok(());
    }
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| e.to_string())
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(|e| e.to_string())
    };
    client
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .send()
        .await
        .map_err(|e| format!("create table: {e:?}"))?;
    Ok(())
}

/// One call of `kind`, the `i`th.
async fn call(client: &Client, kind: &str, i: u32) -> Result<(), String> {
    let pk = s(&format!("P#{}", i % 50));
    let sk = s(&format!("S#{}", i % 7));
    match kind {
        "GetItem" => client
            .get_item()
            .table_name(TABLE)
            .key("pk", pk)
            .key("sk", sk)
            .consistent_read(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        "PutItem (conditional)" => client
            .put_item()
            .table_name(TABLE)
            .item("pk", pk)
            .item("sk", sk)
            .item("until", AttributeValue::N(i.to_string()))
            .item("holder", s("01J0000000000000000000000"))
            .condition_expression("attribute_not_exists(pk) OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", AttributeValue::N(i.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        _ => client
            .query()
            .table_name(TABLE)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", pk)
            .consistent_read(true)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
    }
}

/// Median CPU and wall microseconds per call of `kind` over `args.rounds` rounds.
async fn per_call(client: &Client, kind: &str, args: &Args) -> Result<(f64, f64), String> {
    let (mut cpu_us, mut wall_us) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        // Warm: connections pooled, the first call's lazy set-up done.
        for i in 0..50 {
            let _ = call(client, kind, i).await;
        }
        let (c0, t0) = (cpu(), Instant::now());
        for i in 0..args.calls {
            if let Err(e) = call(client, kind, i).await {
                if !e.contains("ConditionalCheckFailed") {
                    return Err(e);
                }
            }
        }
        cpu_us.push((cpu() - c0) * 1e6 / f64::from(args.calls));
        wall_us.push(t0.elapsed().as_secs_f64() * 1e6 / f64::from(args.calls));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(cpu_us), median(wall_us)))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sdk = shared::bootstrap::aws_config().await;
        let client = shared::bootstrap::dynamo_client(&sdk);
        if let Err(e) = ensure_table(&client).await {
            eprintln!("sdk-call-bench: {e}\n(run under `stack.py exec`)");
            return std::process::ExitCode::from(2);
        }
        let mut clients = vec![("as the functions build it", client)];
        if args.compare_stall_protection_off {
            let off = aws_sdk_dynamodb::config::Builder::from(&sdk)
                .stalled_stream_protection(
                    aws_sdk_dynamodb::config::StalledStreamProtectionConfig::disabled(),
                )
                .build();
            clients.push(("stalled-stream protection off", Client::from_conf(off)));
        }
        println!(
            "client CPU per DynamoDB call, {} calls of each kind, median of {} rounds:",
            args.calls, args.rounds
        );
        for (name, client) in &clients {
            println!("  client {name}:");
            let mut cpu_sum = 0.0;
            let kinds = ["GetItem", "PutItem (conditional)", "Query"];
            for kind in kinds {
                match per_call(client, kind, &args).await {
                    Ok((cpu_us, wall_us)) => {
                        cpu_sum += cpu_us;
                        println!(
                            "   {kind:<24} {cpu_us:>7.0} µs CPU   {wall_us:>7.0} µs wall (round trip to DynamoDB Local)"
                        )
                    }
                    Err(e) => {
                        eprintln!("sdk-call-bench: {kind}: {e}");
                        return std::process::ExitCode::from(2);
                    }
                }
            }
            let mean_us = cpu_sum / kinds.len() as f64;
            println!(
                "   {} calls a query × {mean_us:.0} µs = {:.1} ms of CPU a query in the client alone",
                args.calls_per_query,
                args.calls_per_query * mean_us / 1000.0
            );
        }
        std::process::ExitCode::SUCCESS
    })
}
