//! What tsmfs counts while it runs, in Prometheus' text format
//! (`/.tsmfs/metrics`): HTTP requests, FUSE operations, commits, the
//! store's size and dedup ratio, the GET cache and the kernel
//! invalidations. Every frontend records into the one [`Metrics`] its
//! [`crate::fs::Fs`] owns; recording is a few atomic operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
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

/// Upper bound of a latency histogram's first bucket; each next one
/// doubles it, up to about 26 s.
const FIRST_BUCKET_NS: u64 = 50_000;
/// Finite buckets (the last, +Inf, comes after them).
const BUCKETS: usize = 20;

/// A latency histogram recorded with atomic adds only: the crate's own
/// takes a mutex per observation, which two threads answering 100,000
/// requests a second contend for.
#[derive(Clone, Debug, Default)]
pub struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    buckets: [AtomicU64; BUCKETS + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Latency {
    /// Count one duration.
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Bucket i holds durations up to FIRST_BUCKET_NS * 2^i.
        let multiple = ns.div_ceil(FIRST_BUCKET_NS);
        let index = if multiple <= 1 { 0 } else { (u64::BITS - (multiple - 1).leading_zeros()) as usize };
        let counts = &self.0;
        counts.buckets[index.min(BUCKETS)].fetch_add(1, Ordering::Relaxed);
        counts.count.fetch_add(1, Ordering::Relaxed);
        counts.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS { f64::INFINITY } else { (FIRST_BUCKET_NS << i) as f64 / 1e9 };
                (bound, counts.buckets[i].load(Ordering::Relaxed))
            })
            .collect();
        let sum = counts.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.count.load(Ordering::Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// HTTP methods with a label of their own; the rest count as `other`.
const METHODS: [&str; 15] = [
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
/// Statuses whose counters are kept at hand (the rest are looked up).
const COMMON_STATUSES: [u16; 12] = [200, 201, 204, 206, 207, 304, 400, 401, 403, 404, 412, 500];

/// Counters and histograms of one HTTP method, resolved once.
#[derive(Default)]
struct MethodSlots {
    statuses: [OnceLock<Counter>; COMMON_STATUSES.len()],
    latency: OnceLock<Latency>,
}

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<OpLabels, Latency>,
    /// Handles into the two families above, per method (index in
    /// [`METHODS`], then `other`): a request costs atomic adds, not a
    /// lock and a hash lookup.
    http_slots: [MethodSlots; METHODS.len() + 1],
    http_sent: Counter,
    fuse_ops: Family<OpLabels, Counter>,
    fuse_duration: Family<OpLabels, Latency>,
    commits: Family<ResultLabels, Counter>,
    commit_duration: Latency,
    sync_duration: Family<OpLabels, Latency>,
    asset_hits: Counter,
    asset_misses: Counter,
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
        let mut metrics = Metrics {
            http_requests: Family::default(),
            http_duration: Family::default(),
            http_slots: Default::default(),
            http_sent: Counter::default(),
            fuse_ops: Family::default(),
            fuse_duration: Family::default(),
            commits: Family::default(),
            commit_duration: Latency::default(),
            sync_duration: Family::default(),
            asset_hits: Counter::default(),
            asset_misses: Counter::default(),
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
        registry.register_with_unit(
            "sync_duration",
            "Time of a sync to disk: of the metadata log (log), or of the data directory's filesystem (filesystem)",
            Unit::Seconds,
            metrics.sync_duration.clone(),
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
            "Sum of the sizes of the chunks stored (object files and the database)",
            Unit::Bytes,
            metrics.stored_bytes.clone(),
        );
        registry.register("dedup_ratio", "Logical bytes per stored byte", metrics.dedup_ratio.clone());
        metrics.asset_hits = metrics.asset_lookups.get_or_create_owned(&ResultLabels { result: "hit" });
        metrics.asset_misses = metrics.asset_lookups.get_or_create_owned(&ResultLabels { result: "miss" });
        metrics.registry = registry;
        metrics
    }

    /// An HTTP request answered `status` after `took`.
    pub fn http_request(&self, method: &http::Method, status: u16, took: Duration) {
        let index = METHODS.iter().position(|known| *known == method.as_str()).unwrap_or(METHODS.len());
        let name = METHODS.get(index).copied().unwrap_or("other");
        let slots = &self.http_slots[index];
        let labels = || RequestLabels { method: name, status };
        match COMMON_STATUSES.iter().position(|&common| common == status) {
            Some(at) => {
                slots.statuses[at].get_or_init(|| self.http_requests.get_or_create_owned(&labels())).inc()
            }
            None => self.http_requests.get_or_create(&labels()).inc(),
        };
        slots
            .latency
            .get_or_init(|| self.http_duration.get_or_create_owned(&OpLabels { op: name }))
            .observe(took);
    }

    /// `n` more bytes of a response body sent.
    pub fn http_body_sent(&self, n: u64) {
        self.http_sent.inc_by(n);
    }

    /// A FUSE request `op` answered, begun at `started`.
    pub fn fuse_op(&self, op: &'static str, started: Instant) {
        let labels = OpLabels { op };
        self.fuse_ops.get_or_create(&labels).inc();
        self.fuse_duration.get_or_create(&labels).observe(started.elapsed());
    }

    /// A write transaction ended (`ok` or not) after `took`.
    pub fn commit(&self, ok: bool, took: Duration) {
        self.commits.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
        self.commit_duration.observe(took);
    }

    /// A sync of `kind` (`log` or `filesystem`) took `took`.
    pub fn sync(&self, kind: &'static str, took: Duration) {
        self.sync_duration.get_or_create(&OpLabels { op: kind }).observe(took);
    }

    /// A GET looked a path up in memory (`hit`) or had to ask the core.
    pub fn asset_lookup(&self, hit: bool) {
        if hit {
            self.asset_hits.inc()
        } else {
            self.asset_misses.inc()
        };
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
            "tsmfs_http_request_duration_seconds_bucket{le=\"0.0016\",op=\"GET\"} 0",
            "tsmfs_http_request_duration_seconds_bucket{le=\"0.0032\",op=\"GET\"} 1",
            "tsmfs_http_request_duration_seconds_count{op=\"GET\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}
