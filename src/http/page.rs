//! The publish-and-watch page, compiled into the binary (no build step, no CDN).
//!
//! `GET /` serves a plain HTML page whose script publishes over WHIP and
//! watches over WHEP, with live `getStats()` numbers and the room list. The
//! files live in `src/http/page/` and are embedded with `include_str!`.

use super::types::{HttpRequest, HttpResponse};

const INDEX: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// The page loads only its own files; its script may talk to any wisp server
/// (the "Server" field), so `connect-src` stays open.
const CSP: &str = "default-src 'self'; connect-src *; img-src 'self' data:; media-src 'self' blob:";

/// Serve `GET /` and the page's static files; `None` for every other request.
pub fn serve(req: &HttpRequest) -> Option<HttpResponse> {
    if req.method != "GET" && req.method != "HEAD" {
        return None;
    }
    let path = req.url.split('?').next().unwrap_or("");
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let resp = HttpResponse::new(200)
        .with("Cache-Control", "no-cache")
        .with("X-Content-Type-Options", "nosniff")
        .with("Content-Security-Policy", CSP);
    Some(if req.method == "HEAD" {
        resp.with("Content-Type", content_type)
    } else {
        resp.body(content_type, body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(method: &str, url: &str) -> Option<HttpResponse> {
        serve(&HttpRequest::new(method, url))
    }

    #[test]
    fn serves_the_page_files_with_types_and_no_cache() {
        for (url, ct, needle) in [
            ("/", "text/html", "<script src=\"app.js\">"),
            ("/index.html?x=1", "text/html", "<title>"),
            ("/app.js", "text/javascript", "class Connection"),
            ("/style.css", "text/css", "video"),
        ] {
            let resp = get("GET", url).expect(url);
            assert_eq!(resp.status, 200, "{url}");
            assert!(
                resp.header("Content-Type").unwrap().starts_with(ct),
                "{url}"
            );
            assert_eq!(resp.header("Cache-Control"), Some("no-cache"));
            assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("*"));
            assert!(
                String::from_utf8_lossy(&resp.body).contains(needle),
                "{url}"
            );
        }
        let head = get("HEAD", "/app.js").unwrap();
        assert!(head.body.is_empty());
        assert!(head
            .header("Content-Type")
            .unwrap()
            .starts_with("text/javascript"));
    }

    #[test]
    fn leaves_other_requests_alone() {
        assert!(get("POST", "/").is_none());
        assert!(get("GET", "/whip/room").is_none());
        assert!(get("GET", "/api/rooms").is_none());
        assert!(get("GET", "/app.js/x").is_none());
    }

    #[test]
    fn the_page_makes_no_external_request() {
        for file in [INDEX, APP_JS, STYLE] {
            assert!(!file.contains("https://"), "no external URL");
            assert!(
                !file.contains("http://") || file == INDEX,
                "no external URL"
            );
        }
        assert!(!INDEX.contains("src=\"http") && !INDEX.contains("href=\"http"));
    }
}
