//! Secrets kept out of logs and messages: the password of a URL
//! (`postgres://user:***@host/db`, `smtp://user:***@host`) and secret query
//! parameters (`?password=***`). Used wherever a URL the operator gave is
//! printed, and on every error at the binary's edge as a last guard.

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &["password", "pass", "passwd", "token", "secret", "key"];

/// `url` with its password and secret query values replaced by `***`.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***{host}"),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    format!("{head}{authority}{}", query(tail))
}

/// The path, query and fragment with secret query values replaced.
fn query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_string();
    };
    let (path, rest) = tail.split_at(q + 1);
    let (params, fragment) = match rest.find('#') {
        Some(h) => rest.split_at(h),
        None => (rest, ""),
    };
    let params: Vec<String> = params
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=***")
            }
            _ => p.to_string(),
        })
        .collect();
    format!("{path}{}{fragment}", params.join("&"))
}

/// `text` with every URL in it (a word holding `://`) redacted.
pub fn text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains("://") {
            out.push_str(&url(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | '`') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_params_are_hidden() {
        assert_eq!(
            url("postgres://postgres:hunter2@db.example:5432/nurture"),
            "postgres://postgres:***@db.example:5432/nurture"
        );
        assert_eq!(
            url("smtp://mailer:p%40ss:w@mail.example?tls=required"),
            "smtp://mailer:***@mail.example?tls=required"
        );
        assert_eq!(
            url("postgres://db.example/n?user=a&password=hunter2&sslmode=require"),
            "postgres://db.example/n?user=a&password=***&sslmode=require"
        );
        assert_eq!(url("postgres://postgres@db/x"), "postgres://postgres@db/x");
        assert_eq!(url("sqlite://nurture.db"), "sqlite://nurture.db");
        assert_eq!(
            text("connecting to \"postgres://u:hunter2@h/x\": refused"),
            "connecting to \"postgres://u:***@h/x\": refused"
        );
        assert_eq!(text("no url here"), "no url here");
    }
}
