//! "Did you mean": the closest known name by edit distance.

/// The candidate closest to `unknown`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let unknown_lower = unknown.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            let distance = strsim::damerau_levenshtein(&unknown_lower, &candidate.to_lowercase());
            (distance, candidate)
        })
        .filter(|(distance, candidate)| *distance > 0 || unknown != *candidate)
        .filter(|(distance, candidate)| {
            let longest = unknown.chars().count().max(candidate.chars().count());
            *distance <= 3 && *distance * 3 <= longest
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `Some("did you mean `x`?")` when a close candidate exists.
pub fn hint<'a>(unknown: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(unknown, candidates).map(|candidate| format!("did you mean `{candidate}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["authentication.time", "expires_in", "base.url"];
        assert_eq!(
            did_you_mean("authenticaton.time", keys),
            Some("authentication.time")
        );
        assert_eq!(did_you_mean("expires-in", keys), Some("expires_in"));
        assert_eq!(did_you_mean("totally.different", keys), None);
    }
}
