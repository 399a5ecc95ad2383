//! The zones svcnet is authoritative for, and how a query name splits into the labels below
//! one of them.

use hickory_proto::rr::Name;

/// A served zone: the cluster domain or a reverse zone.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Lowercase, fully qualified.
    pub name: Name,
    pub reverse: bool,
}

/// A query name located in a served zone.
#[derive(Debug)]
pub struct Located<'q> {
    pub zone: &'q Zone,
    /// The zone as the query spelled it: generated names (SOA, SRV targets) keep this case.
    pub zone_as_written: Name,
    /// The labels left of the zone, outermost first (`svc`, then the namespace, ...), as
    /// lowercase strings; `None` if a label is not valid UTF-8 (it can then match nothing).
    pub labels: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct Zones {
    zones: Vec<Zone>,
}

impl Zones {
    /// `names` as configured: lowercase FQDNs, the cluster domain first.
    pub fn new(names: &[String]) -> Result<Self, hickory_proto::ProtoError> {
        let zones = names
            .iter()
            .map(|n| {
                let name = Name::from_ascii(n)?.to_lowercase();
                let reverse = Name::from_ascii("in-addr.arpa.")?.zone_of(&name)
                    || Name::from_ascii("ip6.arpa.")?.zone_of(&name);
                Ok(Zone { name, reverse })
            })
            .collect::<Result<_, hickory_proto::ProtoError>>()?;
        Ok(Self { zones })
    }

    /// The zone PTR targets and other generated forward names are written in.
    pub fn primary(&self) -> Option<&Zone> {
        self.zones.iter().find(|z| !z.reverse)
    }

    /// Finds the most specific served zone containing `qname` (compared case-insensitively).
    pub fn locate(&self, qname: &Name) -> Option<Located<'_>> {
        let zone = self
            .zones
            .iter()
            .filter(|z| z.name.zone_of(qname))
            .max_by_key(|z| z.name.num_labels())?;
        let below = usize::from(qname.num_labels() - zone.name.num_labels());
        let zone_as_written = qname.trim_to(usize::from(zone.name.num_labels()));
        let labels = qname
            .iter()
            .take(below)
            .rev()
            .map(|l| std::str::from_utf8(l).ok().map(str::to_ascii_lowercase))
            .collect();
        Some(Located {
            zone,
            zone_as_written,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Zones {
        Zones::new(&[
            "cluster.local.".into(),
            "0.10.in-addr.arpa.".into(),
            "in-addr.arpa.".into(),
        ])
        .unwrap()
    }

    #[test]
    fn most_specific_zone_wins_and_labels_run_outermost_first() {
        let zones = zones();
        let q = Name::from_ascii("SvC1.TeStNs.SvC.cLuStEr.LoCaL.").unwrap();
        let found = zones.locate(&q).unwrap();
        assert_eq!(found.zone.name.to_ascii(), "cluster.local.");
        assert_eq!(found.zone_as_written.to_ascii(), "cLuStEr.LoCaL.");
        assert_eq!(found.labels.unwrap(), ["svc", "testns", "svc1"]);

        let r = Name::from_ascii("100.0.0.10.in-addr.arpa.").unwrap();
        let found = zones.locate(&r).unwrap();
        assert_eq!(found.zone.name.to_ascii(), "0.10.in-addr.arpa.");
        assert!(found.zone.reverse);
        assert_eq!(found.labels.unwrap(), ["0", "100"]);
    }

    #[test]
    fn names_outside_every_zone_are_not_located() {
        assert!(
            zones()
                .locate(&Name::from_ascii("example.com.").unwrap())
                .is_none()
        );
        assert!(zones().locate(&Name::from_ascii("local.").unwrap()).is_none());
    }
}
