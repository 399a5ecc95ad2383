use std::collections::HashMap;

use hickory_proto::rr::{Record, rdata::A};

use super::*;

fn conf() -> ResolvConf {
    ResolvConf::parse(
        "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
    )
}

#[test]
fn glibc_and_musl_order_candidates_by_ndots() {
    let short = candidates("web", &conf(), Libc::Glibc);
    assert_eq!(
        short,
        [
            "web.shop.svc.cluster.local.",
            "web.svc.cluster.local.",
            "web.cluster.local.",
            "web."
        ]
    );
    assert_eq!(candidates("web", &conf(), Libc::Musl), short);
    // Five dots reach ndots:5: glibc tries the name first, then the search list; musl only the name.
    let long = "a.b.c.d.e.example";
    assert_eq!(
        candidates(long, &conf(), Libc::Glibc).first().map(String::as_str),
        Some("a.b.c.d.e.example.")
    );
    assert_eq!(candidates(long, &conf(), Libc::Glibc).len(), 4);
    assert_eq!(candidates(long, &conf(), Libc::Musl), ["a.b.c.d.e.example."]);
    // A trailing dot: no search at all.
    assert_eq!(
        candidates("web.shop.svc.cluster.local.", &conf(), Libc::Glibc),
        ["web.shop.svc.cluster.local."]
    );
}

/// A server answering from a table; names not in it get NXDOMAIN.
struct Table(HashMap<(String, RecordType), Message>);

impl Ask for Table {
    async fn ask(&mut self, name: &Name, qtype: RecordType) -> Result<Message, String> {
        Ok(self
            .0
            .get(&(name.to_ascii(), qtype))
            .cloned()
            .unwrap_or_else(|| reply(ResponseCode::NXDomain, None)))
    }
}

fn reply(rcode: ResponseCode, a: Option<(&str, [u8; 4])>) -> Message {
    let mut m = Message::response(1, hickory_proto::op::OpCode::Query);
    m.metadata.response_code = rcode;
    if let Some((name, ip)) = a {
        m.answers.push(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            30,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        ));
    }
    m
}

fn run(name: &str, libc: Libc, table: &[((&str, RecordType), Message)]) -> Walk {
    let mut server = Table(
        table
            .iter()
            .map(|((n, t), m)| (((*n).to_owned(), *t), m.clone()))
            .collect(),
    );
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(walk(name, &conf(), libc, &mut server))
}

#[test]
fn an_external_name_costs_eight_queries() {
    let table = [
        (
            ("api.example.com.", RecordType::A),
            reply(ResponseCode::NoError, Some(("api.example.com.", [192, 0, 2, 1]))),
        ),
        (
            ("api.example.com.", RecordType::AAAA),
            reply(ResponseCode::NoError, None),
        ),
    ];
    let walk = run("api.example.com", Libc::Glibc, &table);
    assert_eq!(
        walk.steps.len(),
        8,
        "3 search domains and the name itself, A and AAAA each"
    );
    assert_eq!(walk.result, Ok(vec!["192.0.2.1".parse().unwrap()]));
}

#[test]
fn nodata_stops_musl_but_not_glibc() {
    // `db` exists in the first search domain without an address (NODATA), and in the second.
    let table = [
        (
            ("db.shop.svc.cluster.local.", RecordType::A),
            reply(ResponseCode::NoError, None),
        ),
        (
            ("db.shop.svc.cluster.local.", RecordType::AAAA),
            reply(ResponseCode::NoError, None),
        ),
        (
            ("db.svc.cluster.local.", RecordType::A),
            reply(
                ResponseCode::NoError,
                Some(("db.svc.cluster.local.", [10, 0, 0, 1])),
            ),
        ),
    ];
    assert!(run("db", Libc::Glibc, &table).result.is_ok());
    let musl = run("db", Libc::Musl, &table);
    assert!(musl.result.unwrap_err().starts_with("EAI_NODATA"));
    assert_eq!(musl.steps.len(), 2);
}

#[test]
fn refused_ends_both_walks() {
    let refused = reply(ResponseCode::Refused, None);
    let table = [
        (("x.shop.svc.cluster.local.", RecordType::A), refused.clone()),
        (("x.shop.svc.cluster.local.", RecordType::AAAA), refused),
    ];
    assert_eq!(run("x", Libc::Glibc, &table).steps.len(), 2);
    assert!(
        run("x", Libc::Musl, &table)
            .result
            .unwrap_err()
            .starts_with("EAI_AGAIN")
    );
}
