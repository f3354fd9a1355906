//! The ranges of checks that compare the new revision with the stable one over
//! the same window (prediction agreement, quality from feedback). Pure.
//!
//! A blue-green preview's own traffic before the switch is whatever testers send
//! it, so such checks wait for the switch; after it, the new revision is read
//! since the switch (at least 5 s) and the old one over the window before it.

/// PromQL range selectors for the two revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranges {
    /// The new revision's: `[120s]`.
    pub new: String,
    /// The stable revision's: `[120s]`, or `[120s] offset 42s` after a switch.
    pub stable: String,
}

/// The ranges over `window_seconds`, or `None` for a blue-green preview before
/// its switch (`role` `preview` without `stable_offset_seconds`).
pub fn ranges(
    window_seconds: u32,
    stable_offset_seconds: Option<u64>,
    role: &str,
) -> Option<Ranges> {
    let window = u64::from(window_seconds);
    match stable_offset_seconds {
        None if role == "preview" => None,
        None => Some(Ranges {
            new: format!("[{window}s]"),
            stable: format!("[{window}s]"),
        }),
        Some(since_switch) => Some(Ranges {
            new: format!("[{}s]", window.min(since_switch.max(5))),
            stable: format!("[{window}s] offset {since_switch}s"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_waits_for_its_switch_and_then_reads_since_it() {
        assert_eq!(ranges(120, None, "preview"), None);
        assert_eq!(
            ranges(120, None, "canary"),
            Some(Ranges {
                new: "[120s]".into(),
                stable: "[120s]".into()
            })
        );
        assert_eq!(
            ranges(120, Some(42), "preview"),
            Some(Ranges {
                new: "[42s]".into(),
                stable: "[120s] offset 42s".into()
            })
        );
        assert_eq!(ranges(120, Some(1), "preview").unwrap().new, "[5s]");
    }
}
