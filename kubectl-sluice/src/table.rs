//! Plain-text layout: aligned tables (as `kubectl get` prints them) and
//! `Key:  value` blocks (as `kubectl describe` does).

use std::fmt;

/// A table with a header row; columns are left-aligned and separated by two
/// spaces, and the last column is not padded (so long messages do not widen the
/// others).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles (upper case, by kubectl's convention).
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Display width of a cell: characters, not bytes (one line, no wide glyphs).
fn width(cell: &str) -> usize {
    cell.chars().count()
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i] - width(cell) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `Key:  value` lines with the values aligned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// No lines yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a line.
    pub fn field(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.push((key.into(), value.into()));
        self
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key_width = self.0.iter().map(|(k, _)| width(k) + 1).max().unwrap_or(0);
        for (key, value) in &self.0 {
            let key = format!("{key}:");
            let line = format!("{key:<key_width$}  {value}");
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A number as status shows it: four decimals, like the operator's thresholds
/// (`<= 0.0200`), or `-` when there is none.
pub fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() && v.abs() >= 1e6 => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
        None => "-".into(),
    }
}

/// An optional text, or `-`.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut t = Table::new(["NAME", "VALUE", "NOTE"]);
        t.row(["a", "1", "short"]);
        t.row(["longer-name", "22", "a much longer note"]);
        t.row(["b"]);
        assert_eq!(
            t.to_string(),
            "NAME         VALUE  NOTE\n\
             a            1      short\n\
             longer-name  22     a much longer note\n\
             b\n"
        );
    }

    #[test]
    fn fields_align_their_values() {
        let mut f = Fields::new();
        f.field("Name", "iris").field("Namespace", "default");
        assert_eq!(f.to_string(), "Name:       iris\nNamespace:  default\n");
    }

    #[test]
    fn numbers_have_four_decimals_and_absent_is_a_dash() {
        assert_eq!(number(Some(0.0049)), "0.0049");
        assert_eq!(number(Some(0.0)), "0.0000");
        assert_eq!(number(Some(2.5e7)), "2.500e7");
        assert_eq!(number(None), "-");
        assert_eq!(or_dash(Some("")), "-");
    }
}
