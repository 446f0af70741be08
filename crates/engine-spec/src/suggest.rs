//! "Did you mean": the closest known name by edit distance, or, for dotted names such as
//! configuration keys, the name that differs from it in one segment that one of the two
//! abbreviates (`zorp.password` for `zorp.pass`, `client.sec` for `client.secret`).

/// The candidate closest to `unknown`, if it is close enough to be a likely typo: by edit
/// distance over the whole name first, then one abbreviated segment apart (dotted names).
pub fn did_you_mean<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    by_edit_distance(unknown, &candidates).or_else(|| {
        candidates
            .iter()
            .copied()
            .find(|candidate| one_segment_apart(unknown, candidate))
    })
}

/// True when `a` and `b` are dotted names with the same `.`-separated segments but one, and in that one
/// segment either name abbreviates the other: a prefix (`pass`, `password`) or the other's
/// letters in order from the same first letter (`pwd`, `password`), at least two letters long.
fn one_segment_apart(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    let (left, right): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    if left.len() < 2 || left.len() != right.len() {
        return false;
    }
    let mut differing = left.iter().zip(&right).filter(|(x, y)| x != y);
    match (differing.next(), differing.next()) {
        (Some((x, y)), None) => abbreviates(x, y) || abbreviates(y, x),
        _ => false,
    }
}

/// True when `short` is at least two letters long, starts with `long`'s first letter and its
/// letters appear in `long` in order.
fn abbreviates(short: &str, long: &str) -> bool {
    if short.chars().count() < 2 || short.len() >= long.len() {
        return false;
    }
    if short.chars().next() != long.chars().next() {
        return false;
    }
    let mut rest = long.chars();
    short
        .chars()
        .all(|letter| rest.any(|other| other == letter))
}

fn by_edit_distance<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let unknown_lower = unknown.to_lowercase();
    candidates
        .iter()
        .copied()
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

    #[test]
    fn suggests_a_key_one_abbreviated_segment_apart() {
        let keys = ["zorp.user", "zorp.pass", "base.url"];
        assert_eq!(did_you_mean("zorp.password", keys), Some("zorp.pass"));
        assert_eq!(
            did_you_mean("zorp.pwd", ["zorp.password"]),
            Some("zorp.password")
        );
        assert_eq!(
            did_you_mean("client.sec", ["client.secret"]),
            Some("client.secret")
        );
        // Two segments apart, another first letter, another number of segments, or names
        // without dots (field names): no suggestion.
        assert_eq!(did_you_mean("acme.password", keys), None);
        assert_eq!(did_you_mean("zorp.token", keys), None);
        assert_eq!(did_you_mean("zorp.pass.word", keys), None);
        assert_eq!(did_you_mean("vendorDataType", ["vendorType"]), None);
    }
}
