//! Masking of content matches: evidence records that a secret-looking string was seen, never the
//! string itself.

/// Matches shorter than this are masked entirely.
const REVEAL_FROM_CHARS: usize = 8;
/// How many leading characters of a long match stay visible.
const REVEALED_CHARS: usize = 2;

/// The match with every character but (for matches of 8 characters or more) the first two
/// replaced by `*`. The length is kept so a reader can tell `sk-…` keys from short words.
pub(crate) fn mask(matched: &str) -> String {
    let count = matched.chars().count();
    let shown = if count >= REVEAL_FROM_CHARS {
        REVEALED_CHARS
    } else {
        0
    };
    let mut out = String::with_capacity(count);
    out.extend(matched.chars().take(shown));
    out.extend(std::iter::repeat_n('*', count - shown));
    out
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn short_matches_are_masked_entirely() {
        assert_eq!(mask(""), "");
        assert_eq!(mask("hunter2"), "*******");
    }

    #[test]
    fn long_matches_keep_two_leading_characters() {
        assert_eq!(mask("sk-abcdef"), "sk*******");
        assert_eq!(mask("12345678"), "12******");
    }

    #[test]
    fn masking_counts_characters_not_bytes() {
        assert_eq!(mask("pässwörtér"), "pä********");
        assert_eq!(mask("ééé"), "***");
    }
}
