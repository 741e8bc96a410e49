//! Masking secrets in text the daemon did not write itself: a camera's or ffmpeg's stderr
//! quotes the URL it was given, and `rtsp://camuser:hunter2@cam/stream` or
//! `...?key=abc` would otherwise reach the log, `/api/status` and anything that shows them.

/// Query and option names whose values are secrets.
const SECRET_NAMES: [&str; 10] = [
    "password", "passwd", "pass", "pwd", "secret", "token", "key", "apikey", "api_key", "auth",
];

/// `text` with URL credentials (`scheme://user:password@`) and `name=value` secrets
/// (`password=`, `key=`, `token=`, ...) replaced by `***`.
pub fn mask(text: &str) -> String {
    mask_assignments(&mask_userinfo(text))
}

/// `scheme://user:password@host` → `scheme://***@host`.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first character that cannot be in it.
        let end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `key=value` → `key=***` for the names in [`SECRET_NAMES`], wherever the name starts a
/// word (after `?`, `&`, `;`, a space, a dash...).
fn mask_assignments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for name in SECRET_NAMES {
            let named = rest
                .get(..name.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(name));
            if named && rest[name.len()..].starts_with('=') {
                let value_start = name.len() + 1;
                let value_len = rest[value_start..]
                    .find(|c: char| {
                        c == '&' || c == ';' || c == ',' || c.is_whitespace() || c == '"' || c == '\''
                    })
                    .unwrap_or(rest.len() - value_start);
                out.push_str(&rest[..value_start]);
                if value_len > 0 {
                    out.push_str("***");
                }
                rest = &rest[value_start + value_len..];
                continue 'scan;
            }
        }
        // Move to the start of the next word.
        let mut chars = rest.char_indices();
        let mut next = rest.len();
        if let Some((_, first)) = chars.next() {
            let first_is_word = first.is_ascii_alphanumeric() || first == '_';
            next = if first_is_word {
                rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len())
            } else {
                first.len_utf8()
            };
        }
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn credentials_and_keys_are_masked() {
        assert_eq!(
            mask("[rtsp @ 0x55] method DESCRIBE failed: 401 rtsp://camuser:hunter2@10.0.0.5:554/stream1"),
            "[rtsp @ 0x55] method DESCRIBE failed: 401 rtsp://***@10.0.0.5:554/stream1"
        );
        assert_eq!(mask("http://user@host/x"), "http://***@host/x");
        assert_eq!(
            mask("rtmp://a.example/live/x?key=abc123&foo=bar"),
            "rtmp://a.example/live/x?key=***&foo=bar"
        );
        assert_eq!(mask("--password=hunter2 --verbose"), "--password=*** --verbose");
        assert_eq!(mask("Token=xyz; other"), "Token=***; other");
        assert_eq!(
            mask("monkey=1 keyboard=2"),
            "monkey=1 keyboard=2",
            "whole names only"
        );
        assert_eq!(mask("nothing here: café"), "nothing here: café");
        assert_eq!(
            mask("http://host/a@b"),
            "http://host/a@b",
            "an @ in the path is not userinfo"
        );
    }
}
