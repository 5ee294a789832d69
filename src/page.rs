//! The publish-and-watch page, compiled into the binary (no build step, no CDN).

use crate::http::{HttpRequest, HttpResponse};

/// Serve `GET /` and the page's static files; `None` for every other request.
pub fn serve(req: &HttpRequest) -> Option<HttpResponse> {
    let path = req.url.split('?').next().unwrap_or("");
    if req.method != "GET" && req.method != "HEAD" {
        return None;
    }
    match path {
        "/" | "/index.html" => Some(HttpResponse::new(200).body("text/html; charset=utf-8", INDEX)),
        _ => None,
    }
}

const INDEX: &str = "<!doctype html><title>wisp</title><p>wisp is running.</p>\n";
