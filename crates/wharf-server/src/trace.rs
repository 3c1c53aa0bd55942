//! `wharf trace TOPIC PARTITION OFFSET`: asks a running broker for a message's history
//! (`GET /v1/topics/{topic}/messages/{partition}/{offset}/history`) and prints it as a
//! timeline, or the JSON answer as it came with `--json`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::Value;

use crate::config::{TraceArgs, DEFAULT_HTTP_ADDR};

/// How long the whole request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let addr = args.http_addr.as_deref().unwrap_or(DEFAULT_HTTP_ADDR);
    let path = format!(
        "/v1/topics/{}/messages/{}/{}/history",
        encode_segment(&args.topic),
        args.partition,
        args.offset
    );
    let url = format!("http://{addr}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let mut resp = agent
        .get(&url)
        .call()
        .with_context(|| format!("asking the broker's HTTP API at {addr} (is `wharf serve` running there? set --http-addr)"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of GET {url}"))?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("GET {url} answered {status} with something that is not JSON"))?;
    if status != 200 {
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or(&text);
        return Err(anyhow!("{code}: {message} (HTTP {status} from {url})"));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", timeline(&body));
    }
    Ok(())
}

/// Percent-encodes what a topic name may not hold literally in a path segment (topic
/// names are letters, digits, `.`, `_` and `-`, so this only matters for bad input,
/// which the broker then refuses readably).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The answer as a human-readable timeline.
pub fn timeline(body: &Value) -> String {
    let mut out = String::new();
    let m = &body["message"];
    let published = m["publish_time_ms"].as_i64().unwrap_or(0);
    let _ = writeln!(
        out,
        "message {}/{}/{}  id {}",
        body["topic"].as_str().unwrap_or("?"),
        body["partition"],
        body["offset"],
        body["message_id"].as_str().unwrap_or("?")
    );
    let _ = writeln!(out, "  key      {}", bytes_field(m, "key"));
    let _ = writeln!(out, "  value    {}", bytes_field(m, "value"));
    for field in ["headers", "headers_base64"] {
        if let Some(h) = m[field].as_object() {
            for (k, v) in h {
                let v = v.as_str().unwrap_or_default();
                let note = if field == "headers_base64" {
                    " (base64)"
                } else {
                    ""
                };
                let _ = writeln!(out, "  header   {k}: {v}{note}");
            }
        }
    }
    if let Some(of) = body["dead_letter_of"].as_object() {
        let o = &of["origin"];
        let _ = writeln!(
            out,
            "  a dead letter of {}/{}/{}{}{}",
            o["topic"].as_str().unwrap_or("?"),
            o["partition"],
            o["offset"],
            of.get("subscription")
                .and_then(Value::as_str)
                .map(|s| format!(", subscription {s}"))
                .unwrap_or_default(),
            of.get("reason")
                .and_then(Value::as_str)
                .map(|r| format!(", reason {r:?}"))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "  (wharf trace {} {} {})",
            o["topic"].as_str().unwrap_or("?"),
            o["partition"],
            o["offset"]
        );
    }
    out.push('\n');
    let _ = writeln!(out, "{}  {:>9}  published", utc(published), "");
    let events = body["events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for e in events {
        let t = e["time_ms"].as_i64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{}  {:>9}  [{}] {}",
            utc(t),
            relative(t - published),
            e["subscription"].as_str().unwrap_or("?"),
            describe(e, t)
        );
    }
    let window = body["history_window_ms"].as_u64().unwrap_or(0);
    out.push('\n');
    if window == 0 {
        out.push_str(
            "History is off on this broker (--history-window-ms 0): no events are recorded.\n",
        );
    } else if events.is_empty() {
        let _ = writeln!(
            out,
            "No events within the history window ({}; kept in memory, lost on restart).",
            span(i64::try_from(window).unwrap_or(i64::MAX))
        );
    } else {
        let _ = writeln!(
            out,
            "Events of the last {} (kept in memory, lost on restart).",
            span(i64::try_from(window).unwrap_or(i64::MAX))
        );
    }
    out
}

fn bytes_field(m: &Value, name: &str) -> String {
    match (m[name].as_str(), m[format!("{name}_base64")].as_str()) {
        (Some(t), _) => format!("{t:?}"),
        (None, Some(b)) => format!("{b} (base64)"),
        (None, None) => "(none)".into(),
    }
}

fn location(l: &Value) -> String {
    format!(
        "{}/{}/{}",
        l["topic"].as_str().unwrap_or("?"),
        l["partition"],
        l["offset"]
    )
}

fn describe(e: &Value, t: i64) -> String {
    let n = e["delivery_count"].as_u64();
    let nth = n.map(|n| format!(" (delivery {n})")).unwrap_or_default();
    let reason = e["reason"]
        .as_str()
        .map(|r| format!(": {r:?}"))
        .unwrap_or_default();
    match e["kind"].as_str().unwrap_or("?") {
        "delivered" => format!(
            "delivered to {}{nth}, ack deadline in {}",
            e["consumer"].as_str().unwrap_or("?"),
            span(e["ack_deadline_ms"].as_i64().unwrap_or(t) - t)
        ),
        "acked" => format!("acked{nth}"),
        "nacked" => match e["redeliver_at_ms"].as_i64() {
            Some(at) => format!("nacked{nth}{reason}; redelivered in {}", span(at - t)),
            None => format!("nacked{nth}{reason}; that was its last delivery"),
        },
        "lease_expired" => format!("ack deadline passed{nth}"),
        "expired" => "time to live ran out".into(),
        "dead_lettered" => format!(
            "dead-lettered{nth}{reason} to {}",
            location(&e["dead_letter"])
        ),
        "redriven" => format!("redriven from {}", location(&e["redriven_from"])),
        other => other.to_string(),
    }
}

/// `+1.234s` from the publish time.
fn relative(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "+" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}s", ms / 1000, ms % 1000)
}

/// A duration for people: `250ms`, `30s`, `1.5s`, `10m`, `1h`.
fn span(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 && ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms if ms < 60_000 => format!("{:.1}s", ms as f64 / 1_000.0),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms => format!("{}s", ms / 1_000),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1_000);
    let milli = ms.rem_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_date(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: count 400-year eras of
/// 146097 days from 0000-03-01, so that leap days fall at the end of each year.
fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_795_854_245_123), "2026-11-28T08:24:05.123Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(span(250), "250ms");
        assert_eq!(span(30_000), "30s");
        assert_eq!(span(1_500), "1.5s");
        assert_eq!(span(3_600_000), "1h");
        assert_eq!(span(600_000), "10m");
        assert_eq!(relative(1_234), "+1.234s");
        assert_eq!(relative(-5), "-0.005s");
    }

    #[test]
    fn odd_topic_names_are_escaped_in_the_path() {
        assert_eq!(encode_segment("orders.v1_x-y"), "orders.v1_x-y");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
