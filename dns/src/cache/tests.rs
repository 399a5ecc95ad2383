//! The cache against the rules it implements: TTL caps and countdown, RFC 2308 negative TTLs,
//! the RFC 8767 stale window, and what the key tells apart. Time is passed in, not waited for.

use std::net::Ipv4Addr;

use hickory_proto::rr::{
    Record,
    rdata::{A, SOA},
};

use super::*;

const MAX_TTL: Duration = Duration::from_secs(30);
const STALE: Duration = Duration::from_secs(3600);

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn query(qname: &str, qtype: RecordType) -> Message {
    let mut query = Message::query();
    query.add_query(Query::query(name(qname), qtype));
    query
}

fn key(qname: &str, qtype: RecordType) -> CacheKey {
    let query = query(qname, qtype);
    CacheKey::new(&query.queries[0], &query.metadata, None)
}

fn reply(rcode: ResponseCode) -> Message {
    let mut reply = query("www.example.com.", RecordType::A).into_response();
    reply.metadata.response_code = rcode;
    reply
}

fn a_reply(ttl: u32) -> Message {
    let mut reply = reply(ResponseCode::NoError);
    let a = RData::A(A(Ipv4Addr::new(192, 0, 2, 1)));
    reply
        .answers
        .push(Record::from_rdata(name("www.example.com."), ttl, a));
    reply
}

fn negative(rcode: ResponseCode, soa_ttl: u32, minimum: u32) -> Message {
    let mut reply = reply(rcode);
    let soa = SOA::new(
        name("ns.example.com."),
        name("host.example.com."),
        1,
        7200,
        900,
        86400,
        minimum,
    );
    reply
        .authorities
        .push(Record::from_rdata(name("example.com."), soa_ttl, RData::SOA(soa)));
    reply
}

fn ttls(reply: &Message) -> Vec<u32> {
    reply.all_sections().map(|r| r.ttl).collect()
}

/// Stores `reply` under `www.example.com. A` at `t0` and returns it as the first client saw it.
fn stored(cache: &ResponseCache, mut reply: Message, t0: Instant) -> Message {
    cache.insert(key("www.example.com.", RecordType::A), &mut reply, t0);
    reply
}

fn at(t0: Instant, secs: u64) -> Instant {
    t0 + Duration::from_secs(secs)
}

#[test]
fn ttls_are_capped_and_count_down() {
    let cache = ResponseCache::new(MAX_TTL, STALE);
    let t0 = Instant::now();
    let first = stored(&cache, a_reply(300), t0);
    assert_eq!(ttls(&first), [30], "the first client sees the cap too");
    let key = key("www.example.com.", RecordType::A);
    assert_eq!(ttls(&cache.get(&key, t0).unwrap()), [30]);
    assert_eq!(ttls(&cache.get(&key, at(t0, 10)).unwrap()), [20]);
    assert_eq!(
        ttls(&cache.get(&key, t0 + Duration::from_millis(29_500)).unwrap()),
        [1],
        "never 0 while fresh"
    );
    assert!(cache.get(&key, at(t0, 30)).is_none());
}

#[test]
fn a_short_ttl_is_kept_and_zero_is_not_cached() {
    let cache = ResponseCache::new(MAX_TTL, STALE);
    let t0 = Instant::now();
    stored(&cache, a_reply(7), t0);
    let key = key("www.example.com.", RecordType::A);
    assert_eq!(ttls(&cache.get(&key, at(t0, 2)).unwrap()), [5]);
    assert!(cache.get(&key, at(t0, 7)).is_none());

    let cache = ResponseCache::new(MAX_TTL, STALE);
    stored(&cache, a_reply(0), t0);
    assert!(cache.get(&key, t0).is_none());
    assert!(cache.get_stale(&key, t0).is_none());
}

#[test]
fn negative_ttl_is_the_soa_minimum_capped() {
    let key = key("www.example.com.", RecordType::A);
    let t0 = Instant::now();
    // RFC 2308 §5: the smaller of the SOA's MINIMUM and its own TTL.
    for (soa_ttl, minimum, want) in [(3600, 10, 10), (8, 600, 8), (3600, 600, 30)] {
        let cache = ResponseCache::new(MAX_TTL, STALE);
        stored(&cache, negative(ResponseCode::NXDomain, soa_ttl, minimum), t0);
        let hit = cache.get(&key, t0).unwrap();
        assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ttls(&hit), [want], "SOA TTL {soa_ttl}, minimum {minimum}");
        assert!(cache.get(&key, at(t0, u64::from(want))).is_none());
    }
    // NODATA is a denial too.
    let cache = ResponseCache::new(MAX_TTL, STALE);
    stored(&cache, negative(ResponseCode::NoError, 3600, 10), t0);
    assert_eq!(ttls(&cache.get(&key, t0).unwrap()), [10]);
}

#[test]
fn denials_without_soa_truncated_and_refused_replies_are_not_cached() {
    let key = key("www.example.com.", RecordType::A);
    let t0 = Instant::now();
    let mut truncated = a_reply(300);
    truncated.metadata.truncation = true;
    for reply in [
        reply(ResponseCode::NXDomain),
        reply(ResponseCode::NoError),
        reply(ResponseCode::Refused),
        truncated,
    ] {
        let cache = ResponseCache::new(MAX_TTL, STALE);
        stored(&cache, reply, t0);
        assert!(cache.get(&key, t0).is_none());
    }
}

#[test]
fn servfail_is_cached_five_seconds_and_never_served_stale() {
    let cache = ResponseCache::new(MAX_TTL, STALE);
    let key = key("www.example.com.", RecordType::A);
    let t0 = Instant::now();
    stored(&cache, reply(ResponseCode::ServFail), t0);
    let hit = cache.get(&key, at(t0, 4)).unwrap();
    assert_eq!(hit.metadata.response_code, ResponseCode::ServFail);
    assert!(cache.get(&key, at(t0, 5)).is_none());
    assert!(cache.get_stale(&key, at(t0, 5)).is_none());
}

#[test]
fn stale_answers_within_the_window_have_ttl_30() {
    let key = key("www.example.com.", RecordType::A);
    let t0 = Instant::now();
    let cache = ResponseCache::new(MAX_TTL, STALE);
    stored(&cache, a_reply(300), t0);
    assert!(cache.get(&key, at(t0, 31)).is_none());
    assert_eq!(ttls(&cache.get_stale(&key, at(t0, 31)).unwrap()), [30]);
    assert_eq!(ttls(&cache.get_stale(&key, at(t0, 30 + 3599)).unwrap()), [30]);
    assert!(cache.get_stale(&key, at(t0, 30 + 3600)).is_none());

    let no_stale = ResponseCache::new(MAX_TTL, Duration::ZERO);
    stored(&no_stale, a_reply(300), t0);
    assert!(no_stale.get_stale(&key, at(t0, 30)).is_none());
}

#[test]
fn the_key_tells_type_and_do_bit_apart_but_not_case() {
    let cache = ResponseCache::new(MAX_TTL, STALE);
    let t0 = Instant::now();
    stored(&cache, a_reply(300), t0);
    assert!(cache.get(&key("WWW.Example.COM.", RecordType::A), t0).is_some());
    assert!(
        cache
            .get(&key("www.example.com.", RecordType::AAAA), t0)
            .is_none()
    );

    let query = query("www.example.com.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    let with_do = CacheKey::new(&query.queries[0], &query.metadata, Some(&edns));
    assert!(cache.get(&with_do, t0).is_none());
    let mut header = query.metadata;
    header.checking_disabled = true;
    let with_cd = CacheKey::new(&query.queries[0], &header, None);
    assert!(cache.get(&with_cd, t0).is_none());
}

#[test]
fn a_denial_replaces_an_earlier_answer() {
    let cache = ResponseCache::new(MAX_TTL, STALE);
    let key = key("www.example.com.", RecordType::A);
    let t0 = Instant::now();
    stored(&cache, a_reply(300), t0);
    stored(&cache, negative(ResponseCode::NXDomain, 60, 60), at(t0, 1));
    let hit = cache.get(&key, at(t0, 1)).unwrap();
    assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
}
