//! Flow filters (`ip`, `client`, `server`, `port`, `proto`, `state`, `completeness`,
//! `where`) evaluated on a row, whether the row is a Parquet batch row or a record.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use arrow_array::{
    Array, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray,
    UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_schema::ArrowError;
use tapvault_storage::{FlowPredicate, FlowRecord, FlowState};

use crate::{
    error::ApiError,
    fields::{FIELDS, OwnedValue, Value, field_index},
};

/// An address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// `192.0.2.1`, `10.0.0.0/8`, `2001:db8::/32`.
    pub(crate) fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 or IPv6 address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("`{s}`: prefix length must be 0 to {max}")),
            },
        };
        let net = Net { addr, prefix };
        if net.masked(addr) != addr_bits(addr) {
            return Err(format!(
                "`{s}` has host bits set beyond its /{prefix} prefix"
            ));
        }
        Ok(net)
    }

    fn masked(&self, a: IpAddr) -> u128 {
        let bits = addr_bits(a);
        let width = if a.is_ipv4() { 32 } else { 128 };
        if self.prefix == 0 {
            0
        } else {
            bits & (u128::MAX << (width - u32::from(self.prefix)))
        }
    }

    pub(crate) fn contains(&self, a: IpAddr) -> bool {
        let a = match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            v4 => v4,
        };
        a.is_ipv4() == self.addr.is_ipv4() && self.masked(a) == addr_bits(self.addr)
    }
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A comparison operator of `where`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// The right side of a `where` condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rhs {
    Int(i128),
    Float(f64),
    /// `factor * field`.
    Field {
        factor: f64,
        field: usize,
    },
}

/// `field op rhs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cond {
    pub(crate) field: usize,
    pub(crate) op: Op,
    pub(crate) rhs: Rhs,
}

fn numeric_field(name: &str) -> Result<usize, String> {
    let i = field_index(name).ok_or_else(|| format!("unknown field `{name}`"))?;
    if !FIELDS[i].kind.numeric() {
        return Err(format!(
            "field `{name}` is text; filter it with its own parameter (ip, client, server, proto, state)"
        ));
    }
    Ok(i)
}

fn parse_number(s: &str) -> Option<Rhs> {
    if let Ok(i) = s.parse::<i128>() {
        return Some(Rhs::Int(i));
    }
    let looks = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+'));
    match s.parse::<f64>() {
        Ok(f) if looks && f.is_finite() => Some(Rhs::Float(f)),
        _ => None,
    }
}

impl Cond {
    /// `retransmission_rate>0.05`, `zero_window_events>=1`, `rtt_max_us>10*rtt_min_us`.
    pub(crate) fn parse(s: &str) -> Result<Cond, String> {
        let pos = s.find(['<', '>', '=', '!']).ok_or_else(|| {
            format!("`{s}` has no comparison; use FIELD OP VALUE with OP one of > >= < <= = !=")
        })?;
        let name = s[..pos].trim();
        if name.is_empty() {
            return Err(format!("`{s}` has no field name before the operator"));
        }
        let field = numeric_field(name)?;
        let rest = &s[pos..];
        let (op, len) = if rest.starts_with(">=") {
            (Op::Ge, 2)
        } else if rest.starts_with("<=") {
            (Op::Le, 2)
        } else if rest.starts_with("!=") {
            (Op::Ne, 2)
        } else if rest.starts_with("==") {
            (Op::Eq, 2)
        } else if rest.starts_with('>') {
            (Op::Gt, 1)
        } else if rest.starts_with('<') {
            (Op::Lt, 1)
        } else if rest.starts_with('=') {
            (Op::Eq, 1)
        } else {
            return Err(format!("`{s}`: `!` must be followed by `=`"));
        };
        let rhs_s = rest[len..].trim();
        if rhs_s.is_empty() {
            return Err(format!("`{s}` has no value after the operator"));
        }
        let rhs = if let Some(n) = parse_number(rhs_s) {
            n
        } else {
            let (factor, fname) = match rhs_s.split_once('*') {
                Some((f, n)) => {
                    let f = match parse_number(f.trim()) {
                        Some(Rhs::Int(i)) => i as f64,
                        Some(Rhs::Float(x)) => x,
                        _ => {
                            return Err(format!(
                                "`{s}`: `{}` is not a number (use NUMBER*FIELD)",
                                f.trim()
                            ));
                        }
                    };
                    (f, n.trim())
                }
                None => (1.0, rhs_s),
            };
            let field = numeric_field(fname).map_err(|e| {
                format!("`{s}`: the value must be a number, a field or NUMBER*FIELD ({e})")
            })?;
            Rhs::Field { factor, field }
        };
        Ok(Cond { field, op, rhs })
    }

    fn holds(&self, row: &dyn Row) -> bool {
        let lhs = row.get(self.field);
        if lhs == Value::Null {
            return false;
        }
        let ord = match (&lhs, &self.rhs) {
            (Value::Int(a), Rhs::Int(b)) => a.partial_cmp(b),
            (l, Rhs::Int(b)) => l.num().and_then(|a| a.partial_cmp(&(*b as f64))),
            (l, Rhs::Float(b)) => l.num().and_then(|a| a.partial_cmp(b)),
            (l, Rhs::Field { factor, field }) => {
                let r = row.get(*field);
                match (l, r, *factor == 1.0) {
                    (Value::Int(a), Value::Int(b), true) => a.partial_cmp(&b),
                    (l, r, _) => match (l.num(), r.num()) {
                        (Some(a), Some(b)) => a.partial_cmp(&(factor * b)),
                        _ => None,
                    },
                }
            }
        };
        let Some(ord) = ord else { return false };
        use std::cmp::Ordering::*;
        match self.op {
            Op::Gt => ord == Greater,
            Op::Ge => ord != Less,
            Op::Lt => ord == Less,
            Op::Le => ord != Greater,
            Op::Eq => ord == Equal,
            Op::Ne => ord != Equal,
        }
    }

    fn fields(&self) -> Vec<usize> {
        match self.rhs {
            Rhs::Field { field, .. } => vec![self.field, field],
            _ => vec![self.field],
        }
    }
}

/// Access to one row's fields by [`FIELDS`] index.
pub(crate) trait Row {
    fn get(&self, field: usize) -> Value<'_>;
}

impl Row for FlowRecord {
    fn get(&self, field: usize) -> Value<'_> {
        crate::fields::value(self, field)
    }
}

/// All filters of a flows request (ANDed; comma lists within one parameter are ORed).
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowFilter {
    pub(crate) ip: Vec<Net>,
    pub(crate) client: Vec<Net>,
    pub(crate) server: Vec<Net>,
    pub(crate) port: Vec<u16>,
    pub(crate) proto: Vec<String>,
    pub(crate) state: Vec<String>,
    pub(crate) completeness: Vec<u8>,
    pub(crate) wheres: Vec<Cond>,
}

fn list<T>(
    param: &str,
    v: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ApiError> {
    v.split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                Err(ApiError::bad(param, format!("empty item in `{v}`")))
            } else {
                parse(item).map_err(|e| ApiError::bad(param, e))
            }
        })
        .collect()
}

const STATES: &[FlowState] = &[
    FlowState::Unknown,
    FlowState::Refused,
    FlowState::NoResponse,
    FlowState::IncompleteHandshake,
    FlowState::Established,
    FlowState::Closed,
    FlowState::Reset,
    FlowState::HalfClosed,
    FlowState::MidStream,
    FlowState::Stale,
    FlowState::Stateless,
];

impl FlowFilter {
    /// Reads the filter parameters that are present.
    pub(crate) fn from_params(p: &crate::params::Params) -> Result<FlowFilter, ApiError> {
        let mut f = FlowFilter::default();
        if let Some(v) = p.get("ip") {
            f.ip = list("ip", v, Net::parse)?;
        }
        if let Some(v) = p.get("client") {
            f.client = list("client", v, Net::parse)?;
        }
        if let Some(v) = p.get("server") {
            f.server = list("server", v, Net::parse)?;
        }
        if let Some(v) = p.get("port") {
            f.port = list("port", v, |s| {
                s.parse::<u16>()
                    .ok()
                    .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("`{s}` is not a port number (0 to 65535)"))
            })?;
        }
        if let Some(v) = p.get("proto") {
            f.proto = list("proto", v, |s| {
                let s = s.to_ascii_lowercase();
                match s.as_str() {
                    "tcp" | "udp" | "icmp" | "icmpv6" | "sctp" | "gre" | "esp" => Ok(s),
                    n if n.parse::<u8>().is_ok() && n.bytes().all(|b| b.is_ascii_digit()) => {
                        Ok(n.parse::<u8>().map(|n| n.to_string()).unwrap_or_default())
                    }
                    _ => Err(format!(
                        "`{s}` is not a protocol (tcp, udp, icmp, icmpv6, sctp, gre, esp or a number 0 to 255)"
                    )),
                }
            })?;
        }
        if let Some(v) = p.get("state") {
            f.state = list("state", v, |s| {
                STATES
                    .iter()
                    .find(|st| st.as_str() == s)
                    .map(|st| st.as_str().to_owned())
                    .ok_or_else(|| {
                        let names: Vec<&str> = STATES.iter().map(|s| s.as_str()).collect();
                        format!("`{s}` is not a state; use one of {}", names.join(", "))
                    })
            })?;
        }
        if let Some(v) = p.get("completeness") {
            f.completeness = list("completeness", v, |s| {
                s.parse::<u8>()
                    .ok()
                    .filter(|n| *n <= 63 && s.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| format!("`{s}` is not a completeness bitmask (0 to 63)"))
            })?;
        }
        for w in p.all("where") {
            f.wheres
                .push(Cond::parse(w.trim()).map_err(|e| ApiError::bad("where", e))?);
        }
        Ok(f)
    }

    /// The fields the filter reads.
    pub(crate) fn fields(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let idx = |n: &str| field_index(n).unwrap_or(0);
        if !self.ip.is_empty() || !self.client.is_empty() {
            out.push(idx("client_ip"));
        }
        if !self.ip.is_empty() || !self.server.is_empty() {
            out.push(idx("server_ip"));
        }
        if !self.port.is_empty() {
            out.extend([idx("client_port"), idx("server_port")]);
        }
        if !self.proto.is_empty() {
            out.push(idx("proto"));
        }
        if !self.state.is_empty() {
            out.push(idx("state"));
        }
        if !self.completeness.is_empty() {
            out.push(idx("connection_completeness"));
        }
        for w in &self.wheres {
            out.extend(w.fields());
        }
        out
    }

    pub(crate) fn matches(&self, row: &dyn Row) -> bool {
        let text = |name: &str| match row.get(field_index(name).unwrap_or(0)) {
            Value::Text(s) => Some(s.to_owned()),
            _ => None,
        };
        let addr = |name: &str| text(name).and_then(|s| s.parse::<IpAddr>().ok());
        let int = |name: &str| match row.get(field_index(name).unwrap_or(0)) {
            Value::Int(i) => Some(i),
            _ => None,
        };
        let in_nets =
            |nets: &[Net], a: Option<IpAddr>| a.is_some_and(|a| nets.iter().any(|n| n.contains(a)));
        if !self.client.is_empty() && !in_nets(&self.client, addr("client_ip")) {
            return false;
        }
        if !self.server.is_empty() && !in_nets(&self.server, addr("server_ip")) {
            return false;
        }
        if !self.ip.is_empty()
            && !in_nets(&self.ip, addr("client_ip"))
            && !in_nets(&self.ip, addr("server_ip"))
        {
            return false;
        }
        if !self.port.is_empty() {
            let (c, s) = (int("client_port"), int("server_port"));
            if !self
                .port
                .iter()
                .any(|p| Some(i128::from(*p)) == c || Some(i128::from(*p)) == s)
            {
                return false;
            }
        }
        if !self.proto.is_empty() && !text("proto").is_some_and(|p| self.proto.contains(&p)) {
            return false;
        }
        if !self.state.is_empty() && !text("state").is_some_and(|p| self.state.contains(&p)) {
            return false;
        }
        if !self.completeness.is_empty()
            && !int("connection_completeness")
                .is_some_and(|c| self.completeness.iter().any(|x| i128::from(*x) == c))
        {
            return false;
        }
        self.wheres.iter().all(|w| w.holds(row))
    }
}

/// A typed view of one Arrow column.
enum Col<'a> {
    U8(&'a UInt8Array),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    Ts(&'a TimestampNanosecondArray),
    F64(&'a Float64Array),
    Str(&'a StringArray),
}

impl Col<'_> {
    fn of(a: &dyn Array) -> Option<Col<'_>> {
        let any = a.as_any();
        Some(if let Some(x) = any.downcast_ref::<UInt8Array>() {
            Col::U8(x)
        } else if let Some(x) = any.downcast_ref::<UInt16Array>() {
            Col::U16(x)
        } else if let Some(x) = any.downcast_ref::<UInt32Array>() {
            Col::U32(x)
        } else if let Some(x) = any.downcast_ref::<UInt64Array>() {
            Col::U64(x)
        } else if let Some(x) = any.downcast_ref::<TimestampNanosecondArray>() {
            Col::Ts(x)
        } else if let Some(x) = any.downcast_ref::<Float64Array>() {
            Col::F64(x)
        } else if let Some(x) = any.downcast_ref::<StringArray>() {
            Col::Str(x)
        } else {
            return None;
        })
    }

    fn get(&self, i: usize) -> Value<'_> {
        macro_rules! v {
            ($a:expr, $conv:expr) => {
                if $a.is_null(i) {
                    Value::Null
                } else {
                    $conv($a.value(i))
                }
            };
        }
        match self {
            Col::U8(a) => v!(a, |x| Value::Int(i128::from(x))),
            Col::U16(a) => v!(a, |x| Value::Int(i128::from(x))),
            Col::U32(a) => v!(a, |x| Value::Int(i128::from(x))),
            Col::U64(a) => v!(a, |x| Value::Int(i128::from(x))),
            Col::Ts(a) => v!(a, |x| Value::Int(i128::from(x))),
            Col::F64(a) => v!(a, Value::Float),
            Col::Str(a) => v!(a, Value::Text),
        }
    }
}

struct BatchRow<'a> {
    cols: &'a [Option<Col<'a>>],
    i: usize,
}

impl Row for BatchRow<'_> {
    fn get(&self, field: usize) -> Value<'_> {
        match self.cols.get(field) {
            Some(Some(c)) => c.get(self.i),
            _ => Value::Null,
        }
    }
}

/// The total order of a result: the sort field (nulls last), then `flow_id`, `last_seen_ns`
/// and `first_seen_ns` ascending, so ties are broken the same way on every page.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SortKey {
    pub(crate) value: OwnedValue,
    pub(crate) flow_id: String,
    pub(crate) last_seen_ns: i64,
    pub(crate) first_seen_ns: i64,
}

impl SortKey {
    pub(crate) fn of(row: &dyn Row, sort_field: usize) -> SortKey {
        let int = |name| match row.get(field_index(name).unwrap_or(0)) {
            Value::Int(i) => i64::try_from(i).unwrap_or(0),
            _ => 0,
        };
        SortKey {
            value: row.get(sort_field).to_owned(),
            flow_id: match row.get(0) {
                Value::Text(s) => s.to_owned(),
                _ => String::new(),
            },
            last_seen_ns: int("last_seen_ns"),
            first_seen_ns: int("first_seen_ns"),
        }
    }

    pub(crate) fn cmp(&self, other: &SortKey, ascending: bool) -> std::cmp::Ordering {
        self.value
            .cmp_dir(&other.value, ascending)
            .then_with(|| self.flow_id.cmp(&other.flow_id))
            .then_with(|| self.last_seen_ns.cmp(&other.last_seen_ns))
            .then_with(|| self.first_seen_ns.cmp(&other.first_seen_ns))
    }
}

/// A heap entry ordered by [`SortKey::cmp`] in one direction.
struct Ranked(SortKey, bool);

impl PartialEq for Ranked {
    fn eq(&self, o: &Self) -> bool {
        self.0.cmp(&o.0, self.1).is_eq()
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ranked {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0, self.1)
    }
}

/// What a page of flows asks for, compiled into a predicate for the Parquet decoder: the
/// filter, the position after the cursor, and a running top-`keep` so rows that cannot make
/// the page are never decoded whole.
pub(crate) struct PagePlan {
    pub(crate) filter: FlowFilter,
    pub(crate) sort_field: usize,
    pub(crate) ascending: bool,
    pub(crate) after: Option<SortKey>,
    /// Rows to keep (the page plus one, to know whether there is a next page); `None`
    /// keeps every matching row.
    pub(crate) keep: Option<usize>,
}

impl PagePlan {
    pub(crate) fn predicate(self: Arc<Self>) -> FlowPredicate {
        let mut fields = self.filter.fields();
        fields.push(self.sort_field);
        fields.extend(
            ["flow_id", "first_seen_ns", "last_seen_ns"]
                .iter()
                .filter_map(|n| field_index(n)),
        );
        fields.sort_unstable();
        fields.dedup();
        let columns = fields.iter().map(|&i| FIELDS[i].name.to_owned()).collect();
        let heap = Mutex::new(std::collections::BinaryHeap::<Ranked>::new());
        FlowPredicate {
            columns,
            eval: Arc::new(move |batch: &RecordBatch| {
                let cols: Vec<Option<Col<'_>>> = FIELDS
                    .iter()
                    .map(|f| {
                        batch
                            .column_by_name(f.name)
                            .and_then(|c| Col::of(c.as_ref()))
                    })
                    .collect();
                let mut heap = heap
                    .lock()
                    .map_err(|_| ArrowError::ComputeError("poisoned top-k heap".into()))?;
                let mut out = Vec::with_capacity(batch.num_rows());
                for i in 0..batch.num_rows() {
                    let row = BatchRow { cols: &cols, i };
                    if !self.filter.matches(&row) {
                        out.push(false);
                        continue;
                    }
                    if self.after.is_none() && self.keep.is_none() {
                        out.push(true);
                        continue;
                    }
                    let key = SortKey::of(&row, self.sort_field);
                    if let Some(a) = &self.after
                        && !key.cmp(a, self.ascending).is_gt()
                    {
                        out.push(false);
                        continue;
                    }
                    let Some(k) = self.keep else {
                        out.push(true);
                        continue;
                    };
                    let r = Ranked(key, self.ascending);
                    if heap.len() < k {
                        heap.push(r);
                        out.push(true);
                    } else if heap.peek().is_some_and(|worst| r < *worst) {
                        heap.push(r);
                        heap.pop();
                        out.push(true);
                    } else {
                        out.push(false);
                    }
                }
                Ok(BooleanArray::from(out))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(!n.contains("::a00:1".parse().unwrap()));
        let v6 = Net::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(
            Net::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "300.1.1.1",
            "10.0.0.0/",
            "x",
            "::/129",
        ] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conds() {
        let rec = FlowRecord {
            retransmission_rate: 0.1,
            zero_window_events: 2,
            rtt_min_us: Some(10.0),
            rtt_max_us: Some(150.0),
            ..FlowRecord::default()
        };
        let t = |s: &str| Cond::parse(s).unwrap().holds(&rec);
        assert!(t("retransmission_rate>0.05"));
        assert!(!t("retransmission_rate<=0.05"));
        assert!(t("zero_window_events>=2"));
        assert!(t("zero_window_events!=3"));
        assert!(t("zero_window_events=2"));
        assert!(t("rtt_max_us>10*rtt_min_us"));
        assert!(!t("rtt_max_us>20*rtt_min_us"));
        assert!(!t("initial_rtt_us>0"), "null never matches");
        assert!(!t("initial_rtt_us<0"), "null never matches");
        for bad in [
            "retransmission_rate",
            "nope>1",
            "client_ip>1",
            "retransmission_rate>",
            ">1",
            "retransmission_rate!1",
            "retransmission_rate>abc",
            "retransmission_rate>x*rtt_min_us",
            "retransmission_rate>nan",
            "retransmission_rate>inf",
        ] {
            assert!(Cond::parse(bad).is_err(), "{bad}");
        }
    }
}
