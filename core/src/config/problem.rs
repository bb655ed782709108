//! One problem in a configuration text ([`Problem`]), where it is (line and column, found for
//! all problems in one pass), and how many are reported.

/// One problem in a configuration text, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub(crate) struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// Byte offset in the text (line and column are computed from it).
    offset: usize,
}

impl Problem {
    /// A problem at byte `offset` of `text`.
    pub(super) fn at(text: &str, offset: usize, message: String) -> Problem {
        let mut problem = Problem::pending(offset, message);
        locate(text, std::slice::from_mut(&mut problem));
        problem
    }

    /// A problem at byte `offset` whose line and column [`locate`] fills in later, with
    /// the others (one pass over the text for all of them).
    pub(super) fn pending(offset: usize, mut message: String) -> Problem {
        // A message quotes keys and values from the file, which may be huge.
        if message.len() > MAX_PROBLEM_LEN {
            let mut end = MAX_PROBLEM_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Problem {
            line: 0,
            column: 0,
            message,
            offset,
        }
    }
}

/// Longest problem message kept (they quote the file, whose keys and values may be huge).
pub(crate) const MAX_PROBLEM_LEN: usize = 400;

/// At most this many problems are reported for one file; the rest are counted in a last line.
pub(crate) const MAX_PROBLEMS: usize = 100;

/// Sort, de-duplicate and cap `problems` (the last one kept says how many more there were).
pub(super) fn finish(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| (p.line, p.column));
    problems.dedup();
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - (MAX_PROBLEMS - 1);
        problems.truncate(MAX_PROBLEMS - 1);
        let last = problems.last().map_or((1, 1), |p| (p.line, p.column));
        problems.push(Problem {
            line: last.0,
            column: last.1,
            message: format!(
                "{more} more problems not shown (at most {MAX_PROBLEMS} are reported)"
            ),
            offset: 0,
        });
    }
    problems
}

/// Fill in the line and column of every problem made with [`Problem::pending`], in one pass over
/// `text` (in offset order), whatever their number.
pub(super) fn locate(text: &str, problems: &mut [Problem]) {
    let mut order: Vec<usize> = (0..problems.len()).collect();
    order.sort_by_key(|&i| problems[i].offset);
    let bytes = text.as_bytes();
    let (mut pos, mut line, mut column) = (0, 1, 1);
    for i in order {
        let target = problems[i].offset.min(bytes.len());
        for &b in &bytes[pos..target] {
            if b == b'\n' {
                line += 1;
                column = 1;
            } else if b & 0xC0 != 0x80 {
                // Count characters, not bytes: skip UTF-8 continuation bytes.
                column += 1;
            }
        }
        pos = target;
        problems[i].line = line;
        problems[i].column = column;
    }
}
