//! What tsmfs counts while it runs, in Prometheus' text format
//! (`/.tsmfs/metrics`): HTTP requests, FUSE operations, commits, the
//! store's size and dedup ratio, the GET cache and the kernel
//! invalidations. Every frontend records into the one [`Metrics`] its
//! [`crate::fs::Fs`] owns; recording is a few atomic operations.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Its method (an unknown extension method counts as `other`).
    pub method: &'static str,
    /// The status answered.
    pub status: u16,
}

/// Labels naming one kind of operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The operation (a FUSE request, a method).
    pub op: &'static str,
}

/// Labels of a result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from 50 µs to about 26 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Histograms<OpLabels>,
    http_sent: Counter,
    fuse_ops: Family<OpLabels, Counter>,
    fuse_duration: Histograms<OpLabels>,
    commits: Family<ResultLabels, Counter>,
    commit_duration: Histogram,
    asset_lookups: Family<ResultLabels, Counter>,
    invalidations: Family<OpLabels, Counter>,
    files: Gauge,
    logical_bytes: Gauge,
    stored_bytes: Gauge,
    dedup_ratio: Gauge<f64, AtomicU64>,
    /// When the totals were last set.
    totals_at: parking_lot::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tsmfs");
        let metrics = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency),
            http_sent: Counter::default(),
            fuse_ops: Family::default(),
            fuse_duration: Family::new_with_constructor(latency),
            commits: Family::default(),
            commit_duration: latency(),
            asset_lookups: Family::default(),
            invalidations: Family::default(),
            files: Gauge::default(),
            logical_bytes: Gauge::default(),
            stored_bytes: Gauge::default(),
            dedup_ratio: Gauge::default(),
            totals_at: parking_lot::Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests answered", metrics.http_requests.clone());
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response headers",
            Unit::Seconds,
            metrics.http_duration.clone(),
        );
        registry.register_with_unit(
            "http_response_body",
            "Bytes of response bodies sent",
            Unit::Bytes,
            metrics.http_sent.clone(),
        );
        registry.register("fuse_operations", "FUSE requests answered", metrics.fuse_ops.clone());
        registry.register_with_unit(
            "fuse_operation_duration",
            "Time tsmfs took to answer a FUSE request",
            Unit::Seconds,
            metrics.fuse_duration.clone(),
        );
        registry.register("commits", "Metadata write transactions", metrics.commits.clone());
        registry.register_with_unit(
            "commit_duration",
            "Time of a metadata write transaction, waiting for the writer included",
            Unit::Seconds,
            metrics.commit_duration.clone(),
        );
        registry.register(
            "asset_lookups",
            "GET path lookups, answered from memory (hit) or the database (miss)",
            metrics.asset_lookups.clone(),
        );
        registry.register(
            "kernel_invalidations",
            "Cache invalidations sent to the kernel, by kind",
            metrics.invalidations.clone(),
        );
        registry.register("files", "Regular files (inodes)", metrics.files.clone());
        registry.register_with_unit(
            "logical",
            "Sum of file sizes",
            Unit::Bytes,
            metrics.logical_bytes.clone(),
        );
        registry.register_with_unit(
            "stored",
            "Sum of the sizes of the chunk objects stored",
            Unit::Bytes,
            metrics.stored_bytes.clone(),
        );
        registry.register("dedup_ratio", "Logical bytes per stored byte", metrics.dedup_ratio.clone());
        Metrics { registry, ..metrics }
    }

    /// An HTTP request answered `status` after `took`.
    pub fn http_request(&self, method: &http::Method, status: u16, took: Duration) {
        let method = method_name(method);
        self.http_requests.get_or_create(&RequestLabels { method, status }).inc();
        self.http_duration.get_or_create(&OpLabels { op: method }).observe(took.as_secs_f64());
    }

    /// `n` more bytes of a response body sent.
    pub fn http_body_sent(&self, n: u64) {
        self.http_sent.inc_by(n);
    }

    /// A FUSE request `op` answered, begun at `started`.
    pub fn fuse_op(&self, op: &'static str, started: Instant) {
        let labels = OpLabels { op };
        self.fuse_ops.get_or_create(&labels).inc();
        self.fuse_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }

    /// A write transaction ended (`ok` or not) after `took`.
    pub fn commit(&self, ok: bool, took: Duration) {
        self.commits.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
        self.commit_duration.observe(took.as_secs_f64());
    }

    /// A GET looked a path up in memory (`hit`) or had to ask the core.
    pub fn asset_lookup(&self, hit: bool) {
        self.asset_lookups.get_or_create(&ResultLabels { result: if hit { "hit" } else { "miss" } }).inc();
    }

    /// An invalidation of kind `kind` sent to the kernel.
    pub fn kernel_invalidation(&self, kind: &'static str) {
        self.invalidations.get_or_create(&OpLabels { op: kind }).inc();
    }

    /// Whether the totals are older than `max_age` (or unset); if so, the
    /// caller is to set them, and others asking meanwhile are told no.
    pub fn totals_due(&self, max_age: Duration) -> bool {
        let mut at = self.totals_at.lock();
        let due = at.is_none_or(|at| at.elapsed() >= max_age);
        if due {
            *at = Some(Instant::now());
        }
        due
    }

    /// The store's totals, as last computed.
    pub fn set_totals(&self, files: u64, logical_bytes: u64, stored_bytes: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.files.set(gauge(files));
        self.logical_bytes.set(gauge(logical_bytes));
        self.stored_bytes.set(gauge(stored_bytes));
        let ratio = if stored_bytes == 0 { 1.0 } else { logical_bytes as f64 / stored_bytes as f64 };
        self.dedup_ratio.set(ratio);
    }

    /// Everything, in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("metrics: encoding failed: {e}");
        }
        out
    }
}

/// A method's name as a label: the ones a WebDAV server knows, else
/// `other` (a label per made-up method would let clients grow the
/// metrics without bound).
fn method_name(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 15] = [
        "GET",
        "HEAD",
        "PUT",
        "POST",
        "DELETE",
        "OPTIONS",
        "PATCH",
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "TRACE",
    ];
    KNOWN.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_come_out_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.http_request(&http::Method::GET, 200, Duration::from_millis(3));
        metrics.http_request(&http::Method::from_bytes(b"BREW").unwrap(), 405, Duration::from_millis(1));
        metrics.fuse_op("lookup", Instant::now());
        metrics.commit(true, Duration::from_micros(80));
        metrics.set_totals(3, 300, 100);
        let text = metrics.render();
        for line in [
            "tsmfs_http_requests_total{method=\"GET\",status=\"200\"} 1",
            "tsmfs_http_requests_total{method=\"other\",status=\"405\"} 1",
            "tsmfs_fuse_operations_total{op=\"lookup\"} 1",
            "tsmfs_commits_total{result=\"ok\"} 1",
            "tsmfs_dedup_ratio 3.0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}
