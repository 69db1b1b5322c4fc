//! How names compare: exactly, or, where the remote compares names case-insensitively
//! ([`crate::remote::Capabilities::case_insensitive_names`]: OneDrive), once folded to lowercase.
//! The indexes of listings and nodes key names by their folded form so a lookup in another
//! spelling is a map lookup, not a scan.

/// Whether `a` and `b` name the same item: equal, or, where the remote compares names
/// case-insensitively, equal once each character is folded to lowercase (one character at a
/// time, as the fake Graph server folds them).
pub fn same_name(case_insensitive: bool, a: &str, b: &str) -> bool {
    a == b
        || (case_insensitive
            && a.chars()
                .flat_map(char::to_lowercase)
                .eq(b.chars().flat_map(char::to_lowercase)))
}

/// `name` folded as [`same_name`] compares it: two names are the same exactly when their folded
/// forms are equal.
pub fn folded(case_insensitive: bool, name: &str) -> String {
    if case_insensitive {
        name.chars().flat_map(char::to_lowercase).collect()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_forms_are_equal_exactly_when_names_are_the_same() {
        let names = ["Straße Ä", "STRAßE ä", "straße ä", "a", "A", "b", "İ", "i̇"];
        for ci in [false, true] {
            for a in names {
                for b in names {
                    assert_eq!(
                        same_name(ci, a, b),
                        folded(ci, a) == folded(ci, b),
                        "{a:?} {b:?} ci={ci}"
                    );
                }
            }
        }
    }
}
