//! Log output: `tracing` events at the configured level, each line carrying the node id,
//! as text for terminals or one JSON object per line.

use crate::config::{Config, LogFormat};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Formats every event with a timestamp, level, node id and target.
struct NodeFormat {
    node: String,
    format: LogFormat,
}

#[derive(Default)]
struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for NodeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        match self.format {
            LogFormat::Text => {
                write!(
                    w,
                    "{ts} {:>5} node={} {}: ",
                    meta.level(),
                    self.node,
                    meta.target()
                )?;
                ctx.field_format().format_fields(w.by_ref(), event)?;
                writeln!(w)
            }
            LogFormat::Json => {
                let mut fields = JsonFields::default();
                event.record(&mut fields);
                let mut obj = serde_json::Map::new();
                obj.insert("ts".into(), ts.to_string().into());
                obj.insert("level".into(), meta.level().as_str().into());
                obj.insert("node".into(), self.node.clone().into());
                obj.insert("target".into(), meta.target().into());
                for (k, v) in fields.0 {
                    obj.insert(k, v);
                }
                writeln!(w, "{}", serde_json::Value::Object(obj))
            }
        }
    }
}

/// Installs the global subscriber. Our crates log at the configured level; dependencies
/// only at `warn` and above (unless the level is stricter).
///
/// `otel`, when traces are exported, is the layer that turns the trace spans into
/// OpenTelemetry spans (with its own filter: the log level does not decide what is
/// traced, and the trace spans are not logged).
pub fn init(config: &Config, otel: Option<crate::telemetry::Layer>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let lvl = &config.log_level;
    let base = if lvl == "error" { "error" } else { "warn" };
    let filter = EnvFilter::new(format!(
        "{base},hypercache_server={lvl},hypercache_actors={lvl}"
    ));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(NodeFormat {
            node: config.node_id.clone(),
            format: config.log_format,
        })
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init();
}
