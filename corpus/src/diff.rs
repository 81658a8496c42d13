//! A readable line diff (longest common subsequence) for failure messages.

/// Lines of `expected` missing from `actual` as `-`, lines only in `actual` as `+`, with two
/// lines of context around each change.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    if a.len().saturating_mul(b.len()) > 16_000_000 {
        return first_difference(&a, &b);
    }
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 2;
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::new();
    let mut shown_until = 0;
    for &k in &changed {
        let from = k.saturating_sub(CONTEXT).max(shown_until);
        if from > shown_until {
            out.push_str("  ...\n");
        }
        let to = (k + CONTEXT + 1).min(ops.len());
        for (sign, line) in &ops[from..to] {
            out.push_str(&format!("{sign} {line}\n"));
        }
        shown_until = to.max(shown_until);
    }
    if shown_until < ops.len() && !changed.is_empty() {
        out.push_str("  ...\n");
    }
    out
}

fn first_difference(a: &[&str], b: &[&str]) -> String {
    let k = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    format!(
        "first difference at line {}:\n- {}\n+ {}\n",
        k + 1,
        a.get(k).unwrap_or(&"(end)"),
        b.get(k).unwrap_or(&"(end)")
    )
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn shows_changes_with_context() {
        let d = diff("a\nb\nc\nd\ne\nf\ng\n", "a\nb\nc\nX\ne\nf\ng\n");
        assert_eq!(d, "  ...\n  b\n  c\n- d\n+ X\n  e\n  f\n  ...\n");
    }

    #[test]
    fn identical_texts_have_no_diff() {
        assert_eq!(diff("a\nb\n", "a\nb\n"), "");
    }
}
