//! The policy file parser: the flat YAML subset SPIKE uses for policies (`name`,
//! `spiffeidPattern`, `pathPattern`, `permissions`), with no YAML library. Validation of the
//! values (permissions, patterns) is the caller's job (`spike policy apply`).

/// The fields of a policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDoc {
    /// `name`.
    pub name: String,
    /// `spiffeidPattern`.
    pub spiffe_id_pattern: String,
    /// `pathPattern`.
    pub path_pattern: String,
    /// `permissions`.
    pub permissions: Vec<String>,
}

/// Parses the flat YAML SPIKE uses for policies: top-level `key: value` pairs (plain,
/// single- or double-quoted scalars), `permissions` as a block (`- read`) or flow
/// (`[read, write]`) sequence, `#` comments and an optional `---`. Unknown keys are ignored
/// (as Go's YAML decoder does); every field is required. Values are kept verbatim (e.g. a
/// trailing `/` in a path pattern).
///
/// # Errors
/// A description of the first problem (with its line number) or the missing fields.
pub fn parse_policy_yaml(text: &str) -> Result<PolicyDoc, String> {
    let mut doc = PolicyDoc::default();
    let mut seen = [false; 4];
    let mut in_permissions = false;
    for (index, raw) in text.lines().enumerate() {
        let lineno = index + 1;
        let line = strip_comment(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed == "---" {
            continue;
        }
        if let Some(item) = trimmed
            .strip_prefix('-')
            .filter(|_| trimmed == "-" || trimmed.starts_with("- ") || trimmed.starts_with("-\t"))
        {
            if !in_permissions {
                return Err(format!("line {lineno}: unexpected list item"));
            }
            doc.permissions
                .push(parse_scalar(item.trim()).map_err(|e| format!("line {lineno}: {e}"))?);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            return Err(format!("line {lineno}: unexpected indentation"));
        }
        in_permissions = false;
        let Some((key, value)) = split_key(trimmed) else {
            return Err(format!("line {lineno}: expected `key: value`"));
        };
        let value = value.trim();
        let slot = match key {
            "name" => 0,
            "spiffeidPattern" => 1,
            "pathPattern" => 2,
            "permissions" => 3,
            _ => continue,
        };
        if seen[slot] {
            return Err(format!("line {lineno}: duplicate key {key}"));
        }
        seen[slot] = true;
        if slot == 3 {
            if value.is_empty() {
                in_permissions = true;
            } else if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                for item in split_flow(inner) {
                    let item = item.trim();
                    if !item.is_empty() {
                        doc.permissions
                            .push(parse_scalar(item).map_err(|e| format!("line {lineno}: {e}"))?);
                    }
                }
            } else {
                return Err(format!(
                    "line {lineno}: permissions must be a list (`- read` lines or `[read, write]`)"
                ));
            }
            continue;
        }
        let value = parse_scalar(value).map_err(|e| format!("line {lineno}: {e}"))?;
        match slot {
            0 => doc.name = value,
            1 => doc.spiffe_id_pattern = value,
            _ => doc.path_pattern = value,
        }
    }
    let mut missing = Vec::new();
    for (present, key) in [
        (!doc.name.is_empty(), "name"),
        (!doc.spiffe_id_pattern.is_empty(), "spiffeidPattern"),
        (!doc.path_pattern.is_empty(), "pathPattern"),
        (!doc.permissions.is_empty(), "permissions"),
    ] {
        if !present {
            missing.push(key);
        }
    }
    if !missing.is_empty() {
        return Err(format!("missing required fields: {}", missing.join(", ")));
    }
    Ok(doc)
}

/// Removes a `#` comment that starts a line or follows whitespace, outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return line.get(..i).unwrap_or(line),
            None => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    line
}

/// Splits `key: value` at the first `:` followed by a space or the end, outside quotes.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = if let Some(stripped) = line.strip_prefix('"') {
        let end = stripped.find('"')?;
        (stripped.get(..end)?, stripped.get(end + 1..)?)
    } else {
        let mut idx = None;
        for (i, c) in line.char_indices() {
            if c == ':' {
                let next = line.get(i + 1..)?.chars().next();
                if next.is_none() || next == Some(' ') || next == Some('\t') {
                    idx = Some(i);
                    break;
                }
            }
        }
        let i = idx?;
        (line.get(..i)?.trim_end(), line.get(i..)?)
    };
    let value = rest.trim_start().strip_prefix(':')?;
    Some((key, value))
}

/// Splits a flow sequence body at commas outside quotes.
fn split_flow(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == ',' => {
                parts.push(inner.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            None => {}
        }
    }
    parts.push(inner.get(start..).unwrap_or(""));
    parts
}

/// A plain, `'single'` or `"double"` quoted scalar.
fn parse_scalar(text: &str) -> Result<String, String> {
    if let Some(body) = text.strip_prefix('\'') {
        let body = body
            .strip_suffix('\'')
            .ok_or_else(|| format!("unterminated quoted value {text}"))?;
        return Ok(body.replace("''", "'"));
    }
    if let Some(body) = text.strip_prefix('"') {
        let body = body
            .strip_suffix('"')
            .ok_or_else(|| format!("unterminated quoted value {text}"))?;
        let mut out = String::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some(other) => return Err(format!("unsupported escape \\{other}")),
                None => return Err("dangling backslash".to_owned()),
            }
        }
        return Ok(out);
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_block_and_flow() {
        let doc = parse_policy_yaml(
            "# policy\n---\nname: \"web app\"\nspiffeidPattern: '^spiffe://spike.test/web/.*$'\n\
             pathPattern: tenants/web/   # trailing slash kept\npermissions:\n  - read\n  - \"list\"\n",
        )
        .unwrap();
        assert_eq!(doc.name, "web app");
        assert_eq!(doc.spiffe_id_pattern, "^spiffe://spike.test/web/.*$");
        assert_eq!(doc.path_pattern, "tenants/web/");
        assert_eq!(doc.permissions, vec!["read", "list"]);

        let doc = parse_policy_yaml(
            "name: db\nspiffeidPattern: spiffe://spike.test/db\npathPattern: \"db/#1\"\n\
             permissions: [read, 'write', \"super\"]\nextra: ignored\n",
        )
        .unwrap();
        assert_eq!(doc.permissions, vec!["read", "write", "super"]);
        assert_eq!(doc.path_pattern, "db/#1");
        assert_eq!(doc.spiffe_id_pattern, "spiffe://spike.test/db");

        let doc = parse_policy_yaml(
            "name: x\nspiffeidPattern: spiffe://a/b\npathPattern: p\npermissions:\n- read\n",
        )
        .unwrap();
        assert_eq!(doc.permissions, vec!["read"]);
    }

    #[test]
    fn yaml_errors() {
        let err = parse_policy_yaml("name: x\npermissions: []\n").unwrap_err();
        assert_eq!(
            err,
            "missing required fields: spiffeidPattern, pathPattern, permissions"
        );
        assert!(
            parse_policy_yaml("name: 'x\n")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            parse_policy_yaml("- read\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse_policy_yaml("name: a\nname: b\n")
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(
            parse_policy_yaml("permissions: read\n")
                .unwrap_err()
                .contains("must be a list")
        );
        assert!(
            parse_policy_yaml("just text\n")
                .unwrap_err()
                .contains("key: value")
        );
    }
}
