//! GraphiQL, served from the binary: the page at `GET /graphql` and its pinned production assets
//! under `/graphiql/<version>/`, so it works without internet access (see
//! `api/assets/graphiql/README.md` for where each file comes from).

use std::io::Read;

use actix_web::{HttpRequest, HttpResponse, http::header, web};

/// The GraphiQL release the assets are; part of every asset URL, so they can be cached forever.
pub const VERSION: &str = "3.8.3";

/// The page's policy: everything from this origin only (scripts from files, not inline; GraphiQL
/// sets inline styles and its fonts are data URIs), requests only to this origin (HTTP and
/// WebSocket), and never inside another site's frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// One served file: gzip-compressed in the binary, or plain.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: Body,
}

enum Body {
    Gzip(&'static [u8]),
    Plain(&'static str),
}

const ASSETS: [Asset; 6] = [
    Asset {
        name: "graphiql.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: Body::Gzip(include_bytes!("../assets/graphiql/graphiql.min.js.gz")),
    },
    Asset {
        name: "graphiql.min.css",
        content_type: "text/css; charset=utf-8",
        body: Body::Gzip(include_bytes!("../assets/graphiql/graphiql.min.css.gz")),
    },
    Asset {
        name: "react.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: Body::Gzip(include_bytes!(
            "../assets/graphiql/react.production.min.js.gz"
        )),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: Body::Gzip(include_bytes!(
            "../assets/graphiql/react-dom.production.min.js.gz"
        )),
    },
    Asset {
        name: "init.js",
        content_type: "text/javascript; charset=utf-8",
        body: Body::Plain(include_str!("../assets/graphiql/init.js")),
    },
    Asset {
        name: "page.css",
        content_type: "text/css; charset=utf-8",
        body: Body::Plain(include_str!("../assets/graphiql/page.css")),
    },
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/graphiql/{version}/{name}", web::get().to(asset));
}

/// `GET /graphql` from a browser: the GraphiQL page.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("../assets/graphiql/index.html").replace("VERSION", VERSION))
}

/// `GET /graphiql/<version>/<name>`: one asset, cached as immutable; gzip-encoded unless the
/// client does not accept gzip. Another version's URL is 404.
async fn asset(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (version, name) = path.into_inner();
    let Some(asset) = ASSETS.iter().find(|a| version == VERSION && a.name == name) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such GraphiQL asset");
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::VARY, "accept-encoding"));
    match asset.body {
        Body::Plain(text) => response.body(text),
        Body::Gzip(bytes) if accepts_gzip(&req) => response
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(bytes),
        Body::Gzip(bytes) => {
            let mut plain = Vec::new();
            match flate2::read::GzDecoder::new(bytes).read_to_end(&mut plain) {
                Ok(_) => response.body(plain),
                Err(err) => {
                    tracing::error!(error = %err, asset = asset.name, "embedded asset is corrupt");
                    HttpResponse::InternalServerError().finish()
                }
            }
        }
    }
}

fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}
