//! Medians over the cold starts, the table and the goals.

use std::time::Duration;

use crate::measure::ColdStart;

pub const INIT_GOAL: Duration = Duration::from_millis(10);
pub const RSS_GOAL_MIB: f64 = 16.0;
pub const PEER_RATIO_GOAL: f64 = 20.0;

/// One row: a function's cold starts summed up.
pub struct Row {
    pub name: String,
    /// The peer this function is compared with, for ours; `None` for a peer.
    pub peer: Option<String>,
    pub init: Duration,
    pub init_cpu: Duration,
    pub first: Duration,
    pub warm_p50: Duration,
    pub warm_p99: Duration,
    pub peak_rss_mib: f64,
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Nearest-rank percentile of a non-empty sample.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

impl Row {
    /// Medians of init, first call and peak RSS over the runs; warm percentiles over
    /// every warm call of every run. `runs` is not empty.
    pub fn new(name: &str, peer: Option<&str>, runs: &[ColdStart]) -> Self {
        let warm: Vec<Duration> = runs.iter().flat_map(|r| r.warm.iter().copied()).collect();
        Self {
            name: name.to_owned(),
            peer: peer.map(str::to_owned),
            init: median(runs.iter().map(|r| r.init).collect()),
            init_cpu: median(runs.iter().map(|r| r.init_cpu).collect()),
            first: median(runs.iter().map(|r| r.first).collect()),
            warm_p50: percentile(&warm, 50.0),
            warm_p99: percentile(&warm, 99.0),
            peak_rss_mib: median(runs.iter().map(|r| r.peak_rss_kib).collect()) as f64 / 1024.0,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// How many times faster `ours` initialises than its peer.
fn ratio(ours: &Row, rows: &[Row]) -> Option<f64> {
    let peer = rows.iter().find(|r| Some(&r.name) == ours.peer.as_ref())?;
    Some(peer.init.as_secs_f64() / ours.init.as_secs_f64().max(1e-9))
}

pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<20} {:>8} {:>8} {:>9} {:>9} {:>9} {:>12}  {}\n",
        "function",
        "init ms",
        "init CPU",
        "first ms",
        "warm p50",
        "warm p99",
        "peak RSS MB",
        "vs peer (init)"
    );
    for r in rows {
        let vs = match ratio(r, rows) {
            Some(x) => format!("{x:.1}x faster than {}", r.peer.as_deref().unwrap_or("")),
            None => "-".into(),
        };
        out += &format!(
            "{:<20} {:>8} {:>8} {:>9} {:>9} {:>9} {:>12.1}  {vs}\n",
            r.name,
            ms(r.init),
            ms(r.init_cpu),
            ms(r.first),
            ms(r.warm_p50),
            ms(r.warm_p99),
            r.peak_rss_mib,
        );
    }
    out
}

pub struct Goal {
    pub text: String,
    pub pass: bool,
    pub detail: String,
}

/// The goals, over our functions (the rows with a peer).
pub fn goals(rows: &[Row]) -> Vec<Goal> {
    let ours: Vec<&Row> = rows.iter().filter(|r| r.peer.is_some()).collect();
    let mut out = Vec::new();
    if let Some(slowest) = ours.iter().max_by_key(|r| r.init) {
        out.push(Goal {
            text: format!("init < {} ms, every function", INIT_GOAL.as_millis()),
            pass: ours.iter().all(|r| r.init < INIT_GOAL),
            detail: format!("slowest {} ms ({})", ms(slowest.init), slowest.name),
        });
    }
    if let Some(largest) = ours
        .iter()
        .max_by(|a, b| a.peak_rss_mib.total_cmp(&b.peak_rss_mib))
    {
        out.push(Goal {
            text: format!("peak RSS < {RSS_GOAL_MIB} MB, every function"),
            pass: ours.iter().all(|r| r.peak_rss_mib < RSS_GOAL_MIB),
            detail: format!("largest {:.1} MB ({})", largest.peak_rss_mib, largest.name),
        });
    }
    let ratios: Vec<(f64, &str)> = ours
        .iter()
        .filter_map(|r| ratio(r, rows).map(|x| (x, r.name.as_str())))
        .collect();
    if let Some((least, name)) = ratios.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0)) {
        out.push(Goal {
            text: format!("init >= {PEER_RATIO_GOAL:.0}x faster than the Python peer's"),
            pass: ratios.iter().all(|(x, _)| *x >= PEER_RATIO_GOAL),
            detail: format!("least {least:.1}x ({name})"),
        });
    }
    out
}

/// The same comparisons by CPU time during init, for a machine too loaded for wall
/// clock to mean much (information only: the goals are on wall-clock init).
pub fn cpu_note(rows: &[Row]) -> Option<String> {
    let ours: Vec<&Row> = rows.iter().filter(|r| r.peer.is_some()).collect();
    let slowest = ours.iter().max_by_key(|r| r.init_cpu)?;
    let least = ours
        .iter()
        .filter_map(|r| {
            let peer = rows.iter().find(|p| Some(&p.name) == r.peer.as_ref())?;
            Some((
                peer.init_cpu.as_secs_f64() / r.init_cpu.as_secs_f64().max(1e-9),
                r.name.as_str(),
            ))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let mut note = format!(
        "info  init CPU time: most {} ms ({})",
        ms(slowest.init_cpu),
        slowest.name
    );
    if let Some((x, name)) = least {
        note += &format!("; least {x:.1}x less than the Python peer's ({name})");
    }
    Some(note + "\n")
}

pub fn goal_lines(goals: &[Goal]) -> String {
    goals
        .iter()
        .map(|g| {
            format!(
                "{:<4}  {:<46} {}\n",
                if g.pass { "PASS" } else { "FAIL" },
                g.text,
                g.detail
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(init_ms: u64, rss_kib: u64) -> ColdStart {
        ColdStart {
            init: Duration::from_millis(init_ms),
            init_cpu: Duration::from_millis(init_ms / 2),
            first: Duration::from_millis(2 * init_ms),
            warm: (1..=100).map(Duration::from_millis).collect(),
            peak_rss_kib: rss_kib,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn rows_take_medians_and_goals_judge_only_our_functions() {
        let ours = Row::new(
            "fast",
            Some("peer"),
            &[run(5, 10_240), run(9, 11_264), run(6, 30_000)],
        );
        assert_eq!(ours.init, Duration::from_millis(6));
        assert!((ours.peak_rss_mib - 11.0).abs() < 1e-9);
        let peer = Row::new("peer", None, &[run(200, 50_000)]);
        let rows = [ours, peer];
        let g = goals(&rows);
        assert_eq!(g.len(), 3);
        assert!(g.iter().all(|g| g.pass), "{}", goal_lines(&g));
        assert!(table(&rows).contains("33.3x faster than peer"));
        // init CPU: 3 ms ours, 100 ms the peer's.
        let note = cpu_note(&rows).unwrap();
        assert!(note.contains("most 3.00 ms (fast)"), "{note}");
        assert!(note.contains("least 33.3x"), "{note}");

        let slow = Row::new("slow", Some("peer"), &[run(12, 20_000)]);
        let rows = [slow, Row::new("peer", None, &[run(200, 50_000)])];
        let g = goals(&rows);
        assert!(g.iter().all(|g| !g.pass), "{}", goal_lines(&g));
    }
}
