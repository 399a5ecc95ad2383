//! `resolv.conf(5)`: the three directives kubelet reads and writes.

use std::fmt;

/// The parts of a resolv.conf that matter to a Pod: where to ask, which domains to try, and the
/// options (`ndots:5`, `timeout:2`, `single-request-reopen`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// Options as written: `name` or `name:value`.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text as glibc does for these directives: the last `search` (or
    /// `domain`) line wins, `nameserver` and `options` lines accumulate, `#` and `;` start
    /// comments.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_owned)),
                Some("search" | "domain") => conf.searches = words.map(str::to_owned).collect(),
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// The value of option `name` (`ndots` in `ndots:5`), if set; the last one wins.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.iter().rev().find_map(|o| match o.split_once(':') {
            Some((n, v)) if n == name => Some(v),
            None if o == name => Some(""),
            _ => None,
        })
    }

    /// `ndots`, defaulting to 1 as both glibc and musl do, capped at 15 as glibc caps it.
    pub fn ndots(&self) -> usize {
        self.option("ndots")
            .and_then(|v| v.parse().ok())
            .map_or(1, |n: usize| n.min(15))
    }
}

impl fmt::Display for ResolvConf {
    /// Written in kubelet's order: `search`, `nameserver`s, `options`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.searches.is_empty() {
            writeln!(f, "search {}", self.searches.join(" "))?;
        }
        for ns in &self.nameservers {
            writeln!(f, "nameserver {ns}")?;
        }
        if !self.options.is_empty() {
            writeln!(f, "options {}", self.options.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_glibc_reads() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 192.0.2.53\nsearch a.example b.example\nnameserver 192.0.2.54 ; second\n\
             search corp.example\noptions ndots:2 rotate\noptions timeout:1\n",
        );
        assert_eq!(conf.nameservers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(conf.searches, ["corp.example"], "the last search line wins");
        assert_eq!(conf.options, ["ndots:2", "rotate", "timeout:1"]);
        assert_eq!(conf.ndots(), 2);
        assert_eq!(conf.option("rotate"), Some(""));
    }

    #[test]
    fn ndots_defaults_to_one_and_is_capped() {
        assert_eq!(ResolvConf::default().ndots(), 1);
        assert_eq!(ResolvConf::parse("options ndots:40").ndots(), 15);
    }

    #[test]
    fn renders_in_kubelets_order() {
        let conf = ResolvConf {
            nameservers: vec!["10.96.0.10".into()],
            searches: vec!["shop.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            conf.to_string(),
            "search shop.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
