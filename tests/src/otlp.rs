//! A real OTLP/HTTP receiver for tests: a loopback HTTP/1.1 server that decodes what the
//! exporters really send (`application/x-protobuf` bodies of `ExportTraceServiceRequest` on
//! `/v1/traces` and `ExportMetricsServiceRequest` on `/v1/metrics`) and keeps it: spans with
//! their service, and metric points, for assertions.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message as _;

/// One received span.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of the process that sent it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
}

/// One received metric point: a counter's or gauge's value, or a histogram's count and sum.
#[derive(Debug, Clone)]
pub struct Point {
    pub service: String,
    pub metric: String,
    pub attributes: BTreeMap<String, String>,
    /// Sum or gauge value; for a histogram, its sum.
    pub value: f64,
    /// For a histogram, the number of recordings.
    pub count: Option<u64>,
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    points: Vec<Point>,
    requests: usize,
    bytes: usize,
}

/// The receiver; serves until dropped (its thread ends with the process).
pub struct Receiver {
    pub endpoint: String,
    got: Arc<Mutex<Received>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn service_of(resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .as_ref()
        .map(|r| attrs(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

impl Received {
    fn traces(&mut self, body: &[u8]) -> Result<()> {
        let req = ExportTraceServiceRequest::decode(body).context("not a trace export")?;
        for rs in req.resource_spans {
            let service = service_of(&rs.resource);
            for ss in rs.scope_spans {
                for s in ss.spans {
                    self.spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: attrs(&s.attributes),
                    });
                }
            }
        }
        Ok(())
    }

    fn metrics(&mut self, body: &[u8]) -> Result<()> {
        let req = ExportMetricsServiceRequest::decode(body).context("not a metrics export")?;
        for rm in req.resource_metrics {
            let service = service_of(&rm.resource);
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let point = |attributes: &[KeyValue], value: f64, count: Option<u64>| Point {
                        service: service.clone(),
                        metric: m.name.clone(),
                        attributes: attrs(attributes),
                        value,
                        count,
                    };
                    let number = |v: &Option<number_data_point::Value>| match v {
                        Some(number_data_point::Value::AsInt(i)) => *i as f64,
                        Some(number_data_point::Value::AsDouble(d)) => *d,
                        None => 0.0,
                    };
                    match &m.data {
                        Some(metric::Data::Sum(s)) => self.points.extend(
                            s.data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(&p.value), None)),
                        ),
                        Some(metric::Data::Gauge(g)) => self.points.extend(
                            g.data_points
                                .iter()
                                .map(|p| point(&p.attributes, number(&p.value), None)),
                        ),
                        Some(metric::Data::Histogram(h)) => self.points.extend(
                            h.data_points
                                .iter()
                                .map(|p| point(&p.attributes, p.sum.unwrap_or(0.0), Some(p.count))),
                        ),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads one HTTP/1.1 request (Content-Length bodies; what the exporters send); `None` at
/// the end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> Result<Option<(String, Vec<u8>)>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            bail!("connection ended in the headers");
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse()?;
            }
            if name == "transfer-encoding" || name == "content-encoding" {
                bail!("unexpected {name}: {value}");
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok(Some((path, body)))
}

fn serve(stream: TcpStream, got: Arc<Mutex<Received>>) -> Result<()> {
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    while let Some((path, body)) = read_request(&mut r)? {
        let decoded = {
            let mut g = got.lock().unwrap_or_else(|p| p.into_inner());
            g.requests += 1;
            g.bytes += body.len();
            match path.as_str() {
                "/v1/traces" => g.traces(&body),
                "/v1/metrics" => g.metrics(&body),
                other => Err(anyhow::anyhow!("unexpected path {other}")),
            }
        };
        let status = if decoded.is_ok() {
            "200 OK"
        } else {
            "400 Bad Request"
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        )?;
        out.flush()?;
        decoded?;
    }
    Ok(())
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let got: Arc<Mutex<Received>> = Arc::default();
        let shared = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let got = shared.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, got) {
                        eprintln!("otlp receiver: {e:#}");
                    }
                });
            }
        });
        Ok(Receiver { endpoint, got })
    }

    pub fn spans(&self) -> Vec<Span> {
        self.got
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spans
            .clone()
    }

    pub fn points(&self) -> Vec<Point> {
        self.got
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .points
            .clone()
    }

    /// Export requests received and their body bytes.
    pub fn traffic(&self) -> (usize, usize) {
        let g = self.got.lock().unwrap_or_else(|p| p.into_inner());
        (g.requests, g.bytes)
    }
}
