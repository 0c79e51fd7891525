//! The configuration and `GET /v1/banks` at national size (issue 17): parsing a
//! configuration of 16 and of 500 banks (what every function does once at init), and
//! the banks response rendered per request (as before) against the rendered-once body
//! copied into a response (as now). In process, no stack needed:
//!
//! ```text
//! cargo bench -p system-tests --bench config_banks
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use shared::config::ServiceConfig;
use shared::submission::api::BanksResponse;

fn config_and_banks(c: &mut Criterion) {
    let mut parse = c.benchmark_group("config_parse");
    for n in [16, 500] {
        let text = testkit::national::config_json(n, "https://banks.invalid");
        parse.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| ServiceConfig::parse(std::hint::black_box(text)).unwrap())
        });
    }
    parse.finish();

    let mut banks = c.benchmark_group("banks_response");
    for n in [16, 500] {
        let config =
            ServiceConfig::parse(&testkit::national::config_json(n, "https://banks.invalid"))
                .unwrap();
        banks.bench_with_input(
            BenchmarkId::new("rendered_per_request", n),
            &config,
            |b, c| {
                b.iter(|| serde_json::to_string(&BanksResponse::from_registry(&c.banks)).unwrap())
            },
        );
        let once = serde_json::to_string(&BanksResponse::from_registry(&config.banks)).unwrap();
        banks.bench_with_input(BenchmarkId::new("rendered_once", n), &once, |b, once| {
            b.iter(|| std::hint::black_box(once).to_owned())
        });
    }
    banks.finish();
}

criterion_group!(benches, config_and_banks);
criterion_main!(benches);
