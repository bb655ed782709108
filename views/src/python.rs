//! JSON in the byte format of Python's `json.dumps` defaults (`", "` and `": "` separators,
//! non-ASCII escaped as `\uXXXX`), so that the assignment's bodies ([`crate::reply`]) match its
//! reference implementation byte for byte.

use std::io;

/// A `serde_json` formatter that writes `{"a": 1, "b": [1, 2]}` like Python's `json.dumps`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Python's default `ensure_ascii=True`: everything outside ASCII as UTF-16 escapes.
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serialize `value` in Python `json.dumps` style.
pub fn to_vec<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serializing plain data (strings, numbers, maps with string keys) into a Vec cannot fail.
    value
        .serialize(&mut ser)
        .expect("serializing to a Vec<u8> does not fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        // python3 -c 'import json; print(json.dumps({"message": {"N": 3, "replicas": ["a", "b"]}, "status": "successful"}))'
        let v = json!({"message": {"N": 3, "replicas": ["a", "b"]}, "status": "successful"});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"message": {"N": 3, "replicas": ["a", "b"]}, "status": "successful"}"#
        );
    }

    #[test]
    fn escapes_like_python() {
        // json.dumps("é\"\n😀") == '"\\u00e9\\"\\n\\ud83d\\ude00"'
        let out = String::from_utf8(to_vec("é\"\n😀")).unwrap();
        assert_eq!(out, r#""\u00e9\"\n\ud83d\ude00""#);
        assert_eq!(String::from_utf8(to_vec(&json!([]))).unwrap(), "[]");
        assert_eq!(String::from_utf8(to_vec(&json!({}))).unwrap(), "{}");
    }
}
