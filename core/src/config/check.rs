//! Finding every problem in an `lb.toml`, not only the first: syntax, unknown keys (with the
//! closest known key as a suggestion), wrong types, and the load balancer's own rules.
//!
//! TOML syntax errors stop a parser, so a file with one is reported with that one. Otherwise
//! unknown keys are found by walking the document against the fields the configuration types
//! declare (read from their `Deserialize` impls, so the two cannot drift apart). Type errors are
//! found by deserializing repeatedly: each error is recorded and the key it is in is blanked out
//! (spaces, same length, so every offset stays valid) before the next attempt.

use std::ops::Range;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use toml_edit::{ImDocument, Item, TableLike};

use super::acme::AcmeSection;
use super::problem::{locate, Problem};
use super::sections::{
    AdminSection, Config, HealthSection, LimitsSection, LogSection, PluginsSection, ProxySection,
    ReplicaEntry, RingSection, SupervisorSection,
};
use super::tls::{CertificateEntry, TlsSection};

/// At most this many deserialization attempts (each finds one type error) on a small file.
const MAX_ROUNDS: usize = 64;
/// At most this many bytes parsed in all by the deserialization attempts: a large file gets
/// fewer attempts, so checking stays linear in its size.
const ROUND_BUDGET: usize = 8 << 20;

/// Parse `text` into a configuration with defaults wherever a problem was found, and every
/// problem found; the configuration is `None` only for a syntax error. Linear in the size of
/// `text` (a file of 30 000 unknown keys is checked in one pass, not one pass per key).
pub(super) fn collect(text: &str) -> (Option<Config>, Vec<Problem>) {
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            return (None, vec![Problem::at(text, at, one_line(e.message()))]);
        }
    };
    let layout = Layout::new(text);
    let mut problems = Vec::new();
    let mut blanked = text.as_bytes().to_vec();
    let mut ranges = Vec::new();
    for (range, problem) in unknown_keys(&doc, &layout) {
        ranges.push(range);
        problems.push(problem);
    }
    blank_all(&mut blanked, ranges);
    let rounds = MAX_ROUNDS.min(ROUND_BUDGET / text.len().max(1)).max(1);
    let mut config = None;
    for _ in 0..rounds {
        // Blanking keeps UTF-8 valid: whole characters become spaces.
        let Ok(current) = std::str::from_utf8(&blanked) else {
            break;
        };
        match toml::from_str::<Config>(current) {
            Ok(parsed) => {
                config = Some(parsed);
                break;
            }
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let start = floor_char_boundary(text, span.start);
                problems.push(Problem::pending(start, one_line(e.message())));
                let before = blanked.clone();
                // An entry of an array of tables has required keys: taking out one key would
                // only add a "missing field" error, so the whole entry goes.
                let section = layout.section_of(start);
                if text[section.clone()].trim_start().starts_with("[[") {
                    blank(&mut blanked, section);
                } else {
                    blank(&mut blanked, layout.lines_of(start..span.end.max(start)));
                }
                if blanked == before {
                    blank(&mut blanked, layout.section_of(start));
                }
                if blanked == before {
                    break; // nothing left to take out: give up on finding more
                }
            }
        }
    }
    locate(text, &mut problems);
    problems.sort_by_key(|p| (p.line, p.column));
    (config, problems)
}

/// The largest character boundary of `text` at or before `offset` (a parser's span may point
/// anywhere).
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Where the lines and the section headers of a text start, found once so that every lookup is
/// a binary search (a file with many problems must not be scanned once per problem).
pub(super) struct Layout {
    len: usize,
    /// Byte offset of every line's first byte (the first is 0).
    lines: Vec<usize>,
    /// Byte offset of every line that starts a section (`[table]`, `[[array]]`).
    headers: Vec<usize>,
}

impl Layout {
    pub(super) fn new(text: &str) -> Layout {
        let mut lines = vec![0];
        let mut headers = Vec::new();
        let mut pos = 0;
        for line in text.split_inclusive('\n') {
            if line.trim_start().starts_with('[') {
                headers.push(pos);
            }
            pos += line.len();
            if line.ends_with('\n') {
                lines.push(pos);
            }
        }
        Layout {
            len: text.len(),
            lines,
            headers,
        }
    }

    /// The whole lines `span` touches (without the last line break).
    fn lines_of(&self, span: Range<usize>) -> Range<usize> {
        let start = span.start.min(self.len);
        let end = span.end.max(start).min(self.len);
        let first = self.lines.partition_point(|&l| l <= start) - 1;
        let last = self.lines.partition_point(|&l| l <= end);
        let end = match self.lines.get(last) {
            Some(&next) => next - 1, // the line break before the next line
            None => self.len,
        };
        self.lines[first]..end.max(self.lines[first])
    }

    /// The section (`[table]` or `[[array]]` header up to the next header) holding `offset`; a
    /// key before the first header is its own section.
    fn section_of(&self, offset: usize) -> Range<usize> {
        let after = self.headers.partition_point(|&h| h <= offset);
        if after == 0 {
            return self.lines_of(offset..offset);
        }
        let start = self.headers[after - 1];
        let end = self.headers.get(after).copied().unwrap_or(self.len);
        start..end
    }
}

/// A parser's message on one line (`toml` spreads some over several).
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every key the configuration types do not know, with where it is (to blank it out) and a
/// problem that names the closest known key.
fn unknown_keys(doc: &ImDocument<&str>, layout: &Layout) -> Vec<(Range<usize>, Problem)> {
    let mut found = Vec::new();
    let top = doc.as_table();
    check_table(top, None, fields_of::<Config>(), layout, &mut found);
    for (name, item) in top.iter() {
        let Some(fields) = section_fields(name) else {
            continue;
        };
        check_item(item, name, fields, layout, &mut found);
        // `[[tls.certificates]]`: the one array of tables inside a section.
        if name == "tls" {
            if let Some(certificates) = item.as_table_like().and_then(|t| t.get("certificates")) {
                let fields = fields_of::<CertificateEntry>();
                check_item(certificates, "tls.certificates", fields, layout, &mut found);
            }
            if let Some(acme) = item.as_table_like().and_then(|t| t.get("acme")) {
                let fields = fields_of::<AcmeSection>();
                check_item(acme, "tls.acme", fields, layout, &mut found);
            }
        }
    }
    found
}

/// The unknown keys of `item`, a table or an array of tables named `name`.
fn check_item(
    item: &Item,
    name: &str,
    fields: &[&str],
    layout: &Layout,
    found: &mut Vec<(Range<usize>, Problem)>,
) {
    match item {
        Item::ArrayOfTables(tables) => {
            for table in tables.iter() {
                check_table(table, Some(name), fields, layout, found);
            }
        }
        Item::Value(toml_edit::Value::Array(array)) => {
            for value in array.iter() {
                if let Some(table) = value.as_inline_table() {
                    check_table(table, Some(name), fields, layout, found);
                }
            }
        }
        _ => {
            if let Some(table) = item.as_table_like() {
                check_table(table, Some(name), fields, layout, found);
            }
        }
    }
}

fn check_table(
    table: &dyn TableLike,
    section: Option<&str>,
    fields: &[&str],
    layout: &Layout,
    found: &mut Vec<(Range<usize>, Problem)>,
) {
    for (name, _) in table.iter() {
        if fields.contains(&name) {
            continue;
        }
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let start = key.span().map_or(0, |s| s.start);
        let where_ = section.map_or_else(String::new, |s| format!(" in [{s}]"));
        let hint = match closest(name, fields) {
            Some(known) => format!("; did you mean `{known}`?"),
            None => format!(
                "; known keys{where_}: {}",
                fields
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let message = format!("unknown key `{name}`{where_}{hint}");
        // A sub-table is its whole section; a key is its own lines.
        let range = match (item, item.span()) {
            (Item::Table(_) | Item::ArrayOfTables(_), _) => layout.section_of(start),
            (_, Some(value)) => layout.lines_of(start..value.end),
            (_, None) => layout.lines_of(start..start),
        };
        found.push((range, Problem::pending(start, message)));
    }
}

/// Byte offset of `key` in `[section]` of `text`, if it is there.
pub(super) fn key_offset(text: &str, section: &str, key: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let table = doc.as_table().get(section)?.as_table_like()?;
    let (key, _) = table.get_key_value(key)?;
    key.span().map(|s| s.start)
}

/// The fields of a section of the file, by its name.
fn section_fields(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "ring" => fields_of::<RingSection>(),
        "health" => fields_of::<HealthSection>(),
        "supervisor" => fields_of::<SupervisorSection>(),
        "plugins" => fields_of::<PluginsSection>(),
        "proxy" => fields_of::<ProxySection>(),
        "admin" => fields_of::<AdminSection>(),
        "limits" => fields_of::<LimitsSection>(),
        "log" => fields_of::<LogSection>(),
        "replicas" => fields_of::<ReplicaEntry>(),
        "tls" => fields_of::<TlsSection>(),
        _ => return None,
    })
}

/// The closest of `known` to `name`, if it is close enough to be a misspelling.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    let prefix = |k: &str| name.len() >= 3 && (k.starts_with(name) || name.starts_with(k));
    known
        .iter()
        .map(|k| (if prefix(k) { 1 } else { edit_distance(name, k) }, *k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (insertions, deletions, substitutions), by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Replace `range` of `text` by spaces, keeping line breaks (so offsets and lines stay valid);
/// a multi-byte character becomes as many spaces as it has bytes, so the text stays UTF-8.
fn blank(text: &mut [u8], range: Range<usize>) {
    let range = range.start.min(text.len())..range.end.min(text.len());
    for byte in &mut text[range] {
        if *byte != b'\n' {
            *byte = b' ';
        }
    }
}

/// [`blank`] every range, each byte once however the ranges overlap (many unknown keys on one
/// line all name that line).
fn blank_all(text: &mut [u8], mut ranges: Vec<Range<usize>>) {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut done = 0;
    for range in ranges {
        let start = range.start.max(done);
        if start < range.end {
            blank(text, start..range.end);
            done = range.end;
        }
    }
}

/// The field names a `Deserialize` struct declares (skipped fields excluded).
pub(super) fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the field list `deserialize_struct` is called with.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_types() {
        assert_eq!(
            fields_of::<HealthSection>(),
            [
                "kind",
                "path",
                "grpc_service",
                "interval_ms",
                "timeout_ms",
                "fall",
                "rise",
                "start_timeout_ms",
                "drain_timeout_ms"
            ]
        );
        assert!(fields_of::<Config>().contains(&"replicas"));
        assert!(
            !fields_of::<Config>().contains(&"text"),
            "skipped fields are not keys"
        );
    }

    #[test]
    fn closest_known_key() {
        let health = fields_of::<HealthSection>();
        assert_eq!(closest("intervl_ms", health), Some("interval_ms"));
        assert_eq!(closest("timeout", health), Some("timeout_ms"));
        assert_eq!(closest("colour", health), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn blanking_keeps_offsets_and_lines() {
        let original = "a = \"é\"\nb = 1\n";
        let mut text = original.as_bytes().to_vec();
        blank(&mut text, Layout::new(original).lines_of(4..5));
        let text = String::from_utf8(text).expect("still UTF-8");
        assert_eq!(text.len(), original.len());
        assert_eq!(text.lines().nth(1), Some("b = 1"));
        assert!(text.lines().next().unwrap().trim().is_empty());
    }

    #[test]
    fn sections_run_from_header_to_header() {
        let text = "x = 1\n[ring]\nslots = 2\n[[replicas]]\nid = 1\n";
        let layout = Layout::new(text);
        assert_eq!(&text[layout.section_of(2)], "x = 1");
        assert_eq!(&text[layout.section_of(15)], "[ring]\nslots = 2\n");
        assert_eq!(&text[layout.section_of(40)], "[[replicas]]\nid = 1\n");
    }
}
