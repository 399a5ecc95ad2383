//! A small typed builder for nft transactions, rendered as nft's text syntax.
//!
//! Only what svcnet's table needs: sets and maps, chains with rules, and element adds and
//! deletes, all in the `svcnet` table of one family. Each [`Command`] renders to one command of
//! an `nft -f` script, and a [`Transaction`] is loaded by one `nft -f -` run, which the kernel
//! applies atomically: all of it or nothing.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use svcnet_cluster::model::Protocol;

/// The table svcnet owns in each family; nothing else in the ruleset is touched.
pub const TABLE: &str = "svcnet";

/// nft's limit for a comment (`NFTNL_UDATA_COMMENT_MAXLEN`).
const MAX_COMMENT_BYTES: usize = 128;

/// An address family, with one table each: a set or map holds addresses of one family only, so
/// an `inet` table would need every set twice anyway (kube-proxy's reasoning too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The table family, which is also the payload keyword: `ip daddr`, `ip6 daddr`.
    pub fn keyword(self) -> &'static str {
        match self {
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
        }
    }

    /// The address type of a set key: `ipv4_addr`, `ipv6_addr`.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4_addr",
            Family::Ipv6 => "ipv6_addr",
        }
    }
}

/// One value of an element's key or data; concatenations are lists of these.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Addr(IpAddr),
    Net(IpNet),
    Proto(Protocol),
    Port(u16),
    Int(u32),
    Verdict(Verdict),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(ip) => write!(f, "{ip}"),
            Value::Net(net) => write!(f, "{net}"),
            Value::Proto(p) => f.write_str(p.as_str()),
            Value::Port(port) => write!(f, "{port}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Verdict(v) => write!(f, "{v}"),
        }
    }
}

/// A verdict stored in a verdict map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Continue in this chain and do not come back (the base chain's later rules are skipped).
    Goto(String),
    Drop,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
            Verdict::Drop => f.write_str("drop"),
        }
    }
}

/// A set or map element. `data` is empty for set elements; a delete needs only the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<Value>,
    pub data: Vec<Value>,
    pub comment: Option<String>,
}

impl Element {
    pub fn key(key: Vec<Value>) -> Self {
        Self {
            key,
            data: Vec::new(),
            comment: None,
        }
    }

    pub fn map(key: Vec<Value>, data: Vec<Value>) -> Self {
        Self {
            key,
            data,
            comment: None,
        }
    }

    #[must_use]
    pub fn with_comment(mut self, comment: &str) -> Self {
        self.comment = Some(comment.to_owned());
        self
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_concat(f, &self.key)?;
        if let Some(comment) = &self.comment {
            write!(f, " comment {}", quote(comment))?;
        }
        if !self.data.is_empty() {
            f.write_str(" : ")?;
            write_concat(f, &self.data)?;
        }
        Ok(())
    }
}

fn write_concat(f: &mut fmt::Formatter<'_>, values: &[Value]) -> fmt::Result {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(" . ")?;
        }
        write!(f, "{value}")?;
    }
    Ok(())
}

/// A quoted nft string. nft's scanner has no escapes inside quotes (a string ends at the next
/// `"`), so characters that could end or confuse it are replaced rather than escaped, and the
/// text is cut to nft's comment limit. Comments only label elements for people reading
/// `nft list`; nothing matches on them.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        let c = if c.is_ascii_graphic() && c != '"' && c != '\\' {
            c
        } else {
            '_'
        };
        if out.len() + 1 > MAX_COMMENT_BYTES {
            break;
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A base chain's hook: where the kernel calls it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `nat` or `filter`.
    pub kind: &'static str,
    pub hook: &'static str,
    /// As nft 1.0.6 accepts it for this hook: a name (`dstnat`) or a number (`-100`).
    pub priority: &'static str,
}

/// What a set or map holds, in nft's declaration syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetSpec {
    /// `type KEY;` or, for a map, `type KEY : DATA;`, plus flags and a size.
    Type {
        key: String,
        data: Option<String>,
        flags: Option<&'static str>,
        /// The most elements the set may hold; nft's default (65535) bounds only sets filled
        /// from the packet path, where a full set silently stops adding.
        size: Option<u32>,
    },
    /// `typeof KEY-EXPR : DATA-EXPR;`: types taken from expressions, needed where no type name
    /// exists (a `numgen` slot).
    Typeof { key: String, data: String },
}

/// One command of a transaction, all of them in [`TABLE`] of a family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    AddTable,
    DeleteTable,
    /// `add set` or `add map` (a spec with data).
    AddSet {
        name: &'static str,
        spec: SetSpec,
    },
    AddChain {
        name: String,
        hook: Option<Hook>,
    },
    /// The rule's statements in nft syntax; built from constants and numbers only, never from
    /// cluster data.
    AddRule {
        chain: String,
        rule: String,
    },
    AddElements {
        set: &'static str,
        elements: Vec<Element>,
    },
    DeleteElements {
        set: &'static str,
        elements: Vec<Element>,
    },
    /// Deletes every element of a map, also those added from the packet path.
    FlushMap {
        name: &'static str,
    },
}

/// Commands loaded together by one `nft -f -` run: atomically, all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    commands: Vec<(Family, Command)>,
}

impl Transaction {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, family: Family, command: Command) {
        // An empty element list is a syntax error in nft; leaving it out is the same change.
        if let Command::AddElements { elements, .. } | Command::DeleteElements { elements, .. } = &command
            && elements.is_empty()
        {
            return;
        }
        self.commands.push((family, command));
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    pub fn commands(&self) -> &[(Family, Command)] {
        &self.commands
    }

    /// Elements added and deleted, for the sync log.
    pub fn element_counts(&self) -> (usize, usize) {
        self.commands
            .iter()
            .fold((0, 0), |(added, removed), (_, command)| match command {
                Command::AddElements { elements, .. } => (added + elements.len(), removed),
                Command::DeleteElements { elements, .. } => (added, removed + elements.len()),
                _ => (added, removed),
            })
    }

    /// The whole transaction as an `nft -f` script.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (family, command) in &self.commands {
            let table = format!("{} {TABLE}", family.keyword());
            match command {
                Command::AddTable => writeln!(f, "add table {table}")?,
                Command::DeleteTable => writeln!(f, "delete table {table}")?,
                Command::AddSet { name, spec } => match spec {
                    SetSpec::Type {
                        key,
                        data,
                        flags,
                        size,
                    } => {
                        let kind = if data.is_some() { "map" } else { "set" };
                        write!(f, "add {kind} {table} {name} {{ type {key}")?;
                        if let Some(data) = data {
                            write!(f, " : {data}")?;
                        }
                        f.write_str(" ;")?;
                        if let Some(flags) = flags {
                            write!(f, " flags {flags} ;")?;
                        }
                        if let Some(size) = size {
                            write!(f, " size {size} ;")?;
                        }
                        writeln!(f, " }}")?;
                    }
                    SetSpec::Typeof { key, data } => {
                        writeln!(f, "add map {table} {name} {{ typeof {key} : {data} ; }}")?;
                    }
                },
                Command::AddChain { name, hook: None } => writeln!(f, "add chain {table} {name}")?,
                Command::AddChain {
                    name,
                    hook: Some(Hook { kind, hook, priority }),
                } => writeln!(
                    f,
                    "add chain {table} {name} {{ type {kind} hook {hook} priority {priority} ; policy accept ; }}"
                )?,
                Command::AddRule { chain, rule } => writeln!(f, "add rule {table} {chain} {rule}")?,
                Command::AddElements { set, elements } => {
                    write_elements(f, "add", &table, set, elements)?;
                }
                Command::DeleteElements { set, elements } => {
                    write_elements(f, "delete", &table, set, elements)?;
                }
                Command::FlushMap { name } => writeln!(f, "flush map {table} {name}")?,
            }
        }
        Ok(())
    }
}

/// One element per line, so a rendered ruleset reads (and diffs) as a list.
fn write_elements(
    f: &mut fmt::Formatter<'_>,
    verb: &str,
    table: &str,
    set: &str,
    elements: &[Element],
) -> fmt::Result {
    writeln!(f, "{verb} element {table} {set} {{")?;
    for element in elements {
        writeln!(f, "\t{element},")?;
    }
    writeln!(f, "}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_replaces_what_would_end_the_string_and_cuts_to_the_limit() {
        assert_eq!(quote("shop/web:http"), "\"shop/web:http\"");
        assert_eq!(quote("a\"b\\c d\n"), "\"a_b_c_d_\"");
        let long = quote(&"x".repeat(300));
        assert_eq!(long.len(), MAX_COMMENT_BYTES + 1);
        assert!(long.starts_with('"') && long.ends_with('"'));
    }

    #[test]
    fn elements_render_key_comment_then_data() {
        let element = Element::map(
            vec![
                Value::Addr("fd00::1".parse().unwrap()),
                Value::Proto(Protocol::Sctp),
                Value::Port(80),
            ],
            vec![Value::Verdict(Verdict::Goto("lb-2".into()))],
        )
        .with_comment("ns/svc");
        assert_eq!(
            element.to_string(),
            "fd00::1 . sctp . 80 comment \"ns/svc\" : goto lb-2"
        );
        assert_eq!(
            Element::key(vec![Value::Net("10.0.0.0/8".parse().unwrap())]).to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn empty_element_lists_are_left_out() {
        let mut tx = Transaction::new();
        tx.push(
            Family::Ipv4,
            Command::AddElements {
                set: "hairpin",
                elements: vec![],
            },
        );
        assert!(tx.is_empty());
        assert_eq!(tx.render(), "");
    }
}
