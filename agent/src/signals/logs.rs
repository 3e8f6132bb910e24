//! OTLP log records to the records the agent ships: WARN and above, and every record that
//! carries a trace id (the trace's waterfall shows them at their moment). The rest are
//! counted as filtered; attributes are bounded like a span's, the body cut at 8 KiB (by the
//! batch's validation, which also counts the cut).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use stormwatch_model::limits::{
    MAX_ATTRIBUTE_VALUE_BYTES, MAX_FUTURE_NS, MAX_LOG_ATTRIBUTES, MAX_LOG_BODY_BYTES, MIN_TIME_NS,
};
use stormwatch_model::log::SEVERITY_WARN;
use stormwatch_model::validate::truncate;
use stormwatch_model::LogRecord;

use super::{any_text, resource_identity};

/// The records of one request worth keeping, and how many were filtered or refused.
#[derive(Debug, Default)]
pub struct Converted {
    pub kept: Vec<LogRecord>,
    pub received: usize,
    pub filtered: usize,
    pub rejected: usize,
    pub first_error: Option<String>,
}

fn id(bytes: &[u8], len: usize) -> Vec<u8> {
    if bytes.len() == len && bytes.iter().any(|b| *b != 0) {
        bytes.to_vec()
    } else {
        Vec::new()
    }
}

/// Converts `req`; `now_ns` stands in for a record without any time.
pub fn convert(req: &ExportLogsServiceRequest, now_ns: i64) -> Converted {
    let mut out = Converted::default();
    for (ri, rl) in req.resource_logs.iter().enumerate() {
        let rattrs: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
        let (service, instance) = resource_identity(rattrs);
        for (si, sl) in rl.scope_logs.iter().enumerate() {
            for (li, r) in sl.log_records.iter().enumerate() {
                out.received += 1;
                let trace_id = id(&r.trace_id, 16);
                if r.severity_number < SEVERITY_WARN && trace_id.is_empty() {
                    out.filtered += 1;
                    continue;
                }
                let mut refuse = |why: &str| {
                    out.rejected += 1;
                    if out.first_error.is_none() {
                        out.first_error = Some(format!(
                            "resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]: {why}"
                        ));
                    }
                };
                if service.is_empty() {
                    refuse("the resource has no service.name");
                    continue;
                }
                let time = match (r.time_unix_nano, r.observed_time_unix_nano) {
                    (0, 0) => now_ns,
                    (0, t) | (t, _) => i64::try_from(t).unwrap_or(i64::MAX),
                };
                if time < MIN_TIME_NS || time > now_ns.saturating_add(MAX_FUTURE_NS) {
                    refuse("timeUnixNano is not a plausible time");
                    continue;
                }
                if !(0..=24).contains(&r.severity_number) {
                    refuse("severityNumber is not 0-24");
                    continue;
                }
                let mut body = r.body.as_ref().map(any_text).unwrap_or_default();
                truncate(&mut body, MAX_LOG_BODY_BYTES);
                let mut attributes = std::collections::BTreeMap::new();
                for kv in r.attributes.iter().take(MAX_LOG_ATTRIBUTES) {
                    let mut v = kv.value.as_ref().map(any_text).unwrap_or_default();
                    truncate(&mut v, MAX_ATTRIBUTE_VALUE_BYTES);
                    attributes.insert(kv.key.clone(), v);
                }
                out.kept.push(LogRecord {
                    time_ns: time,
                    service: service.to_owned(),
                    instance: instance.to_owned(),
                    severity_number: r.severity_number,
                    severity_text: r.severity_text.clone(),
                    body,
                    span_id: if trace_id.is_empty() {
                        Vec::new()
                    } else {
                        id(&r.span_id, 8)
                    },
                    trace_id,
                    attributes,
                });
            }
        }
    }
    out
}
