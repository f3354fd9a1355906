//! The headers a worker writes: every prediction and dead letter names the
//! record it came from, and a dead letter says why it was refused.

/// The input record's topic.
pub const SOURCE_TOPIC: &str = "sluice-source-topic";
/// The input record's partition, in decimal.
pub const SOURCE_PARTITION: &str = "sluice-source-partition";
/// The input record's offset, in decimal.
pub const SOURCE_OFFSET: &str = "sluice-source-offset";
/// Why a record was dead-lettered: the error's message.
pub const ERROR: &str = "sluice-error";
/// What kind of failure: `invalid` or `model` ([`Refusal::kind`]).
pub const ERROR_KIND: &str = "sluice-error-kind";
/// How many times the model was tried on the record (0 when it never ran).
pub const ATTEMPTS: &str = "sluice-attempts";
/// The model (name and version) that refused or predicted the record.
pub const MODEL: &str = "sluice-model";
/// The Open Inference Protocol's binary extension: the length of the JSON
/// part of a record whose value carries raw tensor bytes after it. Read on
/// input records, written on predictions that carry binary outputs.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// Why a record gets no prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The failure's kind: `invalid` (not an inference request or a row of
    /// features, or it does not fit the model's inputs) or `model` (the
    /// model failed on it every time it was tried).
    pub kind: &'static str,
    /// The reason, naming the field or input at fault.
    pub message: String,
    /// Times the model ran on it.
    pub attempts: u32,
}

/// The headers of a prediction for the record from `source`.
pub fn prediction(
    source: &Source,
    model: &str,
    header_length: Option<usize>,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut headers = coordinates(source);
    headers.push((MODEL, model.as_bytes().to_vec()));
    if let Some(length) = header_length {
        headers.push((HEADER_LENGTH, length.to_string().into_bytes()));
    }
    headers
}

/// The headers of the dead letter for the record from `source`.
pub fn dead_letter(
    source: &Source,
    model: &str,
    refusal: &Refusal,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut headers = coordinates(source);
    headers.extend([
        (MODEL, model.as_bytes().to_vec()),
        (ERROR, refusal.message.as_bytes().to_vec()),
        (ERROR_KIND, refusal.kind.as_bytes().to_vec()),
        (ATTEMPTS, refusal.attempts.to_string().into_bytes()),
    ]);
    headers
}

fn coordinates(source: &Source) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (SOURCE_TOPIC, source.topic.as_bytes().to_vec()),
        (SOURCE_PARTITION, source.partition.to_string().into_bytes()),
        (SOURCE_OFFSET, source.offset.to_string().into_bytes()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(headers: &[(&str, Vec<u8>)], name: &str) -> Option<String> {
        headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| String::from_utf8(value.clone()).unwrap())
    }

    #[test]
    fn a_dead_letter_names_its_source_and_its_reason() {
        let source = Source {
            topic: "events".into(),
            partition: 3,
            offset: 1234,
        };
        let refusal = Refusal {
            kind: "invalid",
            message: "input 'x' has 3 values, the model takes 4".into(),
            attempts: 0,
        };
        let headers = dead_letter(&source, "fraud:1", &refusal);
        assert_eq!(text(&headers, SOURCE_TOPIC).as_deref(), Some("events"));
        assert_eq!(text(&headers, SOURCE_PARTITION).as_deref(), Some("3"));
        assert_eq!(text(&headers, SOURCE_OFFSET).as_deref(), Some("1234"));
        assert_eq!(text(&headers, ERROR_KIND).as_deref(), Some("invalid"));
        assert_eq!(text(&headers, ATTEMPTS).as_deref(), Some("0"));
        assert_eq!(text(&headers, ERROR), Some(refusal.message));
    }

    #[test]
    fn a_prediction_carries_the_binary_length_only_when_it_has_one() {
        let source = Source {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        };
        assert_eq!(text(&prediction(&source, "m:1", None), HEADER_LENGTH), None);
        let binary = prediction(&source, "m:1", Some(77));
        assert_eq!(text(&binary, HEADER_LENGTH).as_deref(), Some("77"));
        assert_eq!(text(&binary, MODEL).as_deref(), Some("m:1"));
    }
}
