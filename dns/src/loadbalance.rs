//! Answer shuffling (CoreDNS `loadbalance`): most clients connect to the first address they
//! get, so the addresses of an answer come in a new random order every time, cluster and
//! forwarded answers alike.

use hickory_proto::rr::{Record, RecordType};
use rand::Rng;

/// Shuffles the A and AAAA records of `answers` among the positions they hold. Every other
/// record stays in place, so CNAMEs stay in front of the addresses of their target, where
/// glibc expects them.
pub fn shuffle_addresses(answers: &mut [Record]) {
    let slots: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|(i, _)| i)
        .collect();
    // Fisher-Yates over the address slots only.
    let mut rng = rand::rng();
    for i in (1..slots.len()).rev() {
        let j = rng.random_range(0..=i);
        answers.swap(slots[i], slots[j]);
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::Ipv4Addr};

    use hickory_proto::rr::{
        Name, RData,
        rdata::{A, CNAME},
    };

    use super::*;

    fn record(data: RData) -> Record {
        Record::from_rdata(Name::from_ascii("www.example.com.").unwrap(), 30, data)
    }

    #[test]
    fn cnames_stay_first_and_every_order_of_addresses_shows_up() {
        let target = Name::from_ascii("web.example.net.").unwrap();
        let mut answers = vec![record(RData::CNAME(CNAME(target)))];
        answers.extend((1..=3).map(|i| record(RData::A(A(Ipv4Addr::new(192, 0, 2, i))))));
        let mut orders = HashSet::new();
        for _ in 0..300 {
            shuffle_addresses(&mut answers);
            assert_eq!(answers[0].record_type(), RecordType::CNAME);
            let order: Vec<String> = answers[1..].iter().map(|r| r.data.to_string()).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, ["192.0.2.1", "192.0.2.2", "192.0.2.3"], "no address lost");
            orders.insert(order);
        }
        assert_eq!(orders.len(), 6, "all 3! orders: {orders:?}");
    }
}
