//! Finding the line a configuration error is about.

/// 1-based line of byte `offset` in `text`.
pub(super) fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The key a parse error names, when its message does (`unknown field `x``).
pub(super) fn key_of_parse_error(e: &toml::de::Error) -> String {
    let msg = e.message();
    msg.split('`').nth(1).map(str::to_owned).unwrap_or_default()
}

/// The line of a dotted key such as `workers.echo.pool.max_workers` or
/// `workflows.2.steps.0.worker_type`: the line that sets it, else its table's header.
pub(super) fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let parts: Vec<&str> = dotted.split('.').collect();
    let (table, key) = match parts.split_last() {
        Some((key, table)) => (table.to_vec(), *key),
        None => return None,
    };
    // Array-of-tables indices (`workflows.2`) count `[[workflows]]` headers.
    let mut wanted: Vec<(String, Option<usize>)> = Vec::new();
    for p in &table {
        match p.parse::<usize>() {
            Ok(i) => {
                if let Some(last) = wanted.last_mut() {
                    last.1 = Some(i);
                }
            }
            Err(_) => wanted.push(((*p).to_owned(), None)),
        }
    }
    let header_name = wanted
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(".");
    let index = wanted.last().and_then(|(_, i)| *i);
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut in_section = header_name.is_empty();
    let mut header_line = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let h = h.trim().to_owned();
            let seen = counts.entry(h.clone()).or_insert(0);
            in_section = h == header_name && index.is_none_or(|i| i == *seen);
            *seen += 1;
            if in_section {
                header_line = Some(n + 1);
            }
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            in_section = h.trim() == header_name;
            if in_section {
                header_line = Some(n + 1);
            }
            continue;
        }
        if in_section {
            if let Some(rest) = line.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(n + 1);
                }
            }
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nbind = \"x\"\n\n[workers.echo]\ncommand = \"a\"\n[workers.echo.pool]\nmax_workers = 0\n\n[[workflows]]\nid = \"a\"\n[[workflows]]\nid = \"b\"\n";

    #[test]
    fn finds_keys_in_tables_and_arrays_of_tables() {
        assert_eq!(line_of_key(TEXT, "server.bind"), Some(2));
        assert_eq!(line_of_key(TEXT, "workers.echo.pool.max_workers"), Some(7));
        assert_eq!(line_of_key(TEXT, "workflows.1.id"), Some(12));
        assert_eq!(
            line_of_key(TEXT, "workers.echo.transport"),
            Some(4),
            "falls back to the header"
        );
    }
}
