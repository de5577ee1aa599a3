//! OpenTelemetry export: traces (through the OpenTelemetry SDK and its OTLP/HTTP
//! exporter, fed by `tracing` spans of target [`hypercache_actors::trace::TARGET`]) and
//! metrics (the very families `/metrics` renders, encoded as OTLP protobuf), switched
//! on by the standard `OTEL_*` variables.
//!
//! Export never holds up serving: finished spans go into a bounded queue (full: the
//! span is dropped and counted) that a thread of its own sends in batches, each send
//! bounded by the export timeout; metrics are pushed by one task, one push at a time.
//! At shutdown each gets one last send within [`FLUSH_BUDGET`], whatever the
//! collector does. With no endpoint set nothing is built, and the spans of the trace
//! target are disabled callsites.

use crate::config::ConfigError;
use hypercache_actors::metrics::{Family, HistogramSeries, Kind, Value, LATENCY_BUCKETS};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_sdk::trace::{Sampler, SpanData, SpanProcessor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `HYPERCACHE_TRACE_KEYS`: request spans carry the key.
static TRACE_KEYS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets whether exported request spans carry the key (from `HYPERCACHE_TRACE_KEYS`).
pub fn set_trace_keys(on: bool) {
    TRACE_KEYS.store(on, Relaxed);
}

/// Whether exported request spans carry the key.
pub fn trace_keys() -> bool {
    TRACE_KEYS.load(Relaxed)
}

/// The longest a shutdown waits for each signal's last export.
pub const FLUSH_BUDGET: Duration = Duration::from_secs(2);

/// Finished spans held for export at most; past it new spans are dropped (counted).
pub const SPAN_QUEUE: usize = 4096;

/// Spans per export request at most.
const SPAN_BATCH: usize = 512;

/// How long a span waits in the queue at most before it is sent.
const SPAN_DELAY: Duration = Duration::from_secs(1);

/// Export settings read from the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Full URL of the trace receiver (`…/v1/traces`), when traces are exported.
    pub traces: Option<String>,
    /// Full URL of the metric receiver (`…/v1/metrics`), when metrics are exported.
    pub metrics: Option<String>,
    pub trace_headers: Vec<(String, String)>,
    pub metric_headers: Vec<(String, String)>,
    pub trace_timeout: Duration,
    pub metric_timeout: Duration,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, then `service.name` and `service.instance.id`.
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerSetting,
    pub metric_interval: Duration,
}

/// `OTEL_TRACES_SAMPLER` (and its argument).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerSetting {
    fn sampler(self) -> Sampler {
        let parent = |root| Sampler::ParentBased(Box::new(root));
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => parent(Sampler::AlwaysOn),
            Self::ParentBasedAlwaysOff => parent(Sampler::AlwaysOff),
            Self::ParentBasedRatio(r) => parent(Sampler::TraceIdRatioBased(r)),
        }
    }
}

fn err(var: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError {
        var: var.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// An `http://` or `https://` URL with a host.
fn valid_url(v: &str) -> bool {
    match v.parse::<axum::http::Uri>() {
        Ok(u) => matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some(),
        Err(_) => false,
    }
}

/// `k=v,k=v` with percent-encoded values (the `OTEL_*_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES` format).
fn pairs(v: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = part.split_once('=')?;
        let k = k.trim();
        if k.is_empty() {
            return None;
        }
        let val = percent_encoding::percent_decode_str(val.trim())
            .decode_utf8()
            .ok()?
            .into_owned();
        out.push((k.to_owned(), val));
    }
    Some(out)
}

impl Settings {
    /// Reads the `OTEL_*` variables of `vars`: `Ok(None)` when no exporter is set up
    /// (no endpoint, `OTEL_SDK_DISABLED=true`, or both exporters `none`); an error names
    /// the first variable that is wrong. Header values never appear in an error.
    pub fn from_vars(
        vars: &HashMap<String, String>,
        node_id: &str,
    ) -> Result<Option<Settings>, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        match get("OTEL_SDK_DISABLED").map(|v| (v, v.to_ascii_lowercase())) {
            None => {}
            Some((_, l)) if l == "false" => {}
            Some((_, l)) if l == "true" => return Ok(None),
            Some((v, _)) => return Err(err("OTEL_SDK_DISABLED", v, "true or false")),
        }
        // Settings of the specification this build does not implement stop start-up
        // rather than being ignored: the export would not do what they ask.
        for var in [
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
        ] {
            if let Some(v) = get(var) {
                return Err(err(
                    var,
                    v,
                    "unset: this build trusts the public web PKI roots for an https receiver and sends no client certificate",
                ));
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        ] {
            if let Some(v) = get(var).filter(|v| *v != "none") {
                return Err(err(var, v, "none (this build sends uncompressed protobuf)"));
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Some(v) = get(var) {
                if v != "http/protobuf" {
                    return Err(err(var, v, "http/protobuf (the only OTLP protocol this build exports: no gRPC, no JSON)"));
                }
            }
        }
        let exporter = |var: &str| match get(var) {
            None | Some("otlp") => Ok(true),
            Some("none") => Ok(false),
            Some(v) => Err(err(var, v, "otlp or none")),
        };
        let base = match get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(v) if valid_url(v) => Some(v.trim_end_matches('/').to_owned()),
            Some(v) => {
                return Err(err(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    v,
                    "an http:// or https:// URL of an OTLP/HTTP receiver",
                ))
            }
            None => None,
        };
        let endpoint = |var: &str, path: &str| -> Result<Option<String>, ConfigError> {
            match get(var) {
                Some(v) if valid_url(v) => Ok(Some(v.to_owned())),
                Some(v) => Err(err(var, v, "an http:// or https:// URL (used as is)")),
                None => Ok(base.as_ref().map(|b| format!("{b}{path}"))),
            }
        };
        let traces_on = exporter("OTEL_TRACES_EXPORTER")?;
        let traces =
            endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces")?.filter(|_| traces_on);
        let metrics_on = exporter("OTEL_METRICS_EXPORTER")?;
        let metrics =
            endpoint("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "/v1/metrics")?.filter(|_| metrics_on);
        let headers = |var: &str| -> Result<Option<Vec<(String, String)>>, ConfigError> {
            match get(var) {
                None => Ok(None),
                Some(v) => pairs(v)
                    .filter(|p| {
                        p.iter().all(|(k, v)| {
                            axum::http::HeaderName::try_from(k.as_str()).is_ok()
                                && axum::http::HeaderValue::try_from(v.as_str()).is_ok()
                        })
                    })
                    .map(Some)
                    .ok_or_else(|| {
                        err(
                            var,
                            "[not shown]",
                            "comma-separated name=value pairs (values percent-encoded)",
                        )
                    }),
            }
        };
        let common = headers("OTEL_EXPORTER_OTLP_HEADERS")?.unwrap_or_default();
        let trace_headers = headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS")?.unwrap_or(common.clone());
        let metric_headers = headers("OTEL_EXPORTER_OTLP_METRICS_HEADERS")?.unwrap_or(common);
        let millis = |var: &str, default: Duration, min: u64| -> Result<Duration, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (min..=3_600_000).contains(ms))
                    .map(Duration::from_millis)
                    .ok_or_else(|| err(var, v, &format!("milliseconds, {min} to 3600000"))),
            }
        };
        let timeout = millis("OTEL_EXPORTER_OTLP_TIMEOUT", Duration::from_secs(10), 1)?;
        let trace_timeout = millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", timeout, 1)?;
        let metric_timeout = millis("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", timeout, 1)?;
        let metric_timeout = millis("OTEL_METRIC_EXPORT_TIMEOUT", metric_timeout, 1)?;
        // Each push reads every shard's counters: not more often than ten times a second.
        let metric_interval = millis("OTEL_METRIC_EXPORT_INTERVAL", Duration::from_secs(60), 100)?;
        let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            None => Vec::new(),
            Some(v) => pairs(v).ok_or_else(|| {
                err(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    v,
                    "comma-separated key=value pairs (values percent-encoded)",
                )
            })?,
        };
        // OTEL_SERVICE_NAME wins over a service.name among the attributes, which wins
        // over the default.
        let service_name = get("OTEL_SERVICE_NAME")
            .map(str::to_owned)
            .or_else(|| {
                resource
                    .iter()
                    .rev()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "hypercache".into());
        resource.retain(|(k, _)| k != "service.name" && k != "service.instance.id");
        resource.push(("service.name".into(), service_name.clone()));
        resource.push(("service.instance.id".into(), node_id.to_owned()));
        resource.push(("service.version".into(), env!("CARGO_PKG_VERSION").into()));
        let ratio = || -> Result<f64, ConfigError> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| err("OTEL_TRACES_SAMPLER_ARG", v, "a ratio from 0 to 1")),
            }
        };
        let sampler = match get("OTEL_TRACES_SAMPLER") {
            None | Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
            Some("always_on") => SamplerSetting::AlwaysOn,
            Some("always_off") => SamplerSetting::AlwaysOff,
            Some("traceidratio") => SamplerSetting::Ratio(ratio()?),
            Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerSetting::ParentBasedRatio(ratio()?),
            Some(v) => return Err(err(
                "OTEL_TRACES_SAMPLER",
                v,
                "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
            )),
        };
        if traces.is_none() && metrics.is_none() {
            return Ok(None);
        }
        Ok(Some(Settings {
            traces,
            metrics,
            trace_headers,
            metric_headers,
            trace_timeout,
            metric_timeout,
            service_name,
            resource,
            sampler,
            metric_interval,
        }))
    }
}

/// What the export itself did, shown with the node's metrics.
#[derive(Debug, Default)]
pub struct ExportCounters {
    spans_exported: AtomicU64,
    spans_dropped: AtomicU64,
    span_exports_failed: AtomicU64,
    metric_exports: AtomicU64,
    metric_exports_failed: AtomicU64,
}

static COUNTERS: ExportCounters = ExportCounters {
    spans_exported: AtomicU64::new(0),
    spans_dropped: AtomicU64::new(0),
    span_exports_failed: AtomicU64::new(0),
    metric_exports: AtomicU64::new(0),
    metric_exports_failed: AtomicU64::new(0),
};

/// The export's own metric families (all zero while nothing is exported).
pub fn families() -> Vec<Family> {
    let c = &COUNTERS;
    let row =
        |n: &str, h: &'static str, v: &AtomicU64| Family::row(n, h, "counter", v.load(Relaxed));
    vec![
        row("otel_spans_exported_total", "Spans sent to the OTLP trace receiver.", &c.spans_exported),
        row("otel_spans_dropped_total", "Finished spans dropped because the export queue was full (the receiver is slow or gone).", &c.spans_dropped),
        row("otel_span_exports_failed_total", "OTLP trace export requests that failed or timed out (their spans are lost).", &c.span_exports_failed),
        row("otel_metric_exports_total", "OTLP metric export requests that succeeded.", &c.metric_exports),
        row("otel_metric_exports_failed_total", "OTLP metric export requests that failed or timed out.", &c.metric_exports_failed),
    ]
}

/// Starts thread `name` running `work` on a current-thread runtime of its own (the
/// export's I/O never runs on the serving runtime). Either failing is an error of start-up.
fn export_thread(
    name: &str,
    work: impl FnOnce(tokio::runtime::Runtime) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the {name} runtime: {e}"))?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || work(rt))
        .map_err(|e| format!("cannot start the {name} thread: {e}"))
}

/// The running export: the tracer provider and the metric push, stopped by
/// [`Telemetry::shutdown`].
pub struct Telemetry {
    settings: Settings,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    /// The metric push's own client (a pool is driven by the runtime that opened its
    /// connections, so the two export threads do not share one).
    http: reqwest::Client,
    metrics_task: Mutex<
        Option<(
            tokio::sync::watch::Sender<bool>,
            std::thread::JoinHandle<()>,
        )>,
    >,
}

/// The HTTP client of the exports (rustls with the web PKI roots, no proxy).
fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(1)
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))
}

/// The OpenTelemetry SDK's HTTP client interface over [`reqwest::Client`].
#[derive(Debug, Clone)]
struct Http(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Http {
    async fn send_bytes(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self.0.request(parts.method, parts.uri.to_string());
        for (k, v) in parts.headers.iter() {
            req = req.header(k, v);
        }
        let mut resp = req.body(body).send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        // Receivers answer small bodies; past 64 KiB the rest is not read.
        let mut body = Vec::new();
        while body.len() < 64 * 1024 {
            match resp.chunk().await? {
                Some(c) => body.extend_from_slice(&c[..c.len().min(64 * 1024 - body.len())]),
                None => break,
            }
        }
        let body = bytes::Bytes::from(body);
        let mut out = axum::http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// Sends finished spans from a bounded queue on a thread of its own.
#[derive(Debug)]
struct QueueProcessor {
    tx: Mutex<Option<mpsc::SyncSender<SpanData>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl QueueProcessor {
    fn start(
        mut exporter: opentelemetry_otlp::SpanExporter,
        resource: &opentelemetry_sdk::Resource,
    ) -> Result<Self, String> {
        use opentelemetry_sdk::trace::SpanExporter as _;
        exporter.set_resource(resource);
        let (tx, rx) = mpsc::sync_channel::<SpanData>(SPAN_QUEUE);
        let worker = export_thread("otel-spans", move |rt| {
            let mut open = true;
            while open {
                let mut batch = Vec::new();
                match rx.recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
                let until = std::time::Instant::now() + SPAN_DELAY;
                while batch.len() < SPAN_BATCH {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(s) => batch.push(s),
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                let n = batch.len() as u64;
                // The exporter's own timeout bounds the request; this one bounds
                // everything else it might wait for.
                let sent = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), exporter.export(batch)).await
                });
                match sent {
                    Ok(Ok(())) => {
                        COUNTERS.spans_exported.fetch_add(n, Relaxed);
                    }
                    Ok(Err(e)) => {
                        COUNTERS.span_exports_failed.fetch_add(1, Relaxed);
                        tracing::debug!(error = %e, spans = n, "OTLP trace export failed");
                    }
                    Err(_) => {
                        COUNTERS.span_exports_failed.fetch_add(1, Relaxed);
                        tracing::debug!(spans = n, "OTLP trace export timed out");
                    }
                }
            }
        })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
        })
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return;
        };
        if tx.try_send(span).is_err() {
            COUNTERS.spans_dropped.fetch_add(1, Relaxed);
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        // Closing the queue makes the thread send what it holds and stop.
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = worker {
            let deadline = std::time::Instant::now() + timeout;
            while !w.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            // A thread still sending to a dead receiver is left to the process exit.
        }
        Ok(())
    }
}

/// W3C `traceparent` of a span's OpenTelemetry context.
fn traceparent(span: &tracing::Span) -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// Makes the remote context of `tp` the parent of `span`.
fn adopt(span: &tracing::Span, tp: &str) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier = HashMap::with_capacity(1);
    carrier.insert("traceparent".to_owned(), tp.to_owned());
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The `tracing` layer that turns spans of the trace target into OpenTelemetry spans,
/// when traces are exported.
pub type Layer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

impl Telemetry {
    /// Builds the exporters of `settings`; the returned layer goes into the subscriber.
    pub fn start(settings: Settings) -> Result<(Arc<Telemetry>, Option<Layer>), String> {
        use tracing_subscriber::Layer as _;
        let http = http_client(settings.metric_timeout)?;
        let mut layer = None;
        let mut provider = None;
        if let Some(url) = &settings.traces {
            use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(Http(http_client(settings.trace_timeout)?))
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url.clone())
                .with_timeout(settings.trace_timeout)
                .with_headers(settings.trace_headers.iter().cloned().collect())
                .build()
                .map_err(|e| format!("cannot build the OTLP trace exporter: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder_empty()
                .with_attributes(
                    settings
                        .resource
                        .iter()
                        .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
                )
                .build();
            let p = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_span_processor(QueueProcessor::start(exporter, &resource)?)
                .with_resource(resource)
                .with_sampler(settings.sampler.sampler())
                .build();
            let tracer = p.tracer("hypercache");
            let targets = tracing_subscriber::filter::Targets::new()
                .with_target(hypercache_actors::trace::TARGET, tracing::Level::TRACE);
            layer = Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(targets)
                    .boxed(),
            );
            provider = Some(p);
            hypercache_actors::trace::install(hypercache_actors::trace::Hooks {
                traceparent,
                adopt,
            });
        }
        Ok((
            Arc::new(Telemetry {
                settings,
                provider,
                http,
                metrics_task: Mutex::new(None),
            }),
            layer,
        ))
    }

    /// Starts pushing the node's metrics every `OTEL_METRIC_EXPORT_INTERVAL`, on a
    /// thread of its own (a slow receiver delays only the next push).
    pub fn push_metrics(
        self: &Arc<Self>,
        node: Arc<hypercache_actors::NodeHandle>,
        config: Arc<crate::config::Config>,
    ) -> Result<(), String> {
        let Some(url) = self.settings.metrics.clone() else {
            return Ok(());
        };
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let this = self.clone();
        let handle = export_thread("otel-metrics", move |rt| {
            rt.block_on(async move {
                let start = unix_nanos();
                let mut tick = tokio::time::interval(this.settings.metric_interval);
                // After a slow push the next waits a whole interval: no burst.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    tokio::select! {
                        _ = this.push_once(&url, &node, &config, start) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
                // The last push, within its budget.
                let last = this.push_once(&url, &node, &config, start);
                let _ = tokio::time::timeout(FLUSH_BUDGET, last).await;
            });
        })?;
        *self.metrics_task.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop_tx, handle));
        Ok(())
    }

    async fn push_once(
        &self,
        url: &str,
        node: &hypercache_actors::NodeHandle,
        config: &crate::config::Config,
        start: u64,
    ) {
        let (families, latency) = match crate::http::mgmt::snapshot(node, config).await {
            Ok(s) => s,
            Err(e) => {
                COUNTERS.metric_exports_failed.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "OTLP metric export: the node's figures could not be read");
                return;
            }
        };
        let body = encode_metrics(
            &self.settings.resource,
            &families,
            &latency,
            start,
            unix_nanos(),
        );
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (k, v) in &self.settings.metric_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                COUNTERS.metric_exports.fetch_add(1, Relaxed);
            }
            Ok(r) => {
                COUNTERS.metric_exports_failed.fetch_add(1, Relaxed);
                tracing::debug!(status = %r.status(), "OTLP metric export refused");
            }
            Err(e) => {
                COUNTERS.metric_exports_failed.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "OTLP metric export failed");
            }
        }
    }

    /// Sends the spans that are left and stops the span export, within
    /// [`FLUSH_BUDGET`] whatever the receiver does.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            let _ = p.shutdown_with_timeout(FLUSH_BUDGET);
        }
    }

    /// Makes the last metric push and stops the metric export, within [`FLUSH_BUDGET`]
    /// (and a little) whatever the receiver does. Called while the node still answers,
    /// so the last push has figures to send.
    pub fn stop_metrics(&self) {
        let task = self
            .metrics_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, handle)) = task {
            let _ = stop.send(true);
            let deadline = std::time::Instant::now() + FLUSH_BUDGET + Duration::from_millis(200);
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    }
}

/// The OTLP protobuf body of one metric export: every family as a cumulative sum
/// (counters) or gauge, the latency as a cumulative explicit-bucket histogram.
pub fn encode_metrics(
    resource: &[(String, String)],
    families: &[Family],
    latency: &[HistogramSeries],
    start: u64,
    now: u64,
) -> Vec<u8> {
    use prost::Message;
    let mut metrics = Vec::with_capacity(families.len() + 1);
    for f in families {
        let points: Vec<pm::NumberDataPoint> = f
            .samples
            .iter()
            .map(|(labels, value)| pm::NumberDataPoint {
                attributes: labels.iter().map(|(k, v)| kv(k, v)).collect(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(match value {
                    Value::Int(v) => pm::number_data_point::Value::AsInt(*v as i64),
                    Value::Float(v) => pm::number_data_point::Value::AsDouble(*v),
                }),
                ..Default::default()
            })
            .collect();
        let data = match f.kind {
            Kind::Counter => pm::metric::Data::Sum(pm::Sum {
                data_points: points,
                aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            Kind::Gauge => pm::metric::Data::Gauge(pm::Gauge {
                data_points: points,
            }),
        };
        metrics.push(pm::Metric {
            name: f.name.clone(),
            description: f.help.to_owned(),
            data: Some(data),
            ..Default::default()
        });
    }
    metrics.push(pm::Metric {
        name: hypercache_actors::metrics::LATENCY_NAME.to_owned(),
        description: hypercache_actors::metrics::LATENCY_HELP.to_owned(),
        unit: "s".into(),
        data: Some(pm::metric::Data::Histogram(pm::Histogram {
            data_points: latency
                .iter()
                .filter(|h| h.count > 0)
                .map(|h| pm::HistogramDataPoint {
                    attributes: vec![kv("route", h.route)],
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: h.count,
                    sum: Some(h.sum),
                    bucket_counts: h.buckets.clone(),
                    explicit_bounds: LATENCY_BUCKETS.to_vec(),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    });
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![pm::ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "hypercache".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    req.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_set_means_no_export() {
        assert_eq!(Settings::from_vars(&vars(&[]), "n1"), Ok(None));
        assert_eq!(
            Settings::from_vars(
                &vars(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_SDK_DISABLED", "true")
                ]),
                "n1"
            ),
            Ok(None)
        );
        assert_eq!(
            Settings::from_vars(
                &vars(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "none"),
                    ("OTEL_METRICS_EXPORTER", "none"),
                ]),
                "n1"
            ),
            Ok(None)
        );
    }

    #[test]
    fn endpoints_resources_and_sampler() {
        let s = Settings::from_vars(
            &vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "https://m.example/ingest",
                ),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20x,x-tenant=a",
                ),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,service.instance.id=spoof",
                ),
                ("OTEL_SERVICE_NAME", "cache-eu"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
            ]),
            "node-1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.traces.as_deref(), Some("http://collector:4318/v1/traces"));
        assert_eq!(s.metrics.as_deref(), Some("https://m.example/ingest"));
        assert_eq!(
            s.trace_headers,
            vec![
                ("authorization".into(), "Bearer x".into()),
                ("x-tenant".into(), "a".into())
            ]
        );
        assert_eq!(s.metric_headers, s.trace_headers);
        assert!(s
            .resource
            .contains(&("service.instance.id".into(), "node-1".into())));
        assert!(!s
            .resource
            .contains(&("service.instance.id".into(), "spoof".into())));
        assert!(s
            .resource
            .contains(&("service.name".into(), "cache-eu".into())));
        assert!(s
            .resource
            .contains(&("deployment.environment".into(), "prod".into())));
        assert_eq!(s.sampler, SamplerSetting::ParentBasedRatio(0.25));
        assert_eq!(s.metric_interval, Duration::from_secs(5));
    }

    #[test]
    fn spec_details() {
        let on = |extra: &[(&str, &str)]| {
            let mut v = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
            v.extend_from_slice(extra);
            Settings::from_vars(&vars(&v), "n")
        };
        assert_eq!(on(&[("OTEL_SDK_DISABLED", "TRUE")]), Ok(None));
        let s = on(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs")])
            .unwrap()
            .unwrap();
        assert_eq!(s.service_name, "from-attrs");
        let s = on(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ("OTEL_SERVICE_NAME", "named"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.service_name, "named");
        assert_eq!(s.trace_timeout, Duration::from_secs(10));
        let s = on(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.trace_timeout, Duration::from_millis(500));
        assert_eq!(s.metric_timeout, Duration::from_secs(2));
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
            ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/k.pem"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "50"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
        ] {
            assert_eq!(on(&[(var, value)]).unwrap_err().var, var);
        }
    }

    #[test]
    fn bad_values_name_the_variable_and_hide_headers() {
        for (pairs, var) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER", "sometimes"),
                ],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
                ],
                "OTEL_METRIC_EXPORT_INTERVAL",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
                ],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_EXPORTER", "zipkin"),
                ],
                "OTEL_TRACES_EXPORTER",
            ),
            (vec![("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
        ] {
            let e = Settings::from_vars(&vars(&pairs), "n").unwrap_err();
            assert_eq!(e.var, var, "{pairs:?}");
        }
        let e = Settings::from_vars(
            &vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=secret\nvalue"),
            ]),
            "n",
        )
        .unwrap_err();
        assert_eq!(e.var, "OTEL_EXPORTER_OTLP_HEADERS");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn metrics_encode_as_otlp() {
        use prost::Message;
        let families = vec![
            Family::row("puts_total", "Puts.", "counter", 7),
            Family {
                name: "hypercache_peer_queue_items".into(),
                help: "Queued.",
                kind: Kind::Gauge,
                samples: vec![(vec![("peer", "n2".into())], Value::Int(3))],
            },
            Family::single(
                "hypercache_fill_ratio".into(),
                "Fill.",
                Kind::Gauge,
                Value::Float(0.5),
            ),
        ];
        let latency = vec![HistogramSeries {
            route: "cache_put",
            buckets: vec![1; LATENCY_BUCKETS.len() + 1],
            count: (LATENCY_BUCKETS.len() + 1) as u64,
            sum: 1.5,
        }];
        let body = encode_metrics(
            &[("service.instance.id".into(), "n1".into())],
            &families,
            &latency,
            1,
            2,
        );
        let req = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        let rm = &req.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().unwrap().attributes[0].key,
            "service.instance.id"
        );
        let ms = &rm.scope_metrics[0].metrics;
        let by = |n: &str| {
            ms.iter()
                .find(|m| m.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        match by("hypercache_puts_total").data.as_ref().unwrap() {
            pm::metric::Data::Sum(s) => {
                assert!(s.is_monotonic);
                assert_eq!(
                    s.data_points[0].value,
                    Some(pm::number_data_point::Value::AsInt(7))
                );
            }
            other => panic!("{other:?}"),
        }
        match by("hypercache_peer_queue_items").data.as_ref().unwrap() {
            pm::metric::Data::Gauge(g) => assert_eq!(g.data_points[0].attributes[0].key, "peer"),
            other => panic!("{other:?}"),
        }
        match by("hypercache_request_duration_seconds")
            .data
            .as_ref()
            .unwrap()
        {
            pm::metric::Data::Histogram(h) => {
                let p = &h.data_points[0];
                assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
            }
            other => panic!("{other:?}"),
        }
    }
}
