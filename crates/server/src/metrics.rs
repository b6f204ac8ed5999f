//! Prometheus text exposition for `/metrics`: request counts by path and status, tokens in and
//! out, queue depth, busy slots, request latency histogram.

use crate::scheduler::SchedStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    bucket_counts: [u64; BUCKETS.len()],
    latency_sum: f64,
    latency_count: u64,
}

/// Request-level counters (token and slot figures come from the scheduler's stats).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, path: &str, status: u16, seconds: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests.entry((path.to_string(), status)).or_default() += 1;
        for (i, &b) in BUCKETS.iter().enumerate() {
            if seconds <= b {
                m.bucket_counts[i] += 1;
            }
        }
        m.latency_sum += seconds;
        m.latency_count += 1;
    }

    pub fn render(&self, s: &SchedStats, n_slots: usize) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP ferrite_requests_total HTTP requests by path and status."
        );
        let _ = writeln!(o, "# TYPE ferrite_requests_total counter");
        for ((path, status), n) in &m.requests {
            let _ = writeln!(
                o,
                "ferrite_requests_total{{path=\"{}\",status=\"{status}\"}} {n}",
                path.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        let counters = [
            (
                "ferrite_prompt_tokens_total",
                "Prompt tokens of admitted sequences.",
                s.prompt_tokens.load(Ordering::Relaxed),
            ),
            (
                "ferrite_prompt_tokens_cached_total",
                "Prompt tokens reused from a slot's cache.",
                s.cached_tokens.load(Ordering::Relaxed),
            ),
            (
                "ferrite_completion_tokens_total",
                "Generated tokens.",
                s.completion_tokens.load(Ordering::Relaxed),
            ),
            (
                "ferrite_decode_steps_total",
                "Batched forward passes.",
                s.steps.load(Ordering::Relaxed),
            ),
            (
                "ferrite_cancelled_total",
                "Sequences dropped because their client went away.",
                s.cancelled.load(Ordering::Relaxed),
            ),
            (
                "ferrite_backend_errors_total",
                "Failed forward passes.",
                s.backend_errors.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let gauges = [
            (
                "ferrite_queue_depth",
                "Sequences waiting for a slot.",
                s.queued.load(Ordering::Relaxed),
            ),
            (
                "ferrite_slots_busy",
                "Slots generating now.",
                s.active.load(Ordering::Relaxed),
            ),
            ("ferrite_slots_total", "Slots (--parallel).", n_slots),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let name = "ferrite_request_duration_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Time from request to last byte.\n# TYPE {name} histogram"
        );
        for (b, c) in BUCKETS.iter().zip(m.bucket_counts) {
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", m.latency_count);
        let _ = writeln!(o, "{name}_sum {}", m.latency_sum);
        let _ = writeln!(o, "{name}_count {}", m.latency_count);
        o
    }
}
