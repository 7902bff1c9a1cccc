//! Line diff for the app page's version comparison: pure, over two texts (the versions'
//! definitions as pretty JSON). A longest-common-subsequence table over the lines that
//! differ after trimming the common head and tail; texts too large for the table are
//! shown as one removal and one addition instead.

/// One line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// Largest table (lines × lines) worked out; definitions are a few hundred lines.
const MAX_CELLS: usize = 4_000_000;

/// The lines of `a` and `b` as a diff from `a` to `b`.
pub fn lines<'a>(a: &'a str, b: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..].iter().rev().zip(b[head..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (ma, mb) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Line> = a[..head].iter().map(|l| Line::Same(l)).collect();
    if (ma.len() + 1) * (mb.len() + 1) > MAX_CELLS {
        out.extend(ma.iter().map(|l| Line::Removed(l)));
        out.extend(mb.iter().map(|l| Line::Added(l)));
    } else {
        // lcs[i][j]: the longest common subsequence of ma[i..] and mb[j..].
        let w = mb.len() + 1;
        let mut lcs = vec![0u32; (ma.len() + 1) * w];
        for i in (0..ma.len()).rev() {
            for j in (0..mb.len()).rev() {
                lcs[i * w + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < ma.len() || j < mb.len() {
            if i < ma.len() && j < mb.len() && ma[i] == mb[j] {
                out.push(Line::Same(ma[i]));
                (i, j) = (i + 1, j + 1);
            } else if i < ma.len() && (j == mb.len() || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                // Removals before additions where both keep the subsequence as long.
                out.push(Line::Removed(ma[i]));
                i += 1;
            } else {
                out.push(Line::Added(mb[j]));
                j += 1;
            }
        }
    }
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    out
}

#[cfg(test)]
mod tests {
    use super::Line::*;
    use super::*;

    #[test]
    fn diffs_keep_common_lines_and_mark_the_rest() {
        assert_eq!(lines("a\nb\nc", "a\nb\nc"), vec![Same("a"), Same("b"), Same("c")]);
        assert_eq!(lines("a\nb\nc", "a\nx\nc"), vec![Same("a"), Removed("b"), Added("x"), Same("c")]);
        assert_eq!(lines("", "a"), vec![Added("a")]);
        assert_eq!(lines("a", ""), vec![Removed("a")]);
        assert_eq!(
            lines("{\n  \"cmd\": \"x\",\n  \"instances\": 1\n}", "{\n  \"instances\": 3\n}"),
            vec![
                Same("{"),
                Removed("  \"cmd\": \"x\","),
                Removed("  \"instances\": 1"),
                Added("  \"instances\": 3"),
                Same("}")
            ]
        );
        // A moved line is one removal and one addition; everything else stays.
        assert_eq!(lines("a\nb\nc\nd", "b\nc\na\nd"), vec![Removed("a"), Same("b"), Same("c"), Added("a"), Same("d")]);
    }

    #[test]
    fn every_line_of_both_texts_appears_once() {
        let a = (0..300).map(|i| format!("l{}", i % 7)).collect::<Vec<_>>().join("\n");
        let b = (0..280).map(|i| format!("l{}", i % 5)).collect::<Vec<_>>().join("\n");
        let d = lines(&a, &b);
        let old: Vec<&str> =
            d.iter().filter_map(|l| if let Removed(x) | Same(x) = l { Some(*x) } else { None }).collect();
        let new: Vec<&str> =
            d.iter().filter_map(|l| if let Added(x) | Same(x) = l { Some(*x) } else { None }).collect();
        assert_eq!(old, a.lines().collect::<Vec<_>>());
        assert_eq!(new, b.lines().collect::<Vec<_>>());
    }
}
