//! GraphiQL, served from assets compiled into the binary so that it needs no CDN.

use axum::{
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use super::GraphqlState;

const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
];

/// The page, with the development token (when there is one) filled into the request headers.
pub fn page(dev_token: Option<&str>) -> String {
    let headers = match dev_token {
        Some(token) => serde_json::json!({ "Authorization": format!("Bearer {token}") }),
        None => serde_json::json!({ "Authorization": "Bearer <your token>" }),
    };
    // Pretty JSON for the headers editor, escaped so it cannot close the script element.
    let headers = serde_json::to_string_pretty(&headers)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    let headers_literal = serde_json::to_string(&headers)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>settings-api · GraphiQL</title>
  <link rel="stylesheet" href="graphql/assets/graphiql.min.css">
  <style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="graphql/assets/react.production.min.js"></script>
  <script src="graphql/assets/react-dom.production.min.js"></script>
  <script src="graphql/assets/graphiql.min.js"></script>
  <script>
    const endpoint = new URL(window.location.pathname, window.location.origin).href;
    const fetcher = GraphiQL.createFetcher({{
      url: endpoint,
      subscriptionUrl: endpoint.replace(/^http/, "ws"),
    }});
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, {{
        fetcher,
        defaultHeaders: {headers_literal},
        shouldPersistHeaders: false,
        defaultEditorToolsVisibility: "headers",
        defaultQuery: "{{\n  settings {{\n    key\n    value\n    version\n    updatedAt\n  }}\n}}\n",
      }})
    );
  </script>
</body>
</html>
"#
    )
}

/// The page, or `None` where GraphiQL is off.
pub fn graphiql(state: &GraphqlState) -> Option<Html<String>> {
    state
        .graphiql_html
        .as_ref()
        .map(|html| Html(html.to_string()))
}

pub async fn asset(State(state): State<GraphqlState>, Path(name): Path<String>) -> Response {
    let served = state.graphiql_html.is_some();
    match ASSETS.iter().find(|(file, _, _)| served && *file == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": "not found" })),
        )
            .into_response(),
    }
}
