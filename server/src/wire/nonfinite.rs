//! The bare literals `NaN`, `Infinity` and `-Infinity` that Python's `json`,
//! Jackson (`ALLOW_NON_NUMERIC_NUMBERS`) and JSON5 encoders write for
//! non-finite floats. They are not JSON, so serde_json refuses them; a body
//! that fails to parse is rewritten here, each literal standing as an array
//! element (outside strings) becoming a marker string that [`marker`] reads
//! back. Only array elements: where the protocol takes a string (an `id`, a
//! name, a datatype) a literal stays and the body stays malformed.
//! Bodies that parse are never scanned, so ordinary requests pay nothing.
//!
//! A marker's value starts with a NUL character, which JSON can only spell
//! `\u0000`; a body holding that text is left alone, so no client string can
//! pass for a marker.

/// The literals, each with its value.
const LITERALS: [(&str, f64); 3] = [
    ("NaN", f64::NAN),
    ("Infinity", f64::INFINITY),
    ("-Infinity", f64::NEG_INFINITY),
];

/// The literal a marker string stands for, and its value.
pub fn marker(value: &str) -> Option<(&'static str, f64)> {
    let literal = value.strip_prefix('\0')?;
    LITERALS.into_iter().find(|(name, _)| *name == literal)
}

/// `json` with each bare literal that stands as an array element replaced by
/// its marker string (`NaN` becomes `"\u0000NaN"`), or `None` when it holds
/// none (or holds `\u0000`).
pub fn rewrite(json: &[u8]) -> Option<Vec<u8>> {
    // Most bodies that fail to parse hold no literal: find that out without
    // copying them, first by looking for the capitals the literals start with.
    if !json.contains(&b'N') && !json.contains(&b'I') {
        return None;
    }
    rewrite_into(json, None, Spelling::Marker)?;
    if json.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let mut out = Vec::with_capacity(json.len() + 32);
    rewrite_into(json, Some(&mut out), Spelling::Marker)?;
    Some(out)
}

/// `json` with each bare literal that stands as an array element written as
/// `null`, as responses write non-finite values (the request log's copy of a
/// request), or `None` when it holds none.
pub fn as_null(json: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len());
    rewrite_into(json, Some(&mut out), Spelling::Null)?;
    Some(out)
}

/// What a literal is rewritten as.
#[derive(Clone, Copy)]
enum Spelling {
    /// Its marker string, which decoding reads back as its value.
    Marker,
    /// `null`.
    Null,
}

/// Scans `json`, copying it into `out` (when given) with the literals
/// written as `spelling` says; `None` when it holds no literal.
fn rewrite_into(json: &[u8], mut out: Option<&mut Vec<u8>>, spelling: Spelling) -> Option<()> {
    let mut found = false;
    let mut in_string = false;
    let mut escaped = false;
    // Whether each open container is an array.
    let mut arrays = Vec::new();
    let mut i = 0;
    while i < json.len() {
        let byte = json[i];
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b'[' | b'{') {
            arrays.push(byte == b'[');
        } else if matches!(byte, b']' | b'}') {
            arrays.pop();
        } else if let Some(literal) = arrays
            .last()
            .copied()
            .unwrap_or(false)
            .then(|| literal_at(json, i))
            .flatten()
        {
            let Some(out) = out.as_deref_mut() else {
                return Some(());
            };
            match spelling {
                Spelling::Marker => {
                    out.extend_from_slice(b"\"\\u0000");
                    out.extend_from_slice(literal.as_bytes());
                    out.push(b'"');
                }
                Spelling::Null => out.extend_from_slice(b"null"),
            }
            i += literal.len();
            found = true;
            continue;
        }
        if let Some(out) = out.as_deref_mut() {
            out.push(byte);
        }
        i += 1;
    }
    found.then_some(())
}

/// The literal starting at `i` when it is a whole value: after a `[`, `,` or
/// whitespace, and before a `]`, `,` or whitespace (or the end).
fn literal_at(json: &[u8], i: usize) -> Option<&'static str> {
    let opens = |b: u8| matches!(b, b'[' | b',') || b.is_ascii_whitespace();
    let closes = |b: u8| matches!(b, b']' | b',') || b.is_ascii_whitespace();
    if !opens(json[i - 1]) {
        return None;
    }
    LITERALS.into_iter().map(|(name, _)| name).find(|name| {
        json[i..].starts_with(name.as_bytes())
            && json.get(i + name.len()).is_none_or(|&b| closes(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(json: &str) -> Option<String> {
        rewrite(json.as_bytes()).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn literals_standing_as_values_become_markers() {
        assert_eq!(
            rewritten(r#"{"data":[NaN, Infinity,-Infinity ]}"#).unwrap(),
            r#"{"data":["\u0000NaN", "\u0000Infinity","\u0000-Infinity" ]}"#
        );
        assert_eq!(
            rewritten("[[NaN],{},NaN]").unwrap(),
            r#"[["\u0000NaN"],{},"\u0000NaN"]"#
        );
        let value: Vec<String> =
            serde_json::from_str(&rewritten("[NaN,\n-Infinity]").unwrap()).unwrap();
        assert_eq!(marker(&value[0]).unwrap().0, "NaN");
        assert_eq!(marker(&value[1]).unwrap().1, f64::NEG_INFINITY);
    }

    #[test]
    fn strings_and_other_tokens_are_left_alone() {
        assert_eq!(rewritten(r#"["NaN", "a\"NaN", 1]"#), None);
        assert_eq!(
            rewritten(r#"["\\", NaN]"#).unwrap(),
            r#"["\\", "\u0000NaN"]"#
        );
        assert_eq!(rewritten("[NaNa, xNaN, NaN1, -NaN, Inf, 1]"), None);
        assert_eq!(rewritten("[1, 2]"), None);
        assert_eq!(rewritten(r#"NaN"#), None);
        assert_eq!(rewritten(r#"[{"id": NaN, "a":[1]}]"#), None);
    }

    #[test]
    fn the_logged_copy_writes_literals_as_null() {
        let json = br#"{"data":[NaN, "NaN", Infinity,-Infinity],"id":"a"}"#;
        let nulled = String::from_utf8(as_null(json).unwrap()).unwrap();
        assert_eq!(nulled, r#"{"data":[null, "NaN", null,null],"id":"a"}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&nulled).is_ok());
        assert_eq!(as_null(b"[1, 2]"), None);
    }

    #[test]
    fn bodies_spelling_a_nul_are_left_alone() {
        assert_eq!(rewritten(r#"["\u0000NaN", NaN]"#), None);
        assert_eq!(marker("NaN"), None);
        assert_eq!(marker("\0nan"), None);
    }
}
