//! The cache of forwarded answers (CoreDNS `cache`): whole upstream replies, keyed by the
//! question and the bits that change the answer, in two bounded caches, one for answers with
//! data and one for denials and failures, so a flood of NXDOMAINs cannot push the useful
//! entries out. Cluster names never come here: they are answered from the live snapshot.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, Metadata, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType},
};
use moka::{Expiry, sync::Cache};

/// Entries per cache: CoreDNS's 256 shards of 39.
const CAPACITY: u64 = 9984;
/// RFC 2308 §7.1 allows a server failure to be cached for up to five minutes; CoreDNS keeps
/// one for 5 s, long enough to spare a struggling upstream a retry storm.
const SERVFAIL_TTL: u32 = 5;
/// RFC 8767 §4: a stale answer's TTL "MUST be set ... to a value greater than 0, with a
/// RECOMMENDED value of 30 seconds".
const STALE_TTL: u32 = 30;

/// What makes two questions share an answer: the name (hickory's `Name` compares and hashes
/// case-insensitively, so `Example.COM` and `example.com` are one key), type and class, and the
/// DO and CD bits, since DNSSEC records and unvalidated data must not reach a client that did
/// not ask for them (CoreDNS keys on both bits too).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CacheKey {
    /// The key of `question` asked with `header` and `edns`.
    pub fn new(question: &Query, header: &Metadata, edns: Option<&Edns>) -> Self {
        Self {
            name: question.name().clone(),
            qtype: question.query_type(),
            qclass: question.query_class(),
            dnssec_ok: edns.is_some_and(|e| e.flags().dnssec_ok),
            checking_disabled: header.checking_disabled,
        }
    }

    pub fn name(&self) -> &Name {
        &self.name
    }
}

pub struct ResponseCache {
    success: Cache<CacheKey, Arc<Entry>>,
    denial: Cache<CacheKey, Arc<Entry>>,
    max_ttl: Duration,
    serve_stale: Duration,
}

#[derive(Debug)]
struct Entry {
    reply: Message,
    stored: Instant,
    /// Whole seconds, at most the cache's `max_ttl`, never zero.
    ttl: Duration,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Success,
    /// NXDOMAIN or NODATA.
    Denial,
    ServerFailure,
}

/// Entries stay in memory through their stale window; whether one may still be served is
/// decided on lookup, against the time of the lookup.
struct UntilStaleWindowEnds {
    serve_stale: Duration,
}

impl Expiry<CacheKey, Arc<Entry>> for UntilStaleWindowEnds {
    fn expire_after_create(&self, _: &CacheKey, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.ttl + self.serve_stale)
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl + self.serve_stale)
    }
}

impl ResponseCache {
    /// A cache keeping answers for at most `max_ttl` (which must not be zero), and expired
    /// ones for `serve_stale` more.
    pub fn new(max_ttl: Duration, serve_stale: Duration) -> Self {
        let cache = || {
            Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(UntilStaleWindowEnds { serve_stale })
                .build()
        };
        Self {
            success: cache(),
            denial: cache(),
            max_ttl,
            serve_stale,
        }
    }

    /// Stores `reply` if it may be cached, and caps its TTLs to the time it is cached for, so
    /// that the first client sees the same TTL as the next one served from the cache.
    pub fn insert(&self, key: CacheKey, reply: &mut Message, now: Instant) {
        let Some((kind, ttl)) = self.lifetime(reply) else {
            return;
        };
        set_ttls(reply, duration_secs(ttl));
        let entry = Arc::new(Entry {
            reply: reply.clone(),
            stored: now,
            ttl,
            kind,
        });
        let (into, other) = match kind {
            Kind::Success => (&self.success, &self.denial),
            Kind::Denial | Kind::ServerFailure => (&self.denial, &self.success),
        };
        other.invalidate(&key);
        into.insert(key, entry);
    }

    /// The cached reply for `key` if it has not expired at `now`, its TTLs counted down.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Message> {
        let entry = self.entry(key)?;
        let age = now.saturating_duration_since(entry.stored);
        let remaining = entry.ttl.checked_sub(age).filter(|r| !r.is_zero())?;
        // Rounded up: an entry 0.4 s old with TTL 30 still says 30, and one about to expire
        // says 1, never 0 (which would forbid the client to cache what it got).
        let remaining = duration_secs(remaining) + u32::from(remaining.subsec_nanos() > 0);
        Some(entry.reply_with_ttl(remaining))
    }

    /// The reply for `key` when its upstreams cannot be reached: an entry expired at `now` but
    /// inside the stale window, with the TTL RFC 8767 recommends. Server failures are not
    /// served stale: they are not data, and SERVFAIL is what the client gets anyway.
    pub fn get_stale(&self, key: &CacheKey, now: Instant) -> Option<Message> {
        let entry = self.entry(key)?;
        let age = now.saturating_duration_since(entry.stored);
        (entry.kind != Kind::ServerFailure && age < entry.ttl + self.serve_stale)
            .then(|| entry.reply_with_ttl(STALE_TTL))
    }

    /// Entries held (approximately, as moka counts), with data and denials: CoreDNS's
    /// `coredns_cache_entries` by type.
    pub fn entries(&self) -> (u64, u64) {
        (self.success.entry_count(), self.denial.entry_count())
    }

    fn entry(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.success.get(key).or_else(|| self.denial.get(key))
    }

    /// Which cache `reply` goes to and for how long, or `None` if it is not cached.
    fn lifetime(&self, reply: &Message) -> Option<(Kind, Duration)> {
        // RFC 2181 §9: a truncated reply is incomplete and must not be cached.
        if reply.metadata.truncation {
            return None;
        }
        let min_ttl = reply.all_sections().map(|r| r.ttl).min();
        let (kind, ttl) = match reply.metadata.response_code {
            ResponseCode::NoError if !reply.answers.is_empty() => (Kind::Success, min_ttl?),
            ResponseCode::NoError | ResponseCode::NXDomain => {
                // RFC 2308 §5: "Negative responses without SOA records SHOULD NOT be cached",
                // and the TTL of one with an SOA is "the minimum of the MINIMUM field of the
                // SOA record and the TTL of the SOA itself".
                let soa_minimum = reply.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(soa.minimum),
                    _ => None,
                })?;
                (Kind::Denial, min_ttl?.min(soa_minimum))
            }
            ResponseCode::ServFail => (Kind::ServerFailure, SERVFAIL_TTL),
            _ => return None,
        };
        // RFC 1035 §3.2.1: a zero TTL means the record "should not be cached".
        let ttl = Duration::from_secs(ttl.into()).min(self.max_ttl);
        (!ttl.is_zero()).then_some((kind, ttl))
    }
}

impl Entry {
    fn reply_with_ttl(&self, ttl: u32) -> Message {
        let mut reply = self.reply.clone();
        set_ttls(&mut reply, ttl);
        reply
    }
}

/// Every record of `reply` gets `ttl`: an entry lives as long as its shortest record (or its
/// SOA minimum), so that is all any of its records may claim (CoreDNS does the same).
fn set_ttls(reply: &mut Message, ttl: u32) {
    for record in reply
        .answers
        .iter_mut()
        .chain(&mut reply.authorities)
        .chain(&mut reply.additionals)
    {
        record.ttl = ttl;
    }
}

/// Whole seconds of a duration that fits a TTL (durations here come from `u32` seconds).
fn duration_secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
