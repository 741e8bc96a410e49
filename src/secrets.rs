//! Masking secrets in text the daemon did not write itself: a camera's or ffmpeg's stderr
//! quotes the URL it was given, and `rtsp://camuser:hunter2@cam/stream` or
//! `...?key=abc` would otherwise reach the log, `/api/status` and anything that shows them.
//! Masking is by shape and by name, so it errs on the side of hiding: `key: 3` is masked
//! too.

/// Names whose values are secrets, as a whole name or as its last part (`access_token`,
/// `stream-key`, `clientSecret`).
const SECRET_NAMES: [&str; 17] = [
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "apikey",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "sig",
    "signature",
    "bearer",
    "cookie",
];

/// `text` with URL credentials (`scheme://user:password@`) and named secrets (`password=x`,
/// `"token": "x"`, `--key x`, `Authorization: Bearer x`, ...) replaced by `***`.
pub fn mask(text: &str) -> String {
    mask_named(&mask_userinfo(text))
}

/// `text` with each of `literals` (a configured URL, a stream key) replaced by what may be
/// shown in its place, then masked as [`mask`] does.
pub fn mask_with(text: &str, literals: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (secret, shown) in literals {
        if !secret.is_empty() {
            text = text.replace(secret.as_str(), shown);
        }
    }
    mask(&text)
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

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `name` (as written) names a secret.
fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| {
        if lower == *secret {
            return true;
        }
        let Some(head) = lower.strip_suffix(secret) else {
            return false;
        };
        // `access_token`, `stream-key`; or `accessToken`, `streamKey` (a capital starts
        // the last part), but not `monkey` or `keyboard`.
        let capital = name[head.len()..].starts_with(|c: char| c.is_ascii_uppercase())
            && name[..head.len()].ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        head.ends_with(['_', '-']) || capital
    })
}

/// Masks the value after each secret name: `name=value`, `name: value`, `"name": "value"`,
/// `--name value`, and for `Authorization`/`Bearer` the credentials after the scheme.
fn mask_named(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let Some(first) = rest.chars().next() else { break };
        let starts_word = is_word(first) && !text[..at].ends_with(is_word);
        if !starts_word {
            out.push(first);
            at += first.len_utf8();
            continue;
        }
        let word_len = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
        let word = &rest[..word_len];
        out.push_str(word);
        at += word_len;
        let dashed = word.starts_with('-');
        let name = word.trim_start_matches('-');
        if name.is_empty() || !is_secret_name(name) {
            continue;
        }
        if let Some((kept, value)) = secret_value(&text[at..], dashed, name) {
            out.push_str(&text[at..at + kept]);
            if !value.is_empty() {
                out.push_str("***");
            }
            at += kept + value.len();
        }
    }
    out
}

/// After a secret name: how many bytes to keep (separator, quotes, an auth scheme), and the
/// value to hide; `None` when no value follows.
fn secret_value<'a>(after: &'a str, dashed: bool, name: &str) -> Option<(usize, &'a str)> {
    let mut kept = 0;
    // The closing quote of a JSON or quoted key.
    if after.starts_with(['"', '\'']) {
        kept += 1;
    }
    let spaces = after[kept..].len() - after[kept..].trim_start_matches([' ', '\t']).len();
    let separated = after[kept + spaces..].starts_with(['=', ':']);
    let bearer = name.eq_ignore_ascii_case("bearer");
    if separated {
        kept += spaces + 1;
        kept += after[kept..].len() - after[kept..].trim_start_matches([' ', '\t']).len();
    } else if (dashed || bearer) && spaces > 0 {
        // `--password hunter2`, `Bearer abc`
        kept += spaces;
    } else {
        return None;
    }
    let value_start = &after[kept..];
    // `Authorization: Basic abc` keeps the scheme.
    if name.to_ascii_lowercase().ends_with("authorization")
        && let Some(scheme_len) = value_start.find(' ')
        && value_start[..scheme_len].chars().all(|c| c.is_ascii_alphabetic())
        && scheme_len > 0
    {
        kept += scheme_len + 1;
    }
    let value_start = &after[kept..];
    if let Some(quote) = value_start.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let inner = &value_start[1..];
        let len = inner.find(quote).unwrap_or(inner.len());
        return Some((kept + 1, &inner[..len]));
    }
    let len = value_start
        .find(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"' | '\'' | '}' | ')' | ']'))
        .unwrap_or(value_start.len());
    Some((kept, &value_start[..len]))
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
        for (said, shown) in [
            ("access_token=abc&x=1", "access_token=***&x=1"),
            ("refresh_token=abc", "refresh_token=***"),
            ("client_secret=abc", "client_secret=***"),
            ("secret_key=abc private_key=def", "secret_key=*** private_key=***"),
            ("?sig=abc&signature=def", "?sig=***&signature=***"),
            ("passphrase=abc", "passphrase=***"),
            ("streamKey=abc accessToken=def", "streamKey=*** accessToken=***"),
            ("password=\"two words\" next", "password=\"***\" next"),
            (
                "{\"password\": \"hunter2\", \"user\": \"bob\"}",
                "{\"password\": \"***\", \"user\": \"bob\"}",
            ),
            ("--password hunter2 --verbose", "--password *** --verbose"),
            ("-key abc", "-key ***"),
            ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
            (
                "authorization: Basic YWRhOnMzY3JldA==",
                "authorization: Basic ***",
            ),
            ("got Bearer abc123 back", "got Bearer *** back"),
            ("key frame", "key frame"),
            ("keyframes=2 turkey=1", "keyframes=2 turkey=1"),
        ] {
            assert_eq!(mask(said), shown, "{said}");
        }
        assert_eq!(
            mask("http://host/a@b"),
            "http://host/a@b",
            "an @ in the path is not userinfo"
        );
    }
}
