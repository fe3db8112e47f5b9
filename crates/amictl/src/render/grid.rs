//! Tables that never break an id: columns are either *whole* (ids, states, names, times: never
//! wrapped) or *prose* (wrapped at word boundaries, a word never split). When the whole columns
//! and the longest word of each prose column do not fit the width, the rows become a list.

use super::wrap;

/// A column: its header, and whether its cells stay whole.
pub struct Col {
    pub header: &'static str,
    pub whole: bool,
}

impl Col {
    pub const fn whole(header: &'static str) -> Col {
        Col { header, whole: true }
    }
    pub const fn prose(header: &'static str) -> Col {
        Col { header, whole: false }
    }
}

/// Borders and padding of a row of `n` columns: `│ a ┆ b │`.
fn overhead(n: usize) -> usize {
    3 * n + 1
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The widest line of a cell, and its longest word.
fn widest(cell: &str) -> (usize, usize) {
    let line = cell.lines().map(chars).max().unwrap_or(0);
    let word = cell.split_whitespace().map(chars).max().unwrap_or(0);
    (line, word)
}

/// The rows as a table of `width`, or as a list when a table would have to break an id.
pub fn table_or_list(cols: &[Col], rows: &[Vec<String>], width: u16) -> String {
    match widths(cols, rows, width as usize) {
        Some(w) => table(cols, rows, &w),
        None => list(cols, rows, width),
    }
}

/// Each column's width, or None when the whole columns and the longest prose words do not fit.
fn widths(cols: &[Col], rows: &[Vec<String>], width: usize) -> Option<Vec<usize>> {
    let mut min = Vec::with_capacity(cols.len());
    let mut max = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        let (line, word) = rows
            .iter()
            .map(|r| widest(r.get(i).map(String::as_str).unwrap_or("")))
            .fold((0, 0), |(l, w), (cl, cw)| (l.max(cl), w.max(cw)));
        let header = chars(c.header);
        if c.whole {
            let w = line.max(header);
            min.push(w);
            max.push(w);
        } else {
            // A header wraps like prose; a short word is no reason for a sliver of a column.
            let floor = c.header.split_whitespace().map(chars).max().unwrap_or(0).max(8.min(line));
            min.push(word.max(floor));
            max.push(line.max(header).max(word));
        }
    }
    let room = width.checked_sub(overhead(cols.len()))?;
    if min.iter().sum::<usize>() > room {
        return None;
    }
    // What is left goes to the prose columns, a character at a time to the one furthest from
    // its widest line.
    let mut w = min;
    let mut spare = room - w.iter().sum::<usize>();
    while spare > 0 {
        let Some(i) = (0..cols.len()).filter(|i| w[*i] < max[*i]).max_by_key(|i| max[*i] - w[*i]) else { break };
        w[i] += 1;
        spare -= 1;
    }
    Some(w)
}

/// A cell's lines at `width`: a whole cell as it is, prose wrapped at word boundaries.
fn cell_lines(cell: &str, whole: bool, width: usize) -> Vec<String> {
    if whole {
        return cell.lines().map(str::to_string).collect();
    }
    cell.lines().flat_map(|l| wrap(l, width as u16, 0).lines().map(str::to_string).collect::<Vec<_>>()).collect()
}

fn rule(w: &[usize], left: &str, fill: &str, mid: &str, right: &str) -> String {
    let parts: Vec<String> = w.iter().map(|n| fill.repeat(n + 2)).collect();
    format!("{left}{}{right}\n", parts.join(mid))
}

fn row(cols: &[Col], cells: &[&str], w: &[usize]) -> String {
    let lines: Vec<Vec<String>> =
        cols.iter().zip(cells).zip(w).map(|((c, cell), width)| cell_lines(cell, c.whole, *width)).collect();
    let height = lines.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut out = String::new();
    for k in 0..height {
        let parts: Vec<String> = lines
            .iter()
            .zip(w)
            .map(|(l, width)| {
                let text = l.get(k).map(String::as_str).unwrap_or("");
                format!("{text}{}", " ".repeat(width.saturating_sub(chars(text))))
            })
            .collect();
        out.push_str(&format!("│ {} │\n", parts.join(" ┆ ")));
    }
    out
}

fn table(cols: &[Col], rows: &[Vec<String>], w: &[usize]) -> String {
    let mut out = rule(w, "┌", "─", "┬", "┐");
    let headers: Vec<&str> = cols.iter().map(|c| c.header).collect();
    let header_cols: Vec<Col> = cols.iter().map(|c| Col { header: c.header, whole: false }).collect();
    out.push_str(&row(&header_cols, &headers, w));
    out.push_str(&rule(w, "╞", "═", "╪", "╡"));
    for r in rows {
        let cells: Vec<&str> = (0..cols.len()).map(|i| r.get(i).map(String::as_str).unwrap_or("")).collect();
        out.push_str(&row(cols, &cells, w));
    }
    out.push_str(&rule(w, "└", "─", "┴", "┘"));
    out
}

/// One block per row: the first column as its title, the others as `header: value` beneath,
/// wrapped at word boundaries (empty ones left out).
fn list(cols: &[Col], rows: &[Vec<String>], width: u16) -> String {
    let mut out = String::new();
    for r in rows {
        let first = r.first().map(|c| c.replace('\n', " ")).unwrap_or_default();
        // A bare number says nothing on its own line: `run 7`, `version 3`.
        let title = match cols.first() {
            Some(c) if !first.is_empty() && first.chars().all(|ch| ch.is_ascii_digit()) => {
                format!("{} {first}", c.header)
            }
            _ => first,
        };
        out.push_str(&wrap(&title, width, 2));
        for (c, cell) in cols.iter().zip(r).skip(1) {
            if cell.trim().is_empty() {
                continue;
            }
            let value = cell.lines().collect::<Vec<_>>().join(if c.whole { " " } else { "; " });
            out.push_str(&wrap(&format!("  {}: {value}", c.header), width, 4));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![vec![
            "ami-0123456789abcdef0".into(),
            "available".into(),
            "launch template lt-17cdde37d23c3d897:$Latest and an instance i-0123456789abcdef0 running it".into(),
        ]]
    }

    const COLS: [Col; 3] = [Col::whole("ami"), Col::whole("state"), Col::prose("evidence")];

    #[test]
    fn ids_stay_whole_and_prose_wraps_at_words() {
        let text = table_or_list(&COLS, &rows(), 80);
        assert!(text.starts_with('┌'), "{text}");
        for id in ["ami-0123456789abcdef0", "lt-17cdde37d23c3d897:$Latest", "i-0123456789abcdef0", "available"] {
            assert!(text.contains(id), "{id} broken:\n{text}");
        }
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.lines().all(|l| l.chars().count() == text.lines().next().unwrap().chars().count()), "{text}");
    }

    #[test]
    fn too_narrow_for_the_ids_becomes_a_list() {
        let text = table_or_list(&COLS, &rows(), 50);
        assert!(!text.contains('│'), "{text}");
        assert!(text.starts_with("ami-0123456789abcdef0\n  state: available\n  evidence: launch template"), "{text}");
        assert!(text.contains("lt-17cdde37d23c3d897:$Latest"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 50), "{text}");
    }
}
