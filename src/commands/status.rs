//! `krunner status`: what each `krunner run` on this cache is doing, from its state file
//! ([`crate::orchestrator::state`]). Read-only: it takes no lock, so it can never get in the
//! way of a starting instance.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::orchestrator::state::{find_instances, now_secs, FoundInstance, Liveness};

/// Runs the command.
pub fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let cache = super::cache_dir(global)?;
    let found = find_instances(&cache, args.name_prefix.as_deref())
        .context("cannot read krunner's state files")?;
    if args.json {
        let all: Vec<serde_json::Value> = found.iter().map(json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&all).context("cannot encode the status")?
        );
    } else if !found.is_empty() {
        print!("{}", table(&found, now_secs()));
    }
    if found.is_empty() {
        match &args.name_prefix {
            Some(p) => eprintln!(
                "no krunner run with name prefix {p:?} on {}",
                cache.display()
            ),
            None => eprintln!("no krunner run on {}", cache.display()),
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The state document plus `alive` and the file's path.
fn json(f: &FoundInstance) -> serde_json::Value {
    let mut v = serde_json::to_value(&f.state).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("alive".into(), (f.liveness == Liveness::Alive).into());
        o.insert(
            "state_file".into(),
            f.path.to_string_lossy().into_owned().into(),
        );
    }
    v
}

/// One block per instance: a heading line, then one row per slot.
fn table(found: &[FoundInstance], now: u64) -> String {
    let mut out = String::new();
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let s = &f.state;
        let alive = match f.liveness {
            Liveness::Alive => "running",
            Liveness::Dead => {
                "NOT RUNNING (crashed; the next krunner run with this prefix cleans up)"
            }
        };
        let _ = writeln!(
            out,
            "instance {:?}: pid {} {alive}, up {}{}",
            s.name_prefix,
            s.pid,
            duration(now.saturating_sub(s.started)),
            s.metrics
                .as_ref()
                .map(|m| format!(", metrics at http://{m}/metrics"))
                .unwrap_or_default()
        );
        if !s.pools.is_empty() {
            let _ = writeln!(
                out,
                "  {:<20} {:>8} {:>7} {:>13} {:>5} {:>5} {:>8} {:>5} {:>9}",
                "SCALE SET",
                "ASSIGNED",
                "RUNNING",
                "WANT/HAVE",
                "IDLE",
                "BUSY",
                "BOOTING",
                "RUNS",
                "FAILURES"
            );
            for p in &s.pools {
                let _ = writeln!(
                    out,
                    "  {:<20} {:>8} {:>7} {:>13} {:>5} {:>5} {:>8} {:>5} {:>9}",
                    p.name,
                    p.assigned_jobs,
                    p.running_jobs,
                    format!("{}/{}", p.desired, p.actual),
                    p.idle,
                    p.busy,
                    p.booting,
                    p.runs_done,
                    p.failures
                );
            }
        }
        if s.slots.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<4} {:<24} {:<12} {:>8} {:>5} {:>9}  LAST ERROR",
            "LOOP", "RUNNER", "STATE", "FOR", "RUNS", "FAILURES"
        );
        for slot in &s.slots {
            let runner = if slot.runner.is_empty() {
                "-"
            } else {
                &slot.runner
            };
            let _ = writeln!(
                out,
                "  {:<4} {:<24} {:<12} {:>8} {:>5} {:>9}  {}",
                slot.index,
                runner,
                slot.state.as_str(),
                duration(now.saturating_sub(slot.since)),
                slot.runs_done,
                format!("{}/{}", slot.failures_in_row, slot.failures_total),
                slot.last_error.as_deref().unwrap_or("-"),
            );
        }
    }
    out
}

/// `45s`, `12m03s`, `5h07m`, `3d04h`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::state::{InstanceState, SlotState, SlotStatus};

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(125), "2m05s");
        assert_eq!(duration(3 * 3600 + 7 * 60), "3h07m");
        assert_eq!(duration(2 * 86400 + 3600), "2d01h");
    }

    #[test]
    fn table_rows() {
        let f = FoundInstance {
            path: "/c/state/h.json".into(),
            liveness: Liveness::Alive,
            state: InstanceState {
                pid: 7,
                started: 1000,
                name_prefix: "h".into(),
                metrics: Some("127.0.0.1:9464".into()),
                slots: vec![SlotStatus {
                    index: 0,
                    runner: "h-0-3".into(),
                    state: SlotState::BackingOff,
                    since: 1090,
                    runs_done: 2,
                    failures_in_row: 1,
                    failures_total: 4,
                    last_error: Some("slot 0: boom".into()),
                }],
                pools: Vec::new(),
            },
        };
        let t = table(std::slice::from_ref(&f), 1100);
        assert!(t.starts_with("instance \"h\": pid 7 running, up 1m40s, metrics at http://127.0.0.1:9464/metrics\n"), "{t}");
        assert!(
            t.contains("h-0-3") && t.contains("backing-off") && t.contains("10s"),
            "{t}"
        );
        assert!(t.contains("1/4  slot 0: boom"), "{t}");
        let j = json(&f);
        assert_eq!(j["alive"], true);
        assert_eq!(j["slots"][0]["state"], "backing-off");
    }

    #[test]
    fn scale_sets_get_a_table_of_their_own() {
        let f = FoundInstance {
            path: "/c/state/h.json".into(),
            liveness: Liveness::Alive,
            state: InstanceState {
                pid: 7,
                started: 1000,
                name_prefix: "h".into(),
                metrics: None,
                slots: Vec::new(),
                pools: vec![crate::orchestrator::state::PoolStatus {
                    name: "krun-small".into(),
                    set_id: 3,
                    assigned_jobs: 5,
                    running_jobs: 2,
                    desired: 4,
                    actual: 3,
                    idle: 0,
                    busy: 2,
                    booting: 1,
                    runs_done: 9,
                    failures: 1,
                }],
            },
        };
        let t = table(std::slice::from_ref(&f), 1100);
        assert!(t.contains("SCALE SET") && !t.contains("LOOP"), "{t}");
        let row = t.lines().find(|l| l.contains("krun-small")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            ["krun-small", "5", "2", "4/3", "0", "2", "1", "9", "1"],
            "{t}"
        );
        assert_eq!(json(&f)["pools"][0]["assigned_jobs"], 5);
    }
}
